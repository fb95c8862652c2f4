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
- gsplat's screen radius, ceil(min(3.33, sqrt(2 ln(255 opacity))) * sqrt(var_x or var_y)) per axis,
  only picks the tiles to test; its pixels are exactly those with alpha >= 1/255, the set used here.

Design, for bounded memory and speed on a CPU: all Gaussians are culled and projected at once, then
sorted by depth once. Instead of gsplat's 16x16 tile lists (which test ~10x more pixels than a small
Gaussian covers), each Gaussian is expanded to exactly the pixels where its alpha can reach 1/255: the
rows of its ellipse, and on each row the span solved from the quadratic form. Gaussians are taken
front to back in chunks whose pixel pairs stay under `pair_budget`; within a chunk the pairs are
sorted by pixel (stable, so depth order is kept), transmittance comes from a segmented cumulative sum
of log(1 - alpha) in float64, and per-pixel transmittance and the "done" flag carry to the next chunk.
Gaussians whose box, and rows whose span, hold only finished pixels are dropped before expansion.
Every step is an ordinary differentiable torch op, so autograd gives gradients for all parameters.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, fields

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
DEFAULT_PAIR_BUDGET = 1 << 20


@dataclass
class Projected:
    """Visible Gaussians of one camera in 2D, one 1-D tensor per quantity: per-pair gathers and
    arithmetic run several times faster on contiguous columns than on rows of a [V, k] tensor."""
    mean_x: Tensor     # [V] pixels
    mean_y: Tensor
    cov_xx: Tensor     # 2D variances, eps2d included (the covariance is in the conic)
    cov_yy: Tensor
    conic_a: Tensor    # inverse covariance: power = 0.5 (a dx^2 + c dy^2) + b dx dy
    conic_b: Tensor
    conic_c: Tensor
    opacity: Tensor
    depth: Tensor      # camera z
    ids: Tensor        # index into the input Gaussians

    def columns(self) -> list[Tensor]:
        return [getattr(self, f.name) for f in fields(self)][:-1]


def project(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, w2c: Tensor, K: Tensor,
            width: int, height: int) -> Projected:
    """Cull and project 3D Gaussians for one camera (w2c [4,4] OpenCV, K [3,3] pixels), in input order."""
    R, t = w2c[:3, :3], w2c[:3, 3]
    z_all = means.detach() @ R[2].detach() + t[2].detach()
    visible = (z_all >= NEAR_PLANE) & (z_all <= FAR_PLANE) & (opacities.detach() >= ALPHA_MIN)
    ids = torch.nonzero(visible).squeeze(1)
    if len(ids) < len(means):
        means, quats, scales, opacities = (v.index_select(0, ids) for v in (means, quats, scales, opacities))
    x, y, z = (means @ R.T + t).T.contiguous()
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x_pos = (width - cx) / fx + FRUSTUM_MARGIN * 0.5 * width / fx
    lim_x_neg = cx / fx + FRUSTUM_MARGIN * 0.5 * width / fx
    lim_y_pos = (height - cy) / fy + FRUSTUM_MARGIN * 0.5 * height / fy
    lim_y_neg = cy / fy + FRUSTUM_MARGIN * 0.5 * height / fy
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    # Square root of the camera-space covariance, M = R_w2c R_q S (Sigma_c = M M^T); the two rows of
    # J M give the 2D covariance (J M)(J M)^T. Written out on 1-D columns: on a CPU this is several
    # times faster than batched 3x3 matrix products.
    rq = quat_to_rotmat(quats).reshape(-1, 9).T.contiguous()  # rq[3 i + j] = R_q[:, i, j]
    s0, s1, s2 = scales.T.contiguous()
    rs = [rq[3 * i + j] * (s0, s1, s2)[j] for i in range(3) for j in range(3)]  # (R_q S)[i, j]
    m = [[sum(R[i, k] * rs[3 * k + j] for k in range(3)) for j in range(3)] for i in range(3)]
    rz = 1 / z
    j00, j02 = fx * rz, -fx * tx * rz * rz
    j11, j12 = fy * rz, -fy * ty * rz * rz
    row0 = [j00 * m[0][j] + j02 * m[2][j] for j in range(3)]
    row1 = [j11 * m[1][j] + j12 * m[2][j] for j in range(3)]
    cxx = row0[0] * row0[0] + row0[1] * row0[1] + row0[2] * row0[2] + EPS2D
    cxy = row0[0] * row1[0] + row0[1] * row1[1] + row0[2] * row1[2]
    cyy = row1[0] * row1[0] + row1[1] * row1[1] + row1[2] * row1[2] + EPS2D
    det = cxx * cyy - cxy * cxy
    proj = Projected(fx * x * rz + cx, fy * y * rz + cy, cxx, cyy, cyy / det, -cxy / det, cxx / det,
                     opacities, z, ids)
    bad = det.detach() <= 0
    if bool(bad.any()):
        keep = torch.nonzero(~bad).squeeze(1)
        proj = Projected(*(value.index_select(0, keep) for value in vars(proj).values()))
    return proj


