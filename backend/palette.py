"""The model's palette matched to the photo's, region by region: affine colour maps for the model's Gaussians.

Why: the small LaLRM reads little colour from the latents (a blue room comes back grey), and where the camera
moves past the photo, the model's Gaussians are all the artist sees. Rendering is linear in the splats'
colours (a pixel is sum w_i c_i, its alpha sum w_i), so an affine map c -> A c + b of the colours maps the
model's view at camera 0 to A view + b alpha. One map fitted so that this matches the photo times alpha (both
pooled to the model's coarse detail; least squares, so pixels the model covers faintly count little; pulled
towards the identity so that a one-colour photo cannot make a wild map) carries the photo's palette to
everything; maps fitted the same way around each place of the view (samples weighted by a Gaussian of
SIGMA, pulled towards that one map) carry each region's, so the wall a move uncovers beyond the photo's left
edge takes the colours of the photo's left edge. Each Gaussian takes the maps' value where its centre falls at
camera 0 (clamped into the view; one behind the camera, the one map).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.cameras import CameraBatch, sampled_at
from backend.detail import model_view
from backend.gaussians import SH_C0, Gaussians
from backend.render import RenderOutput

POOL = 4                # pixels of the model's view per fitted sample: the LaLRM's detail is about this coarse
MIN_COVER = 16.0        # fewer samples' worth of the model's alpha than this: nothing to fit
RIDGE = 1.0             # pull towards the identity map (the regions': the one map), in fully covered samples
SIGMA = 0.03            # a region's reach, a fraction of the view's long side (chosen on validation rooms)


def samples(view: RenderOutput, photo: Tensor) -> tuple[Tensor, Tensor]:
    """The fit's samples on the grid of POOL × POOL-pixel means of the view: x [4, h, w] = (the view's colour,
    its alpha) and the target [3, h, w] = photo times alpha."""
    shown = view.rgb[0].permute(2, 0, 1).float()                   # [3, H, W]: sum w c, black behind
    alpha = view.alpha[0, ..., 0][None].float()
    target = photo.permute(2, 0, 1).float() * alpha                # what it would show in the photo's colours
    return F.avg_pool2d(torch.cat([shown, alpha]), POOL), F.avg_pool2d(target, POOL)


def gaussian_sums(x: Tensor, sigma: float) -> Tensor:
    """[C, h, w]: at every grid place, the sum of x [C, h, w] over the grid weighted by exp(-d² / 2 sigma²), d
    the distance in grid steps (places beyond the grid count nothing)."""
    radius = max(1, math.ceil(4 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    x = F.conv2d(x[:, None], taps.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(x, taps.view(1, 1, -1, 1), padding=(radius, 0))[:, 0]


def solved(gram: Tensor, rhs: Tensor, prior: Tensor) -> Tensor:
    """The least-squares maps [..., 4, 3] of the normal equations gram [..., 4, 4], rhs [..., 4, 3], pulled
    towards prior [4, 3]."""
    return torch.linalg.solve(gram + RIDGE * torch.eye(4, dtype=gram.dtype), rhs + RIDGE * prior)


def palette_maps(view: RenderOutput, photo: Tensor) -> tuple[Tensor, Tensor] | None:
    """(the one map [4, 3], the regions' maps [h / POOL, w / POOL, 4, 3]) fitted on the model's view at camera 0
    against the photo [h, w, 3] at the view's size, the matched colour being [c, 1] @ map; None when the model
    shows too little of the view to fit."""
    x, target = samples(view, photo)
    if float(x[3].sum()) < MIN_COVER:
        return None
    h, w = x.shape[1:]
    gram = (x[:, None] * x[None]).reshape(16, h, w)                  # each sample's x xᵀ and x targetᵀ
    rhs = (x[:, None] * target[None]).reshape(12, h, w)
    identity = torch.cat([torch.eye(3), torch.zeros(1, 3)]).to(x)
    one = solved(gram.sum(dim=(1, 2)).view(4, 4), rhs.sum(dim=(1, 2)).view(4, 3), identity)
    sigma = SIGMA * max(view.alpha.shape[1:3]) / POOL
    near = gaussian_sums(torch.cat([gram, rhs]), sigma).permute(1, 2, 0)
    return one, solved(near[..., :16].reshape(h, w, 4, 4), near[..., 16:].reshape(h, w, 4, 3), one)


def recoloured(gaussians: Gaussians, maps: Tensor) -> Gaussians:
    """The Gaussians with each colour c (degree 0) mapped to [c, 1] @ its map (maps [N, 4, 3], or one [4, 3]);
    higher SH bands by A alone."""
    maps = maps.to(gaussians.sh0).expand(len(gaussians), 4, 3)
    rgb = gaussians.sh0 * SH_C0 + 0.5
    rgb = torch.einsum("na,nac->nc", torch.cat([rgb, torch.ones_like(rgb[:, :1])], dim=1), maps)
    rest = torch.einsum("nka,nac->nkc", gaussians.sh_rest, maps[:, :3])
    return Gaussians(gaussians.means, gaussians.log_scales, gaussians.quats, gaussians.opacity_logits,
                     (rgb - 0.5) / SH_C0, rest)


def maps_at(means: Tensor, one: Tensor, regions: Tensor, camera0: CameraBatch) -> Tensor:
    """[N, 4, 3]: the regions' maps, interpolated where each centre [N, 3] (camera 0's frame) falls at camera 0,
    clamped into the view; the one map for centres behind the camera."""
    field = regions.to(means).reshape(*regions.shape[:2], 12).permute(2, 0, 1)       # [12, h, w]
    at, _, in_front = sampled_at(field, means, camera0.K[0].to(means), camera0.width, camera0.height)
    return torch.where(in_front[:, None, None], at.T.reshape(-1, 4, 3), one.to(means).expand(len(means), 4, 3))


def matched_to_photo(local: Gaussians, photo: Tensor, camera0: CameraBatch) -> tuple[Gaussians, Tensor | None]:
    """The model's Gaussians (camera 0's frame) in the palette of the photo [h, w, 3] at camera 0's model size,
    and the one map [4, 3] (None: too little of the view covered, the Gaussians unchanged)."""
    camera0 = camera0.to("cpu", torch.float32)
    fit = palette_maps(model_view(local.to("cpu", torch.float32), camera0), photo)
    if fit is None:
        return local, None
    one, regions = fit
    maps = maps_at(local.means.to("cpu", torch.float32), one, regions, camera0)
    return recoloured(local, maps.to(local.means.device)), one
