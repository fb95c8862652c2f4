"""Real spherical harmonics up to degree 4, in gsplat's basis order and sign convention.

The basis is Sloan's "Efficient Spherical Harmonic Evaluation" (JCGT 2013), the one gsplat's CUDA
kernel, the original 3DGS code and PLY files use: coefficient k of a Gaussian multiplies basis k below,
so SH colours written by any of them render the same here.
"""
from __future__ import annotations

import torch
from torch import Tensor

MAX_SH_DEGREE = 4


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """[..., 3] directions (any length > 0) -> [..., (degree+1)^2] basis values."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree {degree} is not supported; use 0..{MAX_SH_DEGREE}")
    out = [torch.full_like(dirs[..., 0], 0.2820947917738781)]
    if degree == 0:
        return out[0][..., None]
    x, y, z = torch.nn.functional.normalize(dirs, dim=-1).unbind(-1)
    out += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        z2 = z * z
        fc1, fs1 = x * x - y * y, 2 * x * y
        sh6 = 0.9461746957575601 * z2 - 0.3153915652525201
        out += [0.5462742152960395 * fs1, -1.092548430592079 * z * y, sh6,
                -1.092548430592079 * z * x, 0.5462742152960395 * fc1]
    if degree >= 3:
        fc2, fs2 = x * fc1 - y * fs1, x * fs1 + y * fc1
        tmp_c = -2.285228997322329 * z2 + 0.4570457994644658
        sh12 = z * (1.865881662950577 * z2 - 1.119528997770346)
        out += [-0.5900435899266435 * fs2, 1.445305721320277 * z * fs1, tmp_c * y, sh12,
                tmp_c * x, 1.445305721320277 * z * fc1, -0.5900435899266435 * fc2]
    if degree >= 4:
        fc3, fs3 = x * fc2 - y * fs2, x * fs2 + y * fc2
        tmp_d = z * (-4.683325804901025 * z2 + 2.007139630671868)
        tmp_c = 3.31161143515146 * z2 - 0.47308734787878
        out += [0.6258357354491763 * fs3, -1.770130769779931 * z * fs2, tmp_c * fs1, tmp_d * y,
                1.984313483298443 * z * sh12 - 1.006230589874905 * sh6,
                tmp_d * x, tmp_c * fc1, -1.770130769779931 * z * fc2, 0.6258357354491763 * fc3]
    return torch.stack(out, dim=-1)


def sh_to_rgb(sh: Tensor, dirs: Tensor) -> Tensor:
    """Colour seen along `dirs` (Gaussian centre minus camera centre), as gsplat renders it.

    sh: [..., (degree+1)^2, 3]; dirs: [..., 3]. Returns [..., 3] = max(SH(dirs) + 0.5, 0).
    """
    degree = round(sh.shape[-2] ** 0.5) - 1
    if (degree + 1) ** 2 != sh.shape[-2]:
        raise ValueError(f"{sh.shape[-2]} SH coefficients per channel is not (degree+1)^2")
    basis = sh_basis(degree, dirs)
    return torch.clamp_min((basis[..., None] * sh).sum(dim=-2) + 0.5, 0.0)
