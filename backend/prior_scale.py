"""The depth prior at inference (backend/models/depth_prior.py): the photo's metric depth at camera 0, and the
model's Gaussians scaled about camera 0 so that their median depth there is the prior's.

Why scale rather than move each Gaussian: the LaLRM's frames agree with one another at its own scale; one
factor about camera 0 keeps that agreement (and camera 0's view: every Gaussian slides along its own ray) while
the size of the whole follows the prior, which reads it from every pixel of the photo.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from backend.cameras import CameraBatch
from backend.gaussians import Gaussians
from backend.models.depth_prior import DepthPrior, ray_channels
from backend.render import RenderOutput

SEEN_ALPHA = 0.5        # pixels where the model's view is this opaque take part in the median


def photo_depth(prior: DepthPrior, photo: Tensor, camera0: CameraBatch) -> Tensor:
    """Camera z [h, w] (the world's unit) of photo [h, w, 3] in 0..1 seen by camera0 (K at the photo's size)."""
    h, w = photo.shape[:2]
    device = next(prior.parameters()).device
    rays = ray_channels(camera0.K[0].to(torch.float32).cpu(), h, w)
    with torch.no_grad():
        log_z = prior(photo.permute(2, 0, 1)[None].to(device, torch.float32), rays[None].to(device))
    return log_z[0].exp().cpu()


def prior_ratio(view: RenderOutput, depth: Tensor) -> float:
    """The factor that takes the model's view at camera 0 (model_view) to the prior's depth [h, w], median to
    median of their log ratio where the model shows something (1.0 where it shows nothing)."""
    z, alpha = view.depth[0, ..., 0].cpu(), view.alpha[0, ..., 0].cpu()
    seen = (alpha > SEEN_ALPHA) & (z > 0)
    if not bool(seen.any()):
        return 1.0
    return math.exp(float((depth[seen].log() - z[seen].log()).median()))


def scaled(g: Gaussians, factor: float) -> Gaussians:
    """Gaussians scaled by `factor` about the origin (camera 0 in the normalized frame)."""
    return Gaussians(means=g.means * factor, log_scales=g.log_scales + math.log(factor), quats=g.quats,
                     opacity_logits=g.opacity_logits, sh0=g.sh0, sh_rest=g.sh_rest)
