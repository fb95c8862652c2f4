"""Validation metrics for rendered views (paper.md reports PSNR↑ / SSIM↑ / LPIPS↓; LPIPS needs network
weights we do not ship, so validation logs PSNR and SSIM, both through torchmetrics)."""
from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio

from backend.training.losses import ssim as ssim_index


def image_metrics(rendered: Tensor, target: Tensor) -> dict[str, float]:
    """rendered, target [N, 3, H, W] in [0, 1] -> {"psnr": dB averaged over images, "ssim": mean}."""
    rendered, target = rendered.detach().float().clamp(0, 1), target.detach().float()
    psnr = peak_signal_noise_ratio(rendered, target, data_range=1.0, reduction="elementwise_mean",
                                   dim=(1, 2, 3))
    return {"psnr": float(psnr), "ssim": float(ssim_index(rendered, target))}
