"""The detail layer: the input photo itself lifted into pixel-aligned Gaussians at a resolution of its own.

The model works at 96x64 and gives one blurry Gaussian per 2x2 of its pixels; nothing of the photo's
own pixels reaches them. The detail layer takes the photo after the same crop box as the model input,
at `detail_size` pixels on the long side (capped at what the crop holds), and puts one opaque Gaussian
on every pixel's ray in camera 0's normalized frame (the frame the LaLRM predicts in; camera 0 is the
identity there), so it maps to the world exactly like the model's Gaussians. Its parts:

- depth: the expected camera z of ALL the model's Gaussians rendered at camera 0 (far better than the
  frame-0 centres), holes filled by normalized convolution, upsampled in inverse depth and sharpened by
  a guided filter (He et al. 2010) whose guide is the photo, so depth edges move onto the photo's edges;
- silhouettes: where inverse depth still spans a depth edge inside a small window, each pixel snaps to
  the window's nearer or farther side, so no pixel floats at an interpolated depth (a halo);
- splat size: an isotropic std-dev of SPLAT_SIGMA pixel footprints. Spacing / sigma is the same at any
  magnification, so the coverage found when dollying in holds at every distance; at the detail size
  itself the rasterizer's eps2d (0.3 px^2) adds to it;
- occluders: the model's Gaussians that would render in front of the detail surface anywhere in their
  footprint (radius where their alpha reaches 1/255, not only their centre) are culled;
- colours: a splat of SPLAT_SIGMA (plus eps2d) blurs the photo by about 0.8 px at camera 0, and the kept
  model Gaussians tint it. Rendering is linear in the splats' colours, so one Richardson step (each splat's
  colour plus the photo's residual at its pixel, clamped to 0..1) fits them to the photo: at camera 0 it
  gives back the photo's edges instead of a blur of them;
- a learned refiner (backend/models/refiner.py), when the model folder has one, corrects each pixel's
  depth, opacity and splat size from the photo and the model's view at camera 0 before the lift.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.cameras import CameraBatch
from backend.gaussians import SH_C0, Gaussians
from backend.models.refiner import Refiner
from backend.plucker import camera_directions
from backend.render import RenderOutput, render
from backend.render.reference import ALPHA_MIN

SPLAT_SIGMA = 0.6               # std-dev in pixel footprints: coverage >= 0.96 between splats dollying in x4
SPLAT_OPACITY = 0.995           # the rasterizer caps alpha at 0.999: opaque
CULL_TOLERANCE = 0.2            # a Gaussian counts as in front when its z < surface z / (1 + this)
EDGE_CONTRAST = 0.1             # relative inverse-depth range in a window that marks a depth edge
FALLBACK_DEPTH = 10.0           # normalized units (the camera path is 1): where nothing of the model is seen
GUIDE_EPS = 1e-3                # guided filter regularization (guide in 0..1): edges above ~0.03 contrast pass


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over a (2r+1)^2 window of [N, C, H, W], the window shrunk at the borders."""
    if radius <= 0:
        return x
    return F.avg_pool2d(x, 2 * radius + 1, 1, radius, count_include_pad=False)


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float) -> Tensor:
    """He et al.'s guided filter with a grey guide: src [N, 1, H, W] made locally linear in guide."""
    mean_i, mean_p = box_mean(guide, radius), box_mean(src, radius)
    cov_ip = box_mean(guide * src, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def window_max(x: Tensor, radius: int) -> Tensor:
    """Max over a (2r+1)^2 window of [N, C, H, W], separably (cost linear in r)."""
    if radius <= 0:
        return x
    k = 2 * radius + 1
    x = F.max_pool2d(x, (1, k), 1, (0, radius))
    return F.max_pool2d(x, (k, 1), 1, (radius, 0))


def doubled_window_max(m: Tensor, radius: int) -> Tensor:
    """From window maxes of radius r to those of radius 2r in O(HW): [x-2r, x+2r] = [x-2r, x] + [x, x+2r]."""
    m = F.pad(m, (radius, radius, 0, 0), value=-math.inf)
    m = torch.maximum(m[..., :, :-2 * radius], m[..., :, 2 * radius:])
    m = F.pad(m, (0, 0, radius, radius), value=-math.inf)
    return torch.maximum(m[..., :-2 * radius, :], m[..., 2 * radius:, :])


def fill_holes(inv_depth: Tensor, alpha: Tensor) -> Tensor:
    """Inverse depth where the model saw little (alpha < 1) blended with an alpha-weighted blur of it
    (normalized convolution at growing radii), so empty pixels take their surroundings' depth; where no
    window holds enough alpha (a nearly transparent model), the far plane at FALLBACK_DEPTH."""
    h, w = inv_depth.shape[-2:]
    filled, weight = inv_depth * alpha, alpha
    blurred = torch.full_like(inv_depth, 1.0 / FALLBACK_DEPTH)
    radius = 1
    while radius < max(h, w):
        num, den = box_mean(filled, radius), box_mean(weight, radius)
        blurred = torch.where(den > 1e-3, num / den.clamp_min(1e-3), blurred)
        if bool((den > 1e-3).all()):
            break
        radius *= 2
    return alpha * inv_depth + (1 - alpha) * blurred


def model_view(local: Gaussians, camera0: CameraBatch) -> RenderOutput:
    """All the model's Gaussians rendered at camera 0's model size (what the layer is built from)."""
    with torch.no_grad():
        return render(local, camera0)


def model_inverse_depth(out: RenderOutput) -> Tensor:
    """Inverse expected camera z [1, 1, h, w] of the model's view at camera 0 (model_view), holes filled."""
    alpha = out.alpha[..., 0].clamp(0, 1)[:, None]
    z = out.depth[..., 0][:, None]
    seen = alpha > 1e-4
    if not bool(seen.any()):   # a model that puts nothing in front of camera 0: the photo on a far plane
        return torch.full_like(z, 1.0 / FALLBACK_DEPTH)
    return fill_holes(torch.where(seen, 1.0 / z.clamp_min(1e-6), torch.zeros_like(z)), alpha)


def snap_silhouettes(inv_depth: Tensor, radius: int) -> Tensor:
    """Pixels between a near and a far surface (inside a window whose inverse-depth range is a depth
    edge) take the nearer of the window's two extremes: no pixel at an interpolated depth."""
    hi = window_max(inv_depth, radius)
    lo = -window_max(-inv_depth, radius)
    edge = (hi - lo) > EDGE_CONTRAST * hi
    snapped = torch.where(hi - inv_depth < inv_depth - lo, hi, lo)
    return torch.where(edge, snapped, inv_depth)


def detail_depth(local: Gaussians, camera0: CameraBatch, photo: Tensor, view: RenderOutput | None = None,
                 prior: Tensor | None = None, prior_weight: float = 0.0) -> Tensor:
    """Camera z [h, w] of the detail grid (photo [h, w, 3] in 0..1) from the model's Gaussians (their
    model_view when already rendered); with a depth prior's camera z `prior` at the model's size, the
    weighted mean of the two in log depth (prior_weight: the prior's share)."""
    h, w = photo.shape[:2]
    inv = model_inverse_depth(model_view(local, camera0) if view is None else view)
    if prior is not None and prior_weight > 0:
        inv = torch.exp(torch.lerp(inv.log(), -prior.to(inv).log()[None, None], prior_weight))
    factor = max(w / camera0.width, h / camera0.height)
    inv = F.interpolate(inv, size=(h, w), mode="bilinear", align_corners=False)
    grey = (photo.to(inv) @ torch.tensor([0.299, 0.587, 0.114]).to(inv))[None, None]
    radius = max(1, round(2 * factor))        # the model's depth edges are smeared over about 2 of its pixels
    inv = guided_filter(grey, inv, radius, GUIDE_EPS).clamp_min(1e-6)
    inv = snap_silhouettes(inv, radius)
    return 1.0 / inv[0, 0]


def lift(photo: Tensor, depth: Tensor, K: Tensor, sh_rest_count: int = 0,
         opacity_offset: Tensor | None = None, log_scale_offset: Tensor | None = None) -> Gaussians:
    """One opaque Gaussian per pixel of photo [h, w, 3] on its centre ray at camera z depth [h, w], in the
    frame of a camera at the identity with intrinsics K [3, 3] (at the photo's size); a refiner's
    per-pixel opacity logit and log-scale offsets [h, w] change its opacity and splat size."""
    h, w = depth.shape
    dtype = depth.dtype
    means = (camera_directions(K.to(dtype), h, w) * depth[..., None]).reshape(-1, 3)
    z = depth.reshape(-1)
    log_sigma = torch.log(SPLAT_SIGMA * z / torch.sqrt(K[0, 0] * K[1, 1]))
    n = h * w
    logits = torch.full((n,), math.log(SPLAT_OPACITY / (1 - SPLAT_OPACITY)), dtype=dtype)
    if opacity_offset is not None:
        logits = logits + opacity_offset.reshape(-1)
    if log_scale_offset is not None:
        log_sigma = log_sigma + log_scale_offset.reshape(-1)
    rgb = photo.reshape(-1, 3).to(dtype)
    return Gaussians(means=means, log_scales=log_sigma[:, None].expand(n, 3).contiguous(),
                     quats=torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype).expand(n, 4).contiguous(),
                     opacity_logits=logits,
                     sh0=(rgb - 0.5) / SH_C0, sh_rest=torch.zeros((n, sh_rest_count, 3), dtype=dtype))