def sort_by_depth(proj: Projected, features: Tensor) -> tuple[Projected, Tensor]:
    """Front to back; ties keep input order, as gsplat's stable radix sort. features [V, F] come back
    channel-major, [F, V]. One gather of all columns stacked."""
    depth = proj.depth.detach().contiguous()
    # Positive floats order like their bit patterns (gsplat sorts these bits too); integer sorts are
    # several times faster than float sorts on a CPU.
    bits = depth.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[depth.element_size()])
    order = torch.sort(bits, stable=True).indices
    columns = proj.columns()
    packed = torch.cat([torch.stack(columns), features.T]).index_select(1, order)
    return Projected(*packed[:len(columns)], proj.ids[order]), packed[len(columns):]


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
    """Per-pixel state carried from chunk to chunk: blended features (channel-major), log
    transmittance, done flags. Updates are out of place so that autograd sees the whole history."""

    def __init__(self, width: int, height: int, n_features: int, like: Tensor):
        self.width, self.height = width, height
        n_pix = width * height
        self.accum = like.new_zeros((n_features, n_pix))
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
        count = (sat[(y1 + 1) * w + x1 + 1] - sat[y0 * w + x1 + 1]
                 - sat[(y1 + 1) * w + x0] + sat[y0 * w + x0])
        return count > 0

    def rows_open(self, y: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """Whether each row span [x0..x1] on row y holds an unfinished pixel (empty spans: False)."""
        w = self.width + 1
        rows = self.row_open.view(-1)
        return rows[y * w + (x1 + 1).clamp_min(x0)] - rows[y * w + x0] > 0

    def blend(self, pix: Tensor, gid: Tensor, alpha: Tensor, features: Tensor) -> None:
        """Composite pairs (pixel, Gaussian, alpha) sorted by pixel, front to back within a pixel."""
        log_keep = torch.log1p(-alpha)
        # float64: the running sum spans the whole chunk, the differences below need the precision.
        cum = torch.cumsum(log_keep, 0, dtype=torch.float64)
        # Runs of equal pixels; inside a run, T before a pair = T of the pixel * prod of earlier (1-a):
        # log T after a pair = cum + (log T of the pixel - cum before the run's first pair).
        new_run = torch.ones(len(pix), dtype=torch.bool, device=pix.device)
        new_run[1:] = pix[1:] != pix[:-1]
        run_start = torch.nonzero(new_run).squeeze(1)
        pix = pix.long()  # index_add and index_select are several times faster with int64 indices
        run_pix = pix.index_select(0, run_start)
        offset = self.log_t.index_put((run_pix,), self.log_t.index_select(0, run_pix)
                                      - cum.index_select(0, run_start) + log_keep.index_select(0, run_start))
        log_t_after = cum + offset.index_select(0, pix)
        include = log_t_after > LOG_T_MIN  # false from the first pair that would end the pixel on
        weight = alpha * torch.exp(log_t_after.to(alpha.dtype) - log_keep) * include
        self.accum = self.accum.index_add(1, pix, weight * features.index_select(1, gid))
        self.log_t = self.log_t.index_add(0, pix, (log_keep * include).double())
        run_end = torch.cat([run_start[1:] - 1, run_start.new_tensor([len(pix) - 1])])
        self.done[run_pix[~include.index_select(0, run_end)]] = True


def rasterize(proj: Projected, features: Tensor, width: int, height: int,
              pair_budget: int = DEFAULT_PAIR_BUDGET) -> tuple[Tensor, Tensor]:
    """Composite 2D Gaussians sorted front to back (sort_by_depth).

    features: [F, V] per-Gaussian values to blend (colour, depth). Returns (sum of w * features
    [H, W, F], alpha [H, W, 1]) with w = alpha_i * T_i the blending weights.
    """
    canvas = _Canvas(width, height, features.shape[0], features)
    # Largest power that still gives alpha >= 1/255; the ellipse power <= level bounds every pair.
    level = torch.log(proj.opacity.detach() / ALPHA_MIN).clamp_min(0)
    x0, x1 = _box(proj.mean_x.detach(), torch.sqrt(2 * level * proj.cov_xx.detach()), width)
    y0, y1 = _box(proj.mean_y.detach(), torch.sqrt(2 * level * proj.cov_yy.detach()), height)
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
        keys, pair_row, row_g, alpha, n_kept = _pairs(proj, g, level, y0, n_rows, canvas)
        if n_kept:
            # Stable: pairs come front to back, so within a pixel depth order is kept. Skipped pairs
            # have the key n_pix and sort to the end.
            keys, order = torch.sort(keys, stable=True)
            order = order[:n_kept]
            gid = row_g.index_select(0, pair_row.index_select(0, order))
            canvas.blend(keys[:n_kept], gid, alpha.index_select(0, order), features)

    alpha_img = 1.0 - torch.exp(canvas.log_t).to(features.dtype)
    return canvas.accum.T.reshape(height, width, -1), alpha_img.view(height, width, 1)


def _pairs(proj: Projected, g: Tensor, level: Tensor, y0: Tensor, n_rows: Tensor,
           canvas: _Canvas) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Pixel pairs of Gaussians g (front to back), in Gaussian-major order.

    Returns (pixel index as int32 sort key, or n_pix for pairs to skip (alpha < 1/255, finished
    pixel); the row of each pair; the Gaussian of each row; alpha; the number of pairs kept).
    """
    width = canvas.width
    row_local, row_off = _segment_offsets(n_rows.index_select(0, g))
    row_g = g.index_select(0, row_local)
    row_y = y0.index_select(0, row_g) + row_off
    mx, my, a, b, c = (v.index_select(0, row_g) for v in (proj.mean_x, proj.mean_y, proj.conic_a,
                                                           proj.conic_b, proj.conic_c))
    with torch.no_grad():
        ad, bd, cd = a.detach(), b.detach(), c.detach()
        dy = row_y.to(ad.dtype) + 0.5 - my.detach()
        # 0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= level  <=>  dx in [(-b dy - s) / a, (-b dy + s) / a]
        row_level = level.index_select(0, row_g)
        s = torch.sqrt((bd * bd * dy * dy - ad * (cd * dy * dy - 2 * row_level)).clamp_min(0))
        xs, xe = _box(mx.detach() - bd * dy / ad, s / ad, width)
        live = canvas.rows_open(row_y, xs, xe) if canvas.row_open is not None else xe >= xs
        live = torch.nonzero(live).squeeze(1)
        xs, xe, row_y, row_g = xs[live], xe[live], row_y[live], row_g[live]
    mx, my, a, b, c = (v.index_select(0, live) for v in (mx, my, a, b, c))
    # Power along a row as a quadratic in dx = x + 0.5 - mean_x: q0 + dx (q1 + q2 dx).
    dy = row_y.to(mx.dtype) + 0.5 - my
    row_values = (xs.to(mx.dtype) + 0.5 - mx, 0.5 * c * dy * dy, b * dy, 0.5 * a,
                  proj.opacity.index_select(0, row_g))
    pair_row, pair_off = _segment_offsets(xe - xs + 1)
    dx0, q0, q1, q2, opacity = (v.index_select(0, pair_row) for v in row_values)
    dx = dx0 + pair_off
    power = q0 + dx * (q1 + q2 * dx)
    alpha = torch.clamp_max(opacity * torch.exp(-power), ALPHA_MAX)
    pix = (row_y * width + xs).to(torch.int32).index_select(0, pair_row) + pair_off.to(torch.int32)
    keep = (power >= 0) & (alpha >= ALPHA_MIN)
    if canvas.row_open is not None:
        keep &= ~canvas.done.index_select(0, pix)
    keys = torch.where(keep, pix, len(canvas.done))
    return keys, pair_row, row_g, alpha, int(keep.sum())


def render_views(gaussians: Gaussians, w2c: Tensor, K: Tensor, width: int, height: int,
                 pair_budget: int = DEFAULT_PAIR_BUDGET) -> tuple[Tensor, Tensor, Tensor]:
    """Render C views; returns (rgb without background [C,H,W,3], alpha [C,H,W,1], depth [C,H,W,1])."""
    means, scales, opacities = gaussians.means, gaussians.scales, gaussians.opacities
    rgbs, alphas, depths = [], [], []
    for view in range(len(w2c)):
        proj = project(means, gaussians.quats, scales, opacities, w2c[view], K[view], width, height)
        campos = torch.linalg.inv(w2c[view])[:3, 3]
        sh = torch.cat([gaussians.sh0.index_select(0, proj.ids)[:, None],
                        gaussians.sh_rest.index_select(0, proj.ids)], dim=1)
        colors = sh_to_rgb(sh, means.index_select(0, proj.ids) - campos)
        proj, features = sort_by_depth(proj, torch.cat([colors, proj.depth[:, None]], dim=-1))
        accum, alpha = rasterize(proj, features, width, height, pair_budget)
        rgbs.append(accum[..., :3])
        alphas.append(alpha)
        depths.append(accum[..., 3:] / alpha.clamp_min(1e-10))
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)
