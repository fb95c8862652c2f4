"""The model's palette matched to the photo's: one affine colour map for all of the model's Gaussians.

Why: the small LaLRM reads little colour from the latents (a blue room comes back grey), and where the camera
moves past the photo, the model's Gaussians are all the artist sees. Rendering is linear in the splats'
colours (a pixel is sum w_i c_i, its alpha sum w_i), so an affine map c -> A c + b of every colour maps the
model's view at camera 0 to A view + b alpha. Fitting A and b so that this matches the photo times alpha
there (both pooled to the model's coarse detail; least squares, so pixels the model covers faintly count
little; pulled towards the identity so that a one-colour photo cannot make a wild map) carries the photo's
palette to everything the model shows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.cameras import CameraBatch
from backend.detail import model_view
from backend.gaussians import SH_C0, Gaussians
from backend.render import RenderOutput

POOL = 4                # pixels of the model's view per fitted sample: the LaLRM's detail is about this coarse
MIN_COVER = 16.0        # fewer samples' worth of the model's alpha than this: nothing to fit
RIDGE = 1.0             # pull towards the identity map, in units of one fully covered sample


def palette_map(view: RenderOutput, photo: Tensor) -> Tensor | None:
    """[4, 3] W with the matched colour = [c, 1] @ W, fitted on the model's view at camera 0 against the
    photo [H, W, 3] at the view's size; None when the model shows too little of the view to fit."""
    shown = view.rgb[0].permute(2, 0, 1)[None].float()             # [1, 3, h, w]: sum w c, black behind
    alpha = view.alpha[0, ..., 0][None, None].float()
    target = photo.permute(2, 0, 1)[None].float() * alpha          # what it would show in the photo's colours
    shown, alpha, target = (F.avg_pool2d(x, POOL).flatten(2)[0].T for x in (shown, alpha, target))
    if float(alpha.sum()) < MIN_COVER:
        return None
    x = torch.cat([shown, alpha], dim=1)                                  # [n, 4]: [c, 1] @ W, pixel-weighted
    identity = torch.cat([torch.eye(3), torch.zeros(1, 3)]).to(x)
    gram = x.T @ x + RIDGE * torch.eye(4, dtype=x.dtype)
    return torch.linalg.solve(gram, x.T @ target + RIDGE * identity)


def matched(gaussians: Gaussians, weights: Tensor) -> Gaussians:
    """The Gaussians with every colour c (degree 0) mapped to [c, 1] @ weights; higher SH bands by A alone."""
    rgb = gaussians.sh0 * SH_C0 + 0.5
    rgb = torch.cat([rgb, torch.ones_like(rgb[:, :1])], dim=1) @ weights.to(rgb)
    rest = gaussians.sh_rest @ weights[:3].to(rgb)
    return Gaussians(gaussians.means, gaussians.log_scales, gaussians.quats, gaussians.opacity_logits,
                     (rgb - 0.5) / SH_C0, rest)


def matched_to_photo(local: Gaussians, photo: Tensor, camera0: CameraBatch) -> tuple[Gaussians, Tensor | None]:
    """The model's Gaussians (camera 0's frame) in the palette of the photo [H, W, 3] at camera 0's model size,
    and the map [4, 3] used (None: too little of the view covered, the Gaussians unchanged)."""
    weights = palette_map(model_view(local.to("cpu", torch.float32), camera0.to("cpu", torch.float32)), photo)
    return (local, None) if weights is None else (matched(local, weights.to(local.device)), weights)