def occluders(gaussians: Gaussians, depth: Tensor, K: Tensor) -> Tensor:
    """Mask [N] of the Gaussians (camera-0 frame) that would render in front of the surface `depth`
    [h, w] (camera z at intrinsics K) somewhere in their footprint: the disc where their alpha can reach
    1/255, radius sigma_max * sqrt(2 ln(255 opacity)) projected, not only their centre."""
    h, w = depth.shape
    means = gaussians.means.to(depth)
    z = means[:, 2]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    zc = z.clamp_min(1e-6)
    u, v = means[:, 0] / zc * fx + cx, means[:, 1] / zc * fy + cy
    opacity = gaussians.opacities.to(depth)
    reach = torch.sqrt(2 * torch.log((opacity / ALPHA_MIN).clamp_min(1.0)))
    radius = gaussians.scales.to(depth).amax(dim=1) * torch.sqrt(fx * fy) / zc * reach
    inside = (z > 0) & (reach > 0) & (u > -radius) & (u < w + radius) & (v > -radius) & (v < h + radius)
    # the farthest surface point within each footprint, from separable max filters at radii 0, 1, 2, 4, ...
    level = torch.ceil(torch.log2(radius.clamp(min=1.0))).long() + (radius > 0.5).long()
    levels = int(level.max().item()) + 1 if len(level) else 1
    far = torch.empty_like(z)
    ui = u.floor().long().clamp(0, w - 1)
    vi = v.floor().long().clamp(0, h - 1)
    pooled = depth[None, None]
    for k in range(levels):
        if k == 1:
            pooled = window_max(pooled, 1)
        elif k > 1:
            pooled = doubled_window_max(pooled, 2 ** (k - 2)) if 2 ** (k - 2) < max(h, w) else pooled
        pick = level == k
        if pick.any():
            far[pick] = pooled[0, 0, vi[pick], ui[pick]]
    return inside & (z * (1 + CULL_TOLERANCE) < far)


