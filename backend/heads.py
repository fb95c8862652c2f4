"""Activation heads: raw 12-channel network output -> Gaussians in their stored (raw) parameterization.

The heads follow GS-LRM / Long-LRM (gaussians.md) but return log-scales, opacity logits and SH DC
coefficients instead of activated values, so that the Gaussians container (and the PLY written from it)
holds exactly what the network predicted, with no exp/log round trip in between.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.gaussians import SH_C0, Gaussians

# Channel layout of the raw per-pixel prediction (channels last):
# [t(1), rgb(3), scale(3), rotation(4), opacity(1)].
RAW_CHANNELS = 12
CHANNEL_SLICES: dict[str, slice] = {
    "t": slice(0, 1),
    "rgb": slice(1, 4),
    "scale": slice(4, 7),
    "rotation": slice(7, 11),
    "opacity": slice(11, 12),
}

SCALE_SHIFT = 2.3      # exp(raw - 2.3): a zero raw output gives a scale of ~0.1
OPACITY_SHIFT = 2.0    # sigmoid(raw - 2.0): a zero raw output gives an opacity of ~0.12
ROTATION_EPS = 1e-8


def distance_head(raw: Tensor, near: float | Tensor, far: float | Tensor) -> Tensor:
    """Distance along the unit ray, always inside (near, far): near + sigmoid(raw) * (far - near).

    `near`/`far` are floats or tensors that broadcast against `raw` (e.g. one pair per scene).
    """
    return near + torch.sigmoid(raw) * (far - near)


def rgb_head(raw: Tensor) -> Tensor:
    """SH degree-0 coefficients for the colour sigmoid(raw), so that 0.5 + SH_C0 * sh0 lies in (0, 1)."""
    return (torch.sigmoid(raw) - 0.5) / SH_C0


def scale_head(raw: Tensor, max_scale: float | Tensor) -> Tensor:
    """Log-scales min(raw - 2.3, log(max_scale)), i.e. scales exp(raw - 2.3) capped at `max_scale`.

    The cap keeps a few runaway Gaussians from covering the whole view (GS-LRM clamps to a fraction of
    the scene extent). Above the cap the gradient with respect to `raw` is zero, as for any clamp.
    `max_scale` (> 0) is a float or a tensor that broadcasts against `raw`.
    """
    if isinstance(max_scale, Tensor):
        return torch.minimum(raw - SCALE_SHIFT, torch.log(max_scale))
    if not max_scale > 0:
        raise ValueError(f"max_scale must be > 0, got {max_scale}")
    return torch.clamp(raw - SCALE_SHIFT, max=math.log(max_scale))


def rotation_head(raw: Tensor, eps: float = ROTATION_EPS) -> Tensor:
    """Unit quaternions (w, x, y, z) raw / max(|raw|, eps) over the last dimension."""
    return F.normalize(raw, dim=-1, eps=eps)


def opacity_head(raw: Tensor) -> Tensor:
    """Opacity logits raw - 2.0 (opacity = sigmoid(raw - 2.0): new Gaussians start mostly transparent)."""
    return raw - OPACITY_SHIFT


def gaussians_from_raw(raw: Tensor, origins: Tensor, dirs: Tensor, near: float | Tensor,
                       far: float | Tensor, max_scale: float | Tensor) -> Gaussians:
    """Pixel-aligned Gaussians from a raw prediction [..., 12] and the pixels' rays.

    `origins` and `dirs` ([..., 3], dirs of unit length) broadcast against raw's leading dimensions; all
    leading dimensions are flattened into N, in row-major order. Each centre is origin + t * dir.
    `near`, `far` and `max_scale` are floats or tensors that broadcast against raw's leading dimensions.
    Differentiable with respect to `raw` (and to the rays).
    """
    if raw.shape[-1] != RAW_CHANNELS:
        raise ValueError(f"raw prediction has {raw.shape[-1]} channels in its last dimension, "
                         f"expected {RAW_CHANNELS} ({', '.join(CHANNEL_SLICES)})")
    lead = raw.shape[:-1]
    t = distance_head(raw[..., CHANNEL_SLICES["t"].start], near, far)
    means = torch.broadcast_to(origins, lead + (3,)) + t[..., None] * torch.broadcast_to(dirs, lead + (3,))
    return Gaussians(
        means=means.reshape(-1, 3),
        log_scales=scale_head(raw[..., CHANNEL_SLICES["scale"]], _per_channel(max_scale)).reshape(-1, 3),
        quats=rotation_head(raw[..., CHANNEL_SLICES["rotation"]]).reshape(-1, 4),
        opacity_logits=opacity_head(raw[..., CHANNEL_SLICES["opacity"]]).reshape(-1),
        sh0=rgb_head(raw[..., CHANNEL_SLICES["rgb"]]).reshape(-1, 3),
        sh_rest=raw.new_zeros((math.prod(lead), 0, 3)),
    )


def _per_channel(value: float | Tensor) -> float | Tensor:
    """A value given per leading index, made to broadcast against [..., channels] too."""
    return value[..., None] if isinstance(value, Tensor) and value.ndim > 0 else value
