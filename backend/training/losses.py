"""Reconstruction losses for LaLRM training (paper.md: MSE + VGG-19 perceptual + scale/opacity terms).

loss = MSE(render, target)
     + perceptual_weight · Σ_l w_l · mean|φ_l(render) − φ_l(target)|     (VGG-19, weights from a file)
     + ssim_weight · (1 − SSIM(render, target))                          (torchmetrics)
     + scale_weight · mean(relu(log_scale − log(scale_threshold)))       (no needle/blob Gaussians)
     + opacity_weight · mean(opacity)                                    (prefer few opaque Gaussians)
     + depth_weight · mean_valid |log ẑ − log z|                         (geometry from depth maps)

The depth term compares the rendered expected camera z ẑ of all Gaussians (backend.render's depth: Σ w z / α)
with the ground-truth camera z (backend/data/depth.py), both in the normalized frame, at the supervised
views. Why the rendered depth and not each pixel-aligned Gaussian's own ray distance: the rendered depth is
what the result is seen with and what the detail layer lifts the photo onto at camera 0 (backend/detail.py),
it lets the Gaussians of all frames share a surface (a frame's Gaussians need not sit on its own rays'
surface where another frame's cover it), and it also supervises the views between and beyond the inputs.
Log depth makes it scale-free (a relative error, like the AbsRel it is scored by) and the choice of ray
distance or camera z immaterial: per pixel they differ by the factor |K⁻¹ (u, v, 1)|, a constant in log
space. Valid pixels: ground truth > 0 (silhouettes and missing data are 0) and rendered alpha > DEPTH_MIN_ALPHA
(expected depth means little where almost nothing is seen; the photometric terms govern coverage there).

The perceptual term is the Chen & Koltun feature loss used by GS-LRM and Long-LRM: VGG-19 ReLU outputs
relu1_2, relu2_2, relu3_2, relu4_2, relu5_2 with weights 1/2.6, 1/4.8, 1/3.7, 1/5.6, 10/1.5, images
normalized with ImageNet statistics. The regularizers follow Long-LRM's spirit (it regularizes opacity
towards sparsity and keeps scales bounded): log-scales above the threshold (normalized scene units,
see backend/models/lalrm.py) are penalized linearly, and the mean opacity is penalized with a small
weight so that unneeded Gaussians fade and can be pruned at inference.

VGG-19 weights are never downloaded or made up: `load_vgg19(path)` reads a local .safetensors file in
torchvision's key layout ("features.0.weight", ...). A torchvision .pth is a pickle and is refused;
convert it once on a machine where you trust it:
    python -c "import torch; from safetensors.torch import save_file; sd = torch.load('vgg19-dcbb9e9d.pth',
    weights_only=True); save_file({k: v for k, v in sd.items() if k.startswith('features.')},
    'vgg19.safetensors')"
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from backend.errors import InputError
from backend.gaussians import Gaussians
from backend.models.weights import load_into, load_state_dict

# torchvision's vgg19 "E" configuration: conv widths, "M" = 2×2 max pool.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M")
PERCEPTUAL_LAYERS = {3: 1 / 2.6, 8: 1 / 4.8, 13: 1 / 3.7, 22: 1 / 5.6, 31: 10 / 1.5}  # ReLU index: weight
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEPTH_MIN_ALPHA = 0.5   # bench_quality's depth scores use it too
NO_VGG_HINT = ("pass --vgg19 FILE.safetensors (torchvision's vgg19 weights converted to safetensors, see "
               "backend/training/losses.py), or turn the term off with --perceptual-weight 0 "
               "(e.g. use --ssim-weight instead)")


class VGG19Features(nn.Module):
    """torchvision's vgg19 `features` stack (same module indices, so its state-dict keys load)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
                channels = item
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        """Images [N, 3, H, W] in [0, 1] -> the ReLU outputs of PERCEPTUAL_LAYERS, shallow first."""
        x = (images - self.mean) / self.std
        out = []
        last = max(PERCEPTUAL_LAYERS)
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in PERCEPTUAL_LAYERS:
                out.append(x)
            if index == last:
                break
        return out