def fit_colours(detail: Gaussians, kept: Gaussians, photo: Tensor, camera0: CameraBatch) -> Gaussians:
    """The detail Gaussians (one per pixel of photo [h, w, 3], row-major) with colours moved by the photo's
    residual where camera 0 renders them over the `kept` model Gaussians at the photo's size: one Richardson
    step of the (linear) colour fit. More steps sharpen the input view further but ring in the views
    beside it (benchmarks/RESULTS.md). No gradients: the fit is a constant offset to whatever trains."""
    h, w = photo.shape[:2]
    with torch.no_grad():
        view = render(Gaussians.cat([kept, detail]), camera0, width=w, height=h).rgb[0]
        rgb = (detail.rgb + (photo - view).reshape(-1, 3)).clamp(0, 1)
    return Gaussians(means=detail.means, log_scales=detail.log_scales, quats=detail.quats,
                     opacity_logits=detail.opacity_logits, sh0=(rgb - 0.5) / SH_C0, sh_rest=detail.sh_rest)


def refiner_features(photo: Tensor, view: RenderOutput, depth: Tensor) -> Tensor:
    """The refiner's input [1, 8, h, w] (backend/models/refiner.py): photo [h, w, 3], the model's view at
    camera 0 (colour, alpha) upsampled to the photo's size, and log depth [h, w] minus its median."""
    h, w = depth.shape

    def up(x: Tensor) -> Tensor:
        return F.interpolate(x.permute(0, 3, 1, 2).to(depth), size=(h, w), mode="bilinear", align_corners=False)

    log_depth = depth.log()
    return torch.cat([photo.permute(2, 0, 1)[None].to(depth), up(view.rgb.clamp(0, 1)), up(view.alpha.clamp(0, 1)),
                      (log_depth - log_depth.median())[None, None]], dim=1)


