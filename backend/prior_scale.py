"""The scene's size and broad shape at inference: the model's Gaussians slid along camera 0's rays so that their
depth there follows the depth prior's (backend/models/depth_prior.py: the photo's metric depth at camera 0), or
scaled to the subject distance the artist gives.

Why: the model's own guess of the size is one near the average room (benchmarks/RESULTS.md, *What did not move
the depth*), so a subject photographed from far away would come out a few metres away and swing across an orbit
around it; the prior reads the depth from every pixel of the photo. Its median ratio to the model's depth sets
the size; the ratio's residual, blurred (`shape_sigma`), bends the model's broad shape towards the prior's, which
is closer to the truth (a slanted floor, a far corner), while the blur keeps the LaLRM's own relief and the
agreement of its frames within a few pixels. Sliding along the rays keeps camera 0's view the photo: each
Gaussian keeps the pixel it covers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.cameras import CameraBatch, sampled_at
from backend.errors import InputError
from backend.gaussians import Gaussians
from backend.models.depth_prior import DepthPrior
from backend.render import RenderOutput

SEEN_ALPHA = 0.5        # pixels where the model's view is this opaque take part in the median
MAX_SUBJECT_DISTANCE = 1e5  # scene units (100 km in metres): farther, float32 splats lose their shape


def as_number(value) -> float:
    """value as a float if it is an int or float (not a bool), else NaN: a check's one test then refuses it."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def check_subject_distance(value: float | None) -> None:
    """None (the model's own size) or a finite distance in (0, MAX_SUBJECT_DISTANCE]; else an InputError."""
    if value is None:
        return
    number = as_number(value)
    if not (math.isfinite(number) and 0 < number <= MAX_SUBJECT_DISTANCE):
        raise InputError(f"--subject-distance {value!r} is out of range",
                         "give how far the picture's subject is from its camera, in scene units (metres in a "
                         f"metric scene), above 0 and at most {MAX_SUBJECT_DISTANCE:g}; leave it out to keep "
                         "the model's own guess")


def check_ground_z(value: float | None) -> None:
    """None (no ground known) or a finite height within ±MAX_SUBJECT_DISTANCE; else an InputError."""
    if value is None:
        return
    number = as_number(value)
    if not (math.isfinite(number) and abs(number) <= MAX_SUBJECT_DISTANCE):
        raise InputError(f"--ground-z {value!r} is out of range",
                         "give the world Z of the ground the picture's camera stands over, in scene units (0 for "
                         f"Blender's floor grid), within ±{MAX_SUBJECT_DISTANCE:g}; or --no-ground when there is none")


def photo_depth(prior: DepthPrior, photo: Tensor, camera0: CameraBatch, ground_z: float | None = None) -> Tensor:
    """Camera z [h, w] (the world's unit) of photo [h, w, 3] in 0..1 seen by camera0, in the caller's world (a
    gravity prior reads its up, a ground prior where its rays meet the ground at world Z = ground_z: None, or a
    camera not above it, tells it none), with K at the photo's size."""
    h, w = photo.shape[:2]
    device = next(prior.parameters()).device
    rays = prior.config.rays(camera0.K[0], h, w, camera0.c2w[0], ground_z)
    with torch.no_grad():
        log_z = prior(photo.permute(2, 0, 1)[None].to(device, torch.float32), rays[None].to(device))
    return log_z[0].exp().cpu()


def log_ratio(view: RenderOutput, depth: Tensor) -> tuple[Tensor, Tensor]:
    """log(depth / the model's depth) [h, w] for the model's view at camera 0 (model_view) and a depth [h, w] at
    its size, and the mask of the pixels where the model shows something (the ratio is 0 elsewhere)."""
    z, alpha = view.depth[0, ..., 0].cpu(), view.alpha[0, ..., 0].cpu()
    seen = (alpha > SEEN_ALPHA) & (z > 0)
    ratio = depth.to(z).clamp_min(1e-6).log() - z.clamp_min(1e-6).log()
    return torch.where(seen, ratio, torch.zeros_like(ratio)), seen


def prior_ratio(view: RenderOutput, depth: Tensor) -> float:
    """The factor that takes the model's view at camera 0 (model_view) to the prior's depth [h, w], median to
    median of their log ratio where the model shows something (1.0 where it shows nothing)."""
    ratio, seen = log_ratio(view, depth)
    return math.exp(float(ratio[seen].median())) if bool(seen.any()) else 1.0


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """x [h, w] blurred by a Gaussian of std-dev `sigma` pixels (separable, edges replicated)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    x = F.conv2d(F.pad(x[None, None], (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1))[0, 0]


def prior_field(view: RenderOutput, depth: Tensor, shape_sigma: float) -> tuple[Tensor, float]:
    """The log factor [h, w] that takes the model's view at camera 0 to the prior's depth [h, w], and the size's
    factor alone (prior_ratio's). The field is the median log ratio plus the ratio's residual blurred by a
    Gaussian of `shape_sigma` times the long side, normalized by the blurred mask of seen pixels so that unseen
    ones take their surroundings' value (0: the median alone, one factor). Zero where the model shows nothing."""
    ratio, seen = log_ratio(view, depth)
    if not bool(seen.any()):
        return torch.zeros_like(ratio), 1.0
    median = ratio[seen].median()
    size = math.exp(float(median))
    if shape_sigma <= 0:
        return torch.full_like(ratio, float(median)), size
    weight = seen.to(ratio.dtype)
    sigma = shape_sigma * max(ratio.shape)
    residual, coverage = gaussian_blur((ratio - median) * weight, sigma), gaussian_blur(weight, sigma)
    field = median + torch.where(coverage > 1e-3, residual / coverage.clamp_min(1e-3), torch.zeros_like(residual))
    return field, size


def distance_ratio(view: RenderOutput, distance: float) -> float:
    """The factor that takes the model's view at camera 0 (model_view) to a median depth of `distance`."""
    return prior_ratio(view, torch.full(view.depth.shape[1:3], float(distance)))


def slid(g: Gaussians, log_factor: Tensor) -> Gaussians:
    """Gaussians moved along their rays from the origin (camera 0 in the normalized frame) and grown by
    exp(log_factor) (one value, or one per Gaussian [N])."""
    log_factor = log_factor.to(g.means)
    return Gaussians(means=g.means * log_factor.exp()[..., None], log_scales=g.log_scales + log_factor[..., None],
                     quats=g.quats, opacity_logits=g.opacity_logits, sh0=g.sh0, sh_rest=g.sh_rest)


def scaled(g: Gaussians, factor: float) -> Gaussians:
    """Gaussians scaled by `factor` about the origin (camera 0 in the normalized frame)."""
    return slid(g, torch.tensor(math.log(factor)))


def warped(g: Gaussians, field: Tensor, K: Tensor) -> Gaussians:
    """Gaussians (camera 0's frame, c2w the identity) each slid by prior_field's `field` [h, w] at the pixel of
    camera 0 (intrinsics K [3, 3] at the field's size) its centre falls on; beyond the picture or behind the
    camera, where the prior says nothing, by the field's median over the picture (close to the median ratio, the
    size alone: on validation rooms this beat the nearest edge's value by 0.04–0.14 dB, and a fade from it)."""
    h, w = field.shape
    at, inside, _ = sampled_at(field[None], g.means.detach().to("cpu", torch.float32), K, w, h)
    return slid(g, torch.where(inside, at[0], field.median()))
