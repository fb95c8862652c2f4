"""The one Gaussian container, stored in the parameterization that PLY files and gsplat use.

Values are kept raw (log-scales, opacity logits, SH coefficients, unnormalized quaternions) so that a
file read and written again keeps every bit; activated views are properties.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814


def sh_rest_count(degree: int) -> int:
    """Number of SH coefficients per colour channel beyond the DC term for an SH degree."""
    return (degree + 1) ** 2 - 1


@dataclass
class Gaussians:
    means: Tensor           # [N, 3] world positions
    log_scales: Tensor      # [N, 3] natural log of the axis standard deviations
    quats: Tensor           # [N, 4] rotation, w x y z, not necessarily normalized
    opacity_logits: Tensor  # [N]    logit of the opacity
    sh0: Tensor             # [N, 3] SH degree-0 coefficient per channel (PLY f_dc)
    sh_rest: Tensor         # [N, K, 3] higher SH coefficients, K = (degree+1)^2 - 1 (K may be 0)

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        if self.sh_rest is None:
            self.sh_rest = self.means.new_zeros((n, 0, 3))
        expected = {"means": (n, 3), "log_scales": (n, 3), "quats": (n, 4), "opacity_logits": (n,),
                    "sh0": (n, 3)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Gaussians.{name} has shape {got}, expected {shape}")
        k = self.sh_rest.shape[1] if self.sh_rest.ndim == 3 else -1
        if self.sh_rest.ndim != 3 or self.sh_rest.shape[0] != n or self.sh_rest.shape[2] != 3 \
                or self.sh_degree < 0:
            raise ValueError(f"Gaussians.sh_rest has shape {tuple(self.sh_rest.shape)}, expected "
                             f"({n}, (degree+1)^2-1, 3); {k} is not such a count")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        k = self.sh_rest.shape[1]
        degree = round((k + 1) ** 0.5) - 1
        return degree if sh_rest_count(degree) == k else -1

    @property
    def scales(self) -> Tensor:
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def rgb(self) -> Tensor:
        """View-independent display colour (SH DC only), unclamped."""
        return 0.5 + SH_C0 * self.sh0

    @property
    def sh(self) -> Tensor:
        """All SH coefficients, [N, (degree+1)^2, 3], as gsplat's `colors` with `sh_degree`."""
        return torch.cat([self.sh0[:, None, :], self.sh_rest], dim=1)

    @property
    def device(self) -> torch.device:
        return self.means.device

    def _map(self, fn) -> "Gaussians":
        return Gaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, *args, **kwargs) -> "Gaussians":
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "Gaussians":
        return self._map(lambda t: t.detach())

    def __getitem__(self, index) -> "Gaussians":
        """Select Gaussians with a boolean mask, index tensor or slice."""
        return self._map(lambda t: t[index])

    @staticmethod
    def cat(parts: list["Gaussians"]) -> "Gaussians":
        return Gaussians(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                            for f in fields(Gaussians)})