def detail_layer(local: Gaussians, photo: Tensor, camera0: CameraBatch, refiner: Refiner | None = None,
                 prior: Tensor | None = None, prior_weight: float = 0.0) -> tuple[Gaussians, Tensor, dict]:
    """The detail Gaussians for photo [h, w, 3] (cropped like the model input) and the mask of the model's
    Gaussians `local` to keep, both in camera 0's normalized frame (camera0: its model-size camera there,
    c2w the identity); and what to report (size, counts, whether a refiner ran). With a `refiner`, its
    corrections apply (differentiably: train-refiner trains it through this function). The detail Gaussians
    and the mask are on the CPU whatever the devices of `local`, `photo` and the refiner (train-refiner
    passes CUDA frames); the refiner runs on its own device. `prior` and `prior_weight`: detail_depth's."""
    h, w = photo.shape[:2]
    dtype = torch.float32
    local32 = local.to("cpu", dtype)
    cam = camera0.to("cpu", dtype)
    photo = photo.to("cpu", dtype)   # all of the layer is built on the CPU, whatever device the photo came on
    view = model_view(local32, cam)
    depth = detail_depth(local32, cam, photo, view, prior, prior_weight)
    K = cam.K[0] * torch.tensor([[w / cam.width], [h / cam.height], [1.0]], dtype=dtype)
    opacity_offset = log_scale_offset = None
    if refiner is not None:
        device = next(refiner.parameters()).device
        log_depth, opacity_offset, log_scale_offset = (
            o[0].to("cpu", dtype) for o in refiner(refiner_features(photo, view, depth).to(device)))
        depth = depth * torch.exp(log_depth)
    detail = lift(photo, depth, K, local.sh_rest.shape[1], opacity_offset, log_scale_offset)
    keep = ~occluders(local32, depth.detach(), K)
    detail = fit_colours(detail, local32[keep], photo, cam)
    info = {"size": [w, h], "count": len(detail), "culled": int((~keep).sum()), "refiner": refiner is not None,
            "depth_range": [round(float(depth.detach().min()), 4), round(float(depth.detach().max()), 4)]}
    return detail, keep, info
