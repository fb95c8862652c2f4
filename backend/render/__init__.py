"""Render Gaussians from cameras: one entry point, gsplat on CUDA, the pure-PyTorch rasterizer elsewhere.

Both paths follow gsplat's conventions (see reference.py), so a scene looks the same on either, and
both are differentiable with respect to every Gaussian parameter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from backend.cameras import CameraBatch
from backend.errors import InputError
from backend.gaussians import Gaussians

BACKENDS = ("auto", "gsplat", "torch")


@dataclass
class RenderOutput:
    rgb: Tensor    # [N, H, W, 3] colour, background composited
    alpha: Tensor  # [N, H, W, 1] accumulated opacity, 1 - final transmittance
    depth: Tensor  # [N, H, W, 1] expected camera z (sum of w z / alpha; 0 where nothing is seen)


def render(gaussians: Gaussians, cameras: CameraBatch, width: int | None = None,
           height: int | None = None, background: Tensor | tuple | None = None,
           backend: str = "auto") -> RenderOutput:
    """Render every camera of the batch.

    width/height default to the cameras' size; another size renders the same image with another pixel
    count (K is scaled by w'/w and h'/h). background: RGB (tuple, [3] or [N, 3]) composited as
    rgb + (1 - alpha) * background; None is black. backend: "auto" (gsplat when the Gaussians are on
    CUDA, else "torch"), "gsplat" or "torch".
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown render backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    width = cameras.width if width is None else width
    height = cameras.height if height is None else height
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InputError(f"render {name} must be a positive integer, got {value!r}",
                             "pass the image size in pixels")
    device = gaussians.device
    if backend == "auto":
        backend = "gsplat" if device.type == "cuda" else "torch"
    if backend == "gsplat" and device.type != "cuda":
        raise InputError(f"the gsplat renderer needs the Gaussians on a CUDA device, they are on {device}",
                         "use backend='torch' or move the Gaussians to CUDA with gaussians.to('cuda')")
    dtype = gaussians.means.dtype
    n_views = len(cameras)
    scale = torch.tensor([[width / cameras.width], [height / cameras.height], [1.0]], dtype=dtype,
                         device=device)
    K = cameras.K.to(device=device, dtype=dtype) * scale
    w2c = torch.linalg.inv(cameras.c2w.to(device=device, dtype=dtype))
    bg = _background(background, n_views, dtype, device)

    if len(gaussians) == 0:
        zeros = torch.zeros((n_views, height, width, 1), dtype=dtype, device=device)
        rgb, alpha, depth = zeros.expand(-1, -1, -1, 3), zeros, zeros
    elif backend == "gsplat":
        from backend.render.gsplat_backend import render_views
        rgb, alpha, depth = render_views(gaussians, w2c, K, width, height)
        rgb, alpha, depth = rgb.to(dtype), alpha.to(dtype), depth.to(dtype)
    else:
        from backend.render.reference import render_views
        rgb, alpha, depth = render_views(gaussians, w2c, K, width, height)
    rgb = rgb + (1 - alpha) * bg[:, None, None, :]
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth)


def _background(background, n_views: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The background as [N, 3]."""
    if background is None:
        return torch.zeros((n_views, 3), dtype=dtype, device=device)
    bg = torch.as_tensor(background, dtype=dtype, device=device)
    if bg.shape == (3,):
        return bg.expand(n_views, 3)
    if bg.shape == (n_views, 3):
        return bg
    raise InputError(f"background has shape {tuple(bg.shape)}, expected (3,) or ({n_views}, 3)",
                     "pass one RGB colour, e.g. (1.0, 1.0, 1.0), or one per camera")
