"""Pure-PyTorch Gaussian rasterizer with gsplat's conventions (runs on any device, differentiable).

It reproduces gsplat 1.5.3's "classic" 3DGS rasterization (rendering.py `rasterization`, the CUDA
kernels ProjectionEWA3DGSFused.cu and RasterizeToPixels3DGSFwd.cu), so images agree with the CUDA path:
- EWA projection; the Jacobian uses the mean clamped to 1.3x the view frustum (lim = (W-cx)/fx + 0.3
  tan_fovx, ...); eps2d = 0.3 is added to the 2D covariance (no antialiasing compensation).
- culled: depth z < near_plane (0.01) or z > far_plane (1e10), det <= 0, opacity < 1/255.
- pixel centres at (x + 0.5, y + 0.5); alpha = min(0.999, opacity * exp(-power)); pairs with
  alpha < 1/255 (or power < 0) are skipped; a pixel stops at the first Gaussian whose next
  transmittance T * (1 - alpha) would be <= 1e-4 (that Gaussian is excluded).
- rendered alpha = 1 - T; depth = sum(w * z) / max(alpha, 1e-10) (gsplat's "RGB+ED").

Design, for bounded memory and speed on a CPU: all Gaussians are culled and projected at once, then
sorted by depth once. Instead of gsplat's 16x16 tile lists (which test ~10x more pixels than a small
Gaussian covers), each Gaussian is expanded to exactly the pixels where its alpha can reach 1/255: the
rows of its ellipse, and on each row the span solved from the quadratic form. Gaussians are taken
front to back in chunks whose pixel pairs stay under `pair_budget`; within a chunk the pairs are
sorted by pixel (stable, so depth order is kept), transmittance comes from a segmented cumulative sum
of log(1 - alpha) in float64, and per-pixel transmittance and the "done" flag carry to the next chunk.
Gaussians whose box only covers finished pixels are dropped before expansion (summed-area table).
Every step is an ordinary differentiable torch op, so autograd gives gradients for all parameters.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from backend.gaussians import Gaussians
from backend.render.sh import sh_to_rgb
from backend.rotations import quat_to_rotmat

EPS2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
LOG_T_MIN = math.log(T_MIN)
FRUSTUM_MARGIN = 0.3   # Jacobian clamp: 30% of the half field of view beyond the image border
SPAN_PAD = 1e-3        # pixels added to the solved spans; the exact alpha test then trims them
DEFAULT_PAIR_BUDGET = 1 << 21


@dataclass
class Projected:
    """Visible Gaussians of one camera, in 2D, sorted front to back."""
    means2d: Tensor    # [V, 2] pixels
    cov2d: Tensor      # [V, 3] (xx, xy, yy), eps2d included
    conics: Tensor     # [V, 3] inverse covariance (a, b, c): power = 0.5(a dx^2 + c dy^2) + b dx dy
    opacities: Tensor  # [V]
    depths: Tensor     # [V] camera z
    ids: Tensor        # [V] index into the input Gaussians


def project(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, w2c: Tensor, K: Tensor,
            width: int, height: int) -> Projected:
    """Cull and project 3D Gaussians for one camera (w2c [4,4] OpenCV, K [3,3] pixels)."""
    R, t = w2c[:3, :3], w2c[:3, 3]
    means_c = means @ R.T + t
    z = means_c[:, 2]
    ids = torch.nonzero((z >= NEAR_PLANE) & (z <= FAR_PLANE) & (opacities >= ALPHA_MIN)).squeeze(1)
    means_c, z = means_c[ids], z[ids]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x_pos = (width - cx) / fx + FRUSTUM_MARGIN * 0.5 * width / fx
    lim_x_neg = cx / fx + FRUSTUM_MARGIN * 0.5 * width / fx
    lim_y_pos = (height - cy) / fy + FRUSTUM_MARGIN * 0.5 * height / fy
    lim_y_neg = cy / fy + FRUSTUM_MARGIN * 0.5 * height / fy
    tx = z * torch.minimum(torch.maximum(means_c[:, 0] / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(means_c[:, 1] / z, -lim_y_neg), lim_y_pos)
    # Camera-space square root of the covariance, M = R_w2c R_q S, so Sigma_c = M M^T, and the two
    # rows of J M, so that the 2D covariance is (J M)(J M)^T.
    M = R @ (quat_to_rotmat(quats[ids]) * scales[ids][:, None, :])
    row0 = (fx / z)[:, None] * M[:, 0] - (fx * tx / (z * z))[:, None] * M[:, 2]
    row1 = (fy / z)[:, None] * M[:, 1] - (fy * ty / (z * z))[:, None] * M[:, 2]
    cxx = (row0 * row0).sum(-1) + EPS2D
    cxy = (row0 * row1).sum(-1)
    cyy = (row1 * row1).sum(-1) + EPS2D
    det = cxx * cyy - cxy * cxy
    means2d = torch.stack([fx * means_c[:, 0] / z + cx, fy * means_c[:, 1] / z + cy], dim=-1)
    keep = torch.nonzero(det > 0).squeeze(1)
    det = det[keep]
    cov2d = torch.stack([cxx[keep], cxy[keep], cyy[keep]], dim=-1)
    conics = torch.stack([cyy[keep] / det, -cxy[keep] / det, cxx[keep] / det], dim=-1)
    ids, z = ids[keep], z[keep]
    order = torch.sort(z.detach(), stable=True).indices  # ties keep input order, as gsplat's sort
    return Projected(means2d[keep][order], cov2d[order], conics[order], opacities[ids][order],
                     z[order], ids[order])


def _segment_offsets(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For groups of sizes `counts`: each member's group id and its index inside the group."""
    group = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    return group, torch.arange(len(group), device=counts.device) - starts.index_select(0, group)


