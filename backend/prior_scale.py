"""The scene's size at inference: the model's Gaussians scaled about camera 0 so that their median depth there
is the depth prior's (backend/models/depth_prior.py: the photo's metric depth at camera 0), or the subject
distance the artist gives.

Why scale rather than move each Gaussian: the LaLRM's frames agree with one another at its own scale; one
factor about camera 0 keeps that agreement (and camera 0's view: every Gaussian slides along its own ray) while
the size of the whole follows the prior, which reads it from every pixel of the photo, or the artist, who knows
it: the model's guess is one near the average room (benchmarks/RESULTS.md, *What did not move the depth*), and
a subject photographed from far away comes out a few metres away and swings across an orbit around it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from backend.cameras import CameraBatch
from backend.errors import InputError
from backend.gaussians import Gaussians
from backend.models.depth_prior import DepthPrior, ray_channels
from backend.render import RenderOutput

SEEN_ALPHA = 0.5        # pixels where the model's view is this opaque take part in the median
MAX_SUBJECT_DISTANCE = 1e5  # scene units (100 km in metres): farther, float32 splats lose their shape


def check_subject_distance(value: float | None) -> None:
    """None (the model's own size) or a finite distance in (0, MAX_SUBJECT_DISTANCE]; else an InputError."""
    if value is None:
        return
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and 0 < number <= MAX_SUBJECT_DISTANCE):
        raise InputError(f"--subject-distance {value!r} is out of range",
                         "give how far the picture's subject is from its camera, in scene units (metres in a "
                         f"metric scene), above 0 and at most {MAX_SUBJECT_DISTANCE:g}; leave it out to keep "
                         "the model's own guess")


def photo_depth(prior: DepthPrior, photo: Tensor, camera0: CameraBatch) -> Tensor:
    """Camera z [h, w] (the world's unit) of photo [h, w, 3] in 0..1 seen by camera0, in the caller's world (a
    gravity prior reads its up), with K at the photo's size."""
    h, w = photo.shape[:2]
    device = next(prior.parameters()).device
    pose = camera0.c2w[0].to(torch.float32).cpu() if prior.config.gravity else None
    rays = ray_channels(camera0.K[0].to(torch.float32).cpu(), h, w, pose)
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


def distance_ratio(view: RenderOutput, distance: float) -> float:
    """The factor that takes the model's view at camera 0 (model_view) to a median depth of `distance`."""
    return prior_ratio(view, torch.full(view.depth.shape[1:3], float(distance)))


def scaled(g: Gaussians, factor: float) -> Gaussians:
    """Gaussians scaled by `factor` about the origin (camera 0 in the normalized frame)."""
    return Gaussians(means=g.means * factor, log_scales=g.log_scales + math.log(factor), quats=g.quats,
                     opacity_logits=g.opacity_logits, sh0=g.sh0, sh_rest=g.sh_rest)
