"""The CUDA path: gsplat's fused rasterizer with the same settings the torch reference copies."""
from __future__ import annotations

import torch
from torch import Tensor

from backend.gaussians import Gaussians
from backend.render.reference import EPS2D, FAR_PLANE, NEAR_PLANE


def render_views(gaussians: Gaussians, w2c: Tensor, K: Tensor, width: int,
                 height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Render C views on CUDA; returns (rgb without background [C,H,W,3], alpha, expected depth)."""
    from gsplat import rasterization  # imported here: the CPU path must not need gsplat's build

    g = gaussians.to(torch.float32)
    out, alpha, _ = rasterization(
        means=g.means.contiguous(), quats=g.quats.contiguous(), scales=g.scales.contiguous(),
        opacities=g.opacities.contiguous(), colors=g.sh.contiguous(),
        viewmats=w2c.float().contiguous(), Ks=K.float().contiguous(), width=width, height=height,
        near_plane=NEAR_PLANE, far_plane=FAR_PLANE, eps2d=EPS2D, sh_degree=g.sh_degree,
        render_mode="RGB+ED", rasterize_mode="classic")
    return out[..., :3], alpha, out[..., 3:]