def _box(center: Tensor, half: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """First and last pixel index whose centre lies within center +- half, clipped to the image."""
    lo = torch.ceil((center - half - 0.5 - SPAN_PAD).clamp(-1, size)).long().clamp(0, size)
    hi = torch.floor((center + half - 0.5 + SPAN_PAD).clamp(-1, size)).long().clamp(-1, size - 1)
    return lo, hi


class _Canvas:
    """Per-pixel state carried from chunk to chunk: blended features, log transmittance, done flags.

    Updates are out of place so that autograd sees the whole history.
    """

    def __init__(self, width: int, height: int, n_features: int, like: Tensor):
        self.width, self.height = width, height
        n_pix = width * height
        self.accum = like.new_zeros((n_pix, n_features))
        self.log_t = torch.zeros(n_pix, dtype=torch.float64, device=like.device)
        self.done = torch.zeros(n_pix, dtype=torch.bool, device=like.device)
        self.row_open: Tensor | None = None  # [H, W+1] running count of unfinished pixels per row
        self.box_open: Tensor | None = None  # [H+1, W+1] summed-area table of unfinished pixels

    def refresh_open_counts(self) -> None:
        open_ = (~self.done).view(self.height, self.width).to(torch.int32)
        self.row_open = torch.nn.functional.pad(open_.cumsum(1, dtype=torch.int32), (1, 0))
        self.box_open = torch.nn.functional.pad(self.row_open.cumsum(0, dtype=torch.int32), (0, 0, 1, 0))

    def boxes_open(self, x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor) -> Tensor:
        """Whether each box [x0..x1] x [y0..y1] holds an unfinished pixel."""
        w = self.width + 1
        sat = self.box_open.view(-1)
        count = (sat[(y1 + 1) * w + x1 + 1] - sat[y0 * w + x1 + 1] - sat[(y1 + 1) * w + x0] + sat[y0 * w + x0])
        return count > 0

    def rows_open(self, y: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """Whether each row span [x0..x1] on row y holds an unfinished pixel (empty spans: False)."""
        w = self.width + 1
        rows = self.row_open.view(-1)
        return rows[y * w + (x1 + 1).clamp_min(x0)] - rows[y * w + x0] > 0

    def blend(self, pix: Tensor, gid: Tensor, alpha: Tensor, features: Tensor) -> None:
        """Composite pairs (pixel, Gaussian, alpha), given front to back per pixel."""
        pix, order = torch.sort(pix.to(torch.int32), stable=True)
        gid, alpha = gid.index_select(0, order), alpha.index_select(0, order)
        log_keep = torch.log1p(-alpha.double())
        cum = torch.cumsum(log_keep, 0)
        # Runs of equal pixels; inside a run, T before a pair = T of the pixel * prod of earlier (1-a).
        new_run = torch.ones(len(pix), dtype=torch.bool, device=pix.device)
        new_run[1:] = pix[1:] != pix[:-1]
        run_start = torch.nonzero(new_run).squeeze(1)
        run_len = torch.diff(run_start, append=run_start.new_tensor([len(pix)]))
        run_pix = pix.index_select(0, run_start)
        run_offset = self.log_t.index_select(0, run_pix) - (cum - log_keep).index_select(0, run_start)
        log_t_after = cum + torch.repeat_interleave(run_offset, run_len)
        include = log_t_after > LOG_T_MIN  # false from the first pair that would end the pixel on
        weight = alpha * torch.exp(log_t_after - log_keep).to(alpha.dtype) * include
        self.accum = self.accum.index_add(0, pix, weight[:, None] * features.index_select(0, gid))
        self.log_t = self.log_t.index_add(0, pix, log_keep * include)
        run_end = run_start + run_len - 1
        self.done[run_pix[~include.index_select(0, run_end)].long()] = True


def rasterize(proj: Projected, features: Tensor, width: int, height: int,
              pair_budget: int = DEFAULT_PAIR_BUDGET) -> tuple[Tensor, Tensor]:
    """Composite depth-sorted 2D Gaussians front to back.

    features: [V, F] per-Gaussian values to blend (colour, depth). Returns (sum of w * features
    [H, W, F], alpha [H, W, 1]) with w = alpha_i * T_i the blending weights.
    """
    canvas = _Canvas(width, height, features.shape[1], features)
    # Largest power that still gives alpha >= 1/255; the ellipse power <= level bounds every pair.
    level = torch.log(proj.opacities.detach() / ALPHA_MIN).clamp_min(0)
    cov = proj.cov2d.detach()
    mean = proj.means2d.detach()
    x0, x1 = _box(mean[:, 0], torch.sqrt(2 * level * cov[:, 0]), width)
    y0, y1 = _box(mean[:, 1], torch.sqrt(2 * level * cov[:, 2]), height)
    n_rows = (y1 - y0 + 1).clamp_min(0)
    bound = n_rows * (x1 - x0 + 1).clamp_min(0)
    live = torch.nonzero(bound > 0).squeeze(1)
    cum_bound = torch.cumsum(bound.index_select(0, live), 0).tolist()

    start = 0
    while start < len(live):
        # The next Gaussians, front to back, whose pixel boxes hold at most pair_budget pairs.
        end = max(start + 1, bisect.bisect_right(cum_bound, (cum_bound[start - 1] if start else 0)
                                                 + pair_budget))
        g = live[start:end]
        start = end
        if bool(canvas.done.any()):
            canvas.refresh_open_counts()
            g = g[canvas.boxes_open(x0[g], x1[g], y0[g], y1[g])]
        pix, gid, alpha = _pairs(proj, g, level, y0, n_rows, canvas)
        if len(pix):
            canvas.blend(pix, gid, alpha, features)

    alpha_img = 1.0 - torch.exp(canvas.log_t).to(features.dtype)
    return canvas.accum.view(height, width, -1), alpha_img.view(height, width, 1)


def _pairs(proj: Projected, g: Tensor, level: Tensor, y0: Tensor, n_rows: Tensor,
           canvas: _Canvas) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel pairs of Gaussians g (front to back): (pixel index, Gaussian index, alpha) in
    Gaussian-major order, where alpha >= 1/255 and the pixel is still blending."""
    width = canvas.width
    row_local, row_off = _segment_offsets(n_rows.index_select(0, g))
    row_g = g.index_select(0, row_local)
    row_y = y0.index_select(0, row_g) + row_off
    mean = proj.means2d.index_select(0, row_g)
    conic = proj.conics.index_select(0, row_g)
    with torch.no_grad():
        a, b, c = conic.detach().unbind(-1)
        dy = row_y.to(a.dtype) + 0.5 - mean[:, 1].detach()
        # 0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= level  <=>  dx in [(-b dy - s) / a, (-b dy + s) / a]
        s = torch.sqrt((b * b * dy * dy - a * (c * dy * dy - 2 * level.index_select(0, row_g))).clamp_min(0))
        xs, xe = _box(mean[:, 0].detach() - b * dy / a, s / a, width)
        if canvas.row_open is not None:
            live = canvas.rows_open(row_y, xs, xe)
        else:
            live = xe >= xs
        live = torch.nonzero(live).squeeze(1)
        xs, xe, row_y, row_g = xs[live], xe[live], row_y[live], row_g[live]
    mean, conic = mean.index_select(0, live), conic.index_select(0, live)
    # Power along a row as a quadratic in dx = x + 0.5 - mean_x: q0 + dx (q1 + q2 dx).
    dy = row_y.to(mean.dtype) + 0.5 - mean[:, 1]
    row_f = torch.stack([xs.to(mean.dtype) + 0.5 - mean[:, 0], 0.5 * conic[:, 2] * dy * dy,
                         conic[:, 1] * dy, 0.5 * conic[:, 0], proj.opacities.index_select(0, row_g)], -1)
    pair_row, pair_off = _segment_offsets(xe - xs + 1)
    pf = row_f.index_select(0, pair_row)
    dx = pf[:, 0] + pair_off
    power = pf[:, 1] + dx * (pf[:, 2] + pf[:, 3] * dx)
    alpha = torch.clamp_max(pf[:, 4] * torch.exp(-power), ALPHA_MAX)
    pix = (row_y * width + xs).index_select(0, pair_row) + pair_off
    keep = (power >= 0) & (alpha >= ALPHA_MIN)
    if canvas.row_open is not None:
        keep &= ~canvas.done.index_select(0, pix)
    keep = torch.nonzero(keep).squeeze(1)
    return pix.index_select(0, keep), row_g.index_select(0, pair_row.index_select(0, keep)), \
        alpha.index_select(0, keep)


def render_views(gaussians: Gaussians, w2c: Tensor, K: Tensor, width: int, height: int,
                 pair_budget: int = DEFAULT_PAIR_BUDGET) -> tuple[Tensor, Tensor, Tensor]:
    """Render C views; returns (rgb without background [C,H,W,3], alpha [C,H,W,1], depth [C,H,W,1])."""
    means, scales, opacities, sh = gaussians.means, gaussians.scales, gaussians.opacities, gaussians.sh
    rgbs, alphas, depths = [], [], []
    for view in range(len(w2c)):
        proj = project(means, gaussians.quats, scales, opacities, w2c[view], K[view], width, height)
        campos = torch.linalg.inv(w2c[view])[:3, 3]
        colors = sh_to_rgb(sh.index_select(0, proj.ids), means.index_select(0, proj.ids) - campos)
        features = torch.cat([colors, proj.depths[:, None]], dim=-1)
        accum, alpha = rasterize(proj, features, width, height, pair_budget)
        rgbs.append(accum[..., :3])
        alphas.append(alpha)
        depths.append(accum[..., 3:] / alpha.clamp_min(1e-10))
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)
