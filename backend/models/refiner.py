"""The detail layer's learned refiner: a light fully-convolutional net that corrects the detail Gaussians.

The detail layer (backend/detail.py) lifts every photo pixel onto the model's upsampled, guided-filtered
depth with a fixed opacity and splat size. What that cannot know, a small CNN over the photo can: where
the model's blurry depth puts a thin object on its background, where a pixel is sky or a far wall that
the model barely saw, which splats should be bigger or fainter to blend. Per detail pixel it predicts

    log-depth residual  max_log_depth · tanh(o0)      (bounded: it corrects the model's surface, no more)
    opacity logit offset                o1            (added to the layer's fixed opacity logit)
    log-scale offset    max_log_scale · tanh(o2)      (bounded: splats between 1/4 and 4 times the default)

from 8 channels at detail size: the photo (3), the model's own render at camera 0 upsampled (3, where it
disagrees with the photo the model is off), its accumulated alpha upsampled (1, where it saw little), and
the layer's log depth minus its median (1, scale-free: the normalized frame's units vary by scene).
Why these: they are what the detail layer itself is built from, at no extra model cost.

Fully convolutional (3x3 convolutions, dilations growing 1, 2, 4, 8 for a 33-pixel receptive field at
~40k parameters), so one set of weights runs at any detail size: trained at 96 (the training data's
size), used at 512. The last convolution starts at zero, so an untrained refiner leaves the detail
layer exactly as it is without one. Weights and config live in one safetensors file (the config in its
header), like the LaLRM.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from backend.errors import InputError
from backend.models.weights import SingleFileModel, config_from_dict

INPUT_CHANNELS = 8              # photo 3 + model render 3 + model alpha 1 + centred log depth 1
OUTPUT_CHANNELS = 3             # log-depth residual, opacity logit offset, log-scale offset
CONFIG_METADATA_KEY = "refiner_config"


@dataclass
class RefinerConfig:
    width: int = 32                                 # channels of the hidden convolutions
    dilations: tuple[int, ...] = (1, 2, 4, 8)       # one 3x3 convolution each, after the input one
    max_log_depth: float = 0.5                      # depth may move by a factor e^±0.5 (0.61..1.65)
    max_log_scale: float = math.log(4.0)            # splat size may change by a factor 1/4..4

    def __post_init__(self) -> None:
        self.dilations = tuple(self.dilations)
        if self.width < 1 or not self.dilations or any(not isinstance(d, int) or d < 1 for d in self.dilations):
            raise InputError(f"refiner config: width {self.width}, dilations {list(self.dilations)}",
                             "use width >= 1 and a non-empty list of whole dilations >= 1")
        if not (self.max_log_depth > 0 and self.max_log_scale > 0):
            raise InputError(f"refiner config: max_log_depth {self.max_log_depth}, max_log_scale "
                             f"{self.max_log_scale}", "both bounds must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dilations": list(self.dilations)}

    @classmethod
    def from_dict(cls, data: Any) -> "RefinerConfig":
        return config_from_dict(cls, data, source="refiner config")


class Refiner(SingleFileModel, nn.Module):
    """features [N, INPUT_CHANNELS, H, W] -> (log-depth residual, opacity logit offset, log-scale offset),
    each [N, H, W], bounded as the module docstring says."""
    config_class, config_key = RefinerConfig, CONFIG_METADATA_KEY    # SingleFileModel: one .safetensors file
    kind, made_by = "refiner", "export refiners with `python -m backend train-refiner … --export DIR`"

    def __init__(self, config: RefinerConfig):
        super().__init__()
        self.config = config
        w = config.width
        layers: list[nn.Module] = [nn.Conv2d(INPUT_CHANNELS, w, 3, padding=1), nn.SiLU()]
        for d in config.dilations:
            layers += [nn.Conv2d(w, w, 3, padding=d, dilation=d), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        for conv in self.body[::2]:   # He init: the features keep their spread through the layers (PyTorch's
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")   # default shrinks it about 3x a layer)
            nn.init.zeros_(conv.bias)
        self.head = nn.Conv2d(w, OUTPUT_CHANNELS, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        o = self.head(self.body(features))
        c = self.config
        return c.max_log_depth * torch.tanh(o[:, 0]), o[:, 1], c.max_log_scale * torch.tanh(o[:, 2])
