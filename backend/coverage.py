"""The model's Gaussians made opaque where the camera move looks, so no haze shows where few frames overlap.

Why: the LaLRM spreads each surface over the faint, overlapping pixel-aligned Gaussians of many frames
(median opacity 0.025), so where few frames see a place (the edges a move uncovers) their sum stays partly
transparent and the background shows through (30 % of one validation room's last view, a dolly back, is
under alpha 0.9).
Scaling a Gaussian's optical depth -log(1 - o) by k takes a pixel whose Gaussians all scale alike from alpha
A to about 1 - (1 - A)^k (exactly, were a splat's opacity flat over its footprint). So the result is rendered
at each of the model's frames, each pixel's k that brings it to TARGET is found (at most MAX_BOOST; a pixel
under MIN_ALPHA holds nothing to raise and stays a hole), and each of the model's Gaussians takes the largest
k at its centre over the frames.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.cameras import CameraBatch
from backend.gaussians import Gaussians
from backend.render import render

TARGET = 0.98       # the alpha a thinly covered pixel is raised to
MAX_BOOST = 10.0    # the most a Gaussian's optical depth is multiplied by (alpha 0.2 -> 0.89)
MIN_ALPHA = 0.05    # below this a pixel shows nothing worth raising: a hole stays a hole


def boost_maps(gaussians: Gaussians, cameras: CameraBatch) -> Tensor:
    """[N, H, W]: the factor on optical depth that brings each pixel of each camera's view to TARGET."""
    with torch.no_grad():
        alpha = render(gaussians, cameras).alpha[..., 0].clamp(0.0, TARGET)
    k = math.log1p(-TARGET) / torch.log1p(-alpha).clamp(max=-1e-12)
    return torch.where(alpha > MIN_ALPHA, k.clamp(1.0, MAX_BOOST), torch.ones_like(k))


def at_centres(maps: Tensor, means: Tensor, cameras: CameraBatch) -> Tensor:
    """[M]: the largest value of the maps [N, H, W] at the pixels the centres [M, 3] fall on (1 where none)."""
    w2c = cameras.w2c.to(means)
    local = torch.einsum("nij,mj->nmi", w2c[:, :3, :3], means) + w2c[:, None, :3, 3]     # [N, M, 3]
    z = local[..., 2]
    pixel = torch.einsum("nij,nmj->nmi", cameras.K.to(means), local / z.clamp_min(1e-6)[..., None])
    col, row = pixel[..., 0].floor().long(), pixel[..., 1].floor().long()
    inside = (z > 1e-6) & (col >= 0) & (col < cameras.width) & (row >= 0) & (row < cameras.height)
    flat = maps.reshape(len(cameras), -1)
    index = (row.clamp(0, cameras.height - 1) * cameras.width + col.clamp(0, cameras.width - 1))
    values = torch.where(inside, torch.gather(flat, 1, index), torch.ones_like(z))
    return values.amax(dim=0)


def boosted(gaussians: Gaussians, k: Tensor) -> Gaussians:
    """The Gaussians with each optical depth -log(1 - opacity) multiplied by k [N] (>= 1)."""
    depth = k * F.softplus(gaussians.opacity_logits)          # -log(1 - o') = k (-log(1 - o))
    logits = torch.where(k > 1.0, torch.log(-torch.expm1(-depth)) + depth,   # logit(o') = log o' - log(1 - o')
                         gaussians.opacity_logits)                             # k = 1: bit for bit
    return Gaussians(gaussians.means, gaussians.log_scales, gaussians.quats, logits, gaussians.sh0,
                     gaussians.sh_rest)


def opaque_along(model: Gaussians, others: Gaussians, cameras: CameraBatch) -> tuple[Gaussians, int]:
    """The model's Gaussians, boosted where the views of `cameras` (model and others rendered together) are
    thinly covered, and how many were raised; `others` (the detail layer) count as cover and are not changed."""
    if not len(model):
        return model, 0
    k = at_centres(boost_maps(Gaussians.cat([model, others]), cameras), model.means, cameras).to(model.means)
    return boosted(model, k), int((k > 1.0).sum())