def load_vgg19(path: str | os.PathLike | None) -> VGG19Features:
    """Our VGG-19 with weights from a local torchvision-format .safetensors file, frozen, in eval mode."""
    if path is None:
        raise InputError("the perceptual loss needs VGG-19 weights, and no --vgg19 file was given "
                         "(a randomly initialized VGG would make the term meaningless)", NO_VGG_HINT)
    state = load_state_dict(path)  # refuses pickle files with a conversion hint
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        raise InputError(f"{path} holds no 'features.*' tensors, so it is not a torchvision vgg19 state dict",
                         NO_VGG_HINT)
    model = VGG19Features()
    load_into(model, features, strict=True)
    return model.eval().requires_grad_(False)


@dataclass
class LossWeights:
    perceptual: float = 0.5
    ssim: float = 0.0
    scale: float = 0.01
    scale_threshold: float = 0.1   # normalized scene units (the LaLRM's max_scale is 0.3)
    opacity: float = 0.01
    depth: float = 0.0             # log-depth L1 (module docstring); 0 trains as before

    def __post_init__(self) -> None:
        bad = {k: v for k, v in dataclasses.asdict(self).items() if not (math.isfinite(v) and v >= 0)}
        if bad or not self.scale_threshold > 0:
            raise InputError(f"loss weights {bad or {'scale_threshold': self.scale_threshold}} are not usable",
                             "use finite weights >= 0 (0 turns a term off) and a scale threshold > 0")


class ReconstructionLoss(nn.Module):
    """MSE + optional perceptual / SSIM terms on renders + Gaussian regularizers (module docstring)."""

    def __init__(self, weights: LossWeights, vgg: VGG19Features | None = None):
        super().__init__()
        if weights.perceptual > 0 and vgg is None:
            raise InputError(f"the perceptual loss weight is {weights.perceptual} but no VGG-19 weights were "
                             "loaded", NO_VGG_HINT)
        self.weights = weights
        self.vgg = vgg if weights.perceptual > 0 else None

    def forward(self, rendered: Tensor, target: Tensor, gaussians: Gaussians | None = None,
                depth: tuple[Tensor, Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """rendered, target [N, 3, H, W] in [0, 1] -> {"loss", "mse", and each active term}. `depth`:
        (rendered camera z, rendered alpha, ground-truth camera z), each [N, H, W], 0 = invalid truth."""
        w = self.weights
        rendered, target = rendered.float(), target.float()
        terms = {"mse": F.mse_loss(rendered, target)}
        loss = terms["mse"]
        if self.vgg is not None:
            terms["perceptual"] = perceptual_loss(self.vgg, rendered, target)
            loss = loss + w.perceptual * terms["perceptual"]
        if w.ssim > 0:
            terms["ssim"] = ssim(rendered, target)
            loss = loss + w.ssim * (1 - terms["ssim"])
        if gaussians is not None and w.scale > 0:
            excess = F.relu(gaussians.log_scales.float() - math.log(w.scale_threshold))
            terms["scale_reg"] = excess.mean()
            loss = loss + w.scale * terms["scale_reg"]
        if gaussians is not None and w.opacity > 0:
            terms["opacity_reg"] = gaussians.opacities.float().mean()
            loss = loss + w.opacity * terms["opacity_reg"]
        if depth is not None and w.depth > 0:
            terms["depth"] = depth_loss(*depth)
            loss = loss + w.depth * terms["depth"]
        terms["loss"] = loss
        return terms


def depth_loss(rendered: Tensor, alpha: Tensor, truth: Tensor) -> Tensor:
    """mean |log rendered − log truth| over valid pixels (module docstring); 0 (with a graph) when none is."""
    valid = (truth > 0) & (alpha.detach() > DEPTH_MIN_ALPHA) & (rendered.detach() > 0)
    if not valid.any():
        return rendered.sum() * 0
    return (rendered[valid].float().log() - truth[valid].float().log()).abs().mean()


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """torchmetrics' SSIM (Gaussian window 11, σ 1.5), the window shrunk to fit images smaller than 11 px."""
    size = min(11, min(a.shape[-2:]) - (1 - min(a.shape[-2:]) % 2))
    return structural_similarity_index_measure(a, b, data_range=1.0, kernel_size=size, sigma=1.5 * size / 11)


def perceptual_loss(vgg: VGG19Features, rendered: Tensor, target: Tensor) -> Tensor:
    with torch.no_grad():
        wanted = vgg(target)
    got = vgg(rendered)
    return sum(weight * (a - b).abs().mean()
               for weight, a, b in zip(PERCEPTUAL_LAYERS.values(), got, wanted))
