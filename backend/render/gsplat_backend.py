"""The CUDA path: gsplat's fused rasterizer with the same settings the torch reference copies.

gsplat from PyPI compiles its CUDA kernels on first use, which needs the CUDA toolkit (nvcc), ninja and a
C++ compiler. Where that fails, `unavailable_reason` says so once and the caller renders with our own
rasterizer instead: a machine without build tools still renders, only slower.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from backend.gaussians import Gaussians
from backend.render.reference import EPS2D, FAR_PLANE, NEAR_PLANE

_checked = False
_reason: str | None = None


def unavailable_reason() -> str | None:
    """None when gsplat's CUDA kernels load; else why not (warned once per process, as a RuntimeWarning).

    The first call may compile gsplat's kernels (minutes, once per machine); a failed compile is not
    retried in this process."""
    global _checked, _reason
    if not _checked:
        _checked = True
        try:
            from gsplat.cuda._backend import _C
            failure = None if _C is not None else "no CUDA toolkit (nvcc) was found to compile its kernels"
        except Exception as e:  # noqa: BLE001 - any build failure (compiler, ninja, nvcc) means the same
            failure = f"compiling its CUDA kernels failed: {type(e).__name__}: {str(e).strip()[:300]}"
        if failure:
            _reason = (f"gsplat is unavailable ({failure}); rendering with Wonderland's own rasterizer "
                       "instead, which gives the same images more slowly. To use gsplat, install the CUDA "
                       "toolkit matching torch.version.cuda, ninja and a C++ compiler (Visual Studio Build "
                       "Tools on Windows), then restart; its first render compiles the kernels (minutes).")
            warnings.warn(_reason, RuntimeWarning, stacklevel=2)
    return _reason


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
