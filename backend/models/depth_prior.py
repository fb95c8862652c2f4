"""The depth prior: a small U-Net that reads metric depth off the photo, for a metric-scale model.

Why a second depth at all: the LaLRM sees the photo as 6×4 tokens a latent frame, and its scale is a guess
from appearance (it does not read the move's length: `benchmarks/bench_scene_scale.py --model` measures
b ≈ 0), so thin things take their background's depth and whole rooms are put too near or too far. This
net sees every pixel of the model-size photo (96×64 for `small`) with a path down to 6×4 and a global
feature, so it can judge a chair's size and a wall's slant. `generate` uses it twice: the model's Gaussians
slide along camera 0's rays so their depth there follows a blur of the prior's (backend/prior_scale.py: the
median sets the size, the blurred rest the broad shape; `DepthPriorConfig.shape_sigma`), and the
detail layer's depth is a blend of the two in log depth (backend/detail.py: detail_depth; the blend's
weight, `DepthPriorConfig.detail_weight`, was chosen on validation scenes).

Input at the photo's size: RGB in 0..1 and each pixel's ray direction (x/z, y/z from the fitted intrinsics:
the field of view, which a metric depth needs) and, for a prior with `gravity`, the ray's rise: the world's up
(+Z, cameras.md) in the camera's frame, dotted with (x/z, y/z, 1). A floor h below the camera is seen at
camera z = h / -rise, so with it the camera's pitch, which a 96×64 picture hardly shows, tells where the floor
is. A prior with `ground` is also told h, the camera's height over the ground plane (Blender's: the world's
Z = 0, where its floor grid lies and the add-on's new camera stands 1.5 m above): two more channels, the log
camera z at which each ray meets that plane and a mask of the rays that do (falling rays of a camera above it),
and a second head, trained to find the pixels that show the ground, whose answer shifts the whole depth in log
so that those pixels lie on it (ground_shift). Nothing else in a 96×64 picture sets the size as well: the
camera's height (1.0–1.8 m in the synthetic rooms) alone spans ±30 %. The shift is an explicit path because the
U-Net's GroupNorms wash a whole-picture offset such as log h out of its features. Trained with the height
withheld from a share of the frames, it also answers without it (all-zero channels: no ground, no shift).
Output: log camera z in the world's unit. Weights and config live in one safetensors file (the config in
its header), like the LaLRM.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.errors import InputError
from backend.models.weights import SingleFileModel, config_from_dict
from backend.plucker import camera_directions

PHOTO_CHANNELS = 3
MIN_FALL = 0.01                 # rays that fall less than this per unit of camera z are taken to miss the ground
INITIAL_LOG_DEPTH = 1.0         # the head's starting output, e^1 = 2.7: a room's median depth in metres
INITIAL_FLOOR_LOGIT = -1.0      # sigmoid 0.27, a room picture's share of floor, under FLOOR_SURE: a new head moves nothing
FLOOR_POWER = 4                 # the ground head's probability, sharpened: pixels it is unsure of hardly count,
FLOOR_SURE = 0.84               # and those under this not at (chosen on validation rooms, as the power)
FLOOR_PRIOR_SHARE = 0.01       # ground_shift's shrinkage, as a share of the picture's pixels
CONFIG_METADATA_KEY = "depth_prior_config"


@dataclass
class DepthPriorConfig:
    widths: tuple[int, ...] = (32, 64, 128, 128, 256)   # channels per level; each level after the first halves
    detail_weight: float = 0.25     # the prior's share of the detail layer's log depth (chosen on validation)
    gravity: bool = False           # reads each ray's rise along the world's up (+Z) too
    ground: bool = False            # and where each ray meets the ground plane (needs gravity)
    shape_sigma: float = 0.042      # the blur on the prior / model depth ratio that reshapes the model, a fraction
                                    # of the long side (backend/prior_scale.py; chosen on validation); 0: one factor

    @property
    def ray_channel_count(self) -> int:
        return 2 + self.gravity + 2 * self.ground

    def rays(self, K: Tensor, height: int, width: int, c2w: Tensor, ground_z: float | None) -> Tensor:
        """The ray_channels this prior reads, float32 on the CPU, for a camera (K [3, 3] at height × width, world
        pose c2w [4, 4]) over a ground plane at world Z = ground_z (None: none)."""
        return ray_channels(K.float().cpu(), height, width, c2w.float().cpu() if self.gravity else None, self.ground,
                            ground_z)

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        if len(self.widths) < 2 or any(not isinstance(w, int) or w < 8 or w % 8 for w in self.widths):
            raise InputError(f"depth prior config: widths {list(self.widths)}",
                             "use two or more levels of whole widths that are multiples of 8 (GroupNorm's groups)")
        if not 0.0 <= self.detail_weight <= 1.0:
            raise InputError(f"depth prior config: detail_weight {self.detail_weight}",
                             "use 0 (scale only) .. 1 (the prior's depth alone)")
        if not 0.0 <= self.shape_sigma <= 1.0:
            raise InputError(f"depth prior config: shape_sigma {self.shape_sigma}",
                             "use 0 (one factor for the whole model) .. 1 (a blur as wide as the picture)")
        if self.ground and not self.gravity:
            raise InputError(f"depth prior config: ground {self.ground} without gravity",
                             "a ray meets the ground where it falls, which needs its rise: set gravity too")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: Any) -> "DepthPriorConfig":
        return config_from_dict(cls, data, source="depth prior config")


def ray_channels(K: Tensor, height: int, width: int, c2w: Tensor | None = None, ground: bool = False,
                 ground_z: float | None = None) -> Tensor:
    """[2, height, width]: x/z and y/z of each pixel centre's ray for intrinsics K [3, 3] at that size; with the
    camera's world pose c2w [4, 4] (OpenCV), [3, height, width]: its rise along the world's +Z as well; and with
    `ground`, [5, height, width]: ground_channels for a ground plane at world Z = ground_z (None: unknown)."""
    d = camera_directions(K, height, width)
    if c2w is None:
        return d[..., :2].permute(2, 0, 1)
    rise = d @ c2w[2, :3].to(d.dtype)          # the world's up in the camera's frame is c2w's rotation's last row
    channels = [d[..., 0], d[..., 1], rise]
    if ground:
        channels += ground_channels(rise, camera_height(c2w, ground_z))
    return torch.stack(channels)


def camera_height(c2w: Tensor, ground_z: float | None) -> float | None:
    """How far a camera (world pose c2w [4, 4]) stands above a ground plane at world Z = ground_z; None when the
    ground is unknown (None) or the camera is not above it: then a ground prior is told no ground."""
    if ground_z is None:
        return None
    height = float(c2w[2, 3]) - ground_z
    return height if height > 0 else None


def ground_channels(rise: Tensor, height: float | None) -> list[Tensor]:
    """[log camera z where each ray meets a ground plane `height` below the camera, 1 where it does]: each
    [h, w], zero where the ray does not fall by MIN_FALL (the plane beyond 1 / MIN_FALL heights or behind) and
    everywhere when the height is None (camera_height: no ground)."""
    if height is None:
        return [torch.zeros_like(rise), torch.zeros_like(rise)]
    meets = rise < -MIN_FALL
    log_z = (height / (-rise).clamp_min(MIN_FALL)).log()
    return [torch.where(meets, log_z, torch.zeros_like(rise)), meets.to(rise.dtype)]


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.GroupNorm(8, channels_out), nn.SiLU(),
                         nn.Conv2d(channels_out, channels_out, 3, padding=1), nn.GroupNorm(8, channels_out), nn.SiLU())


class DepthPrior(SingleFileModel, nn.Module):
    """(photo [N, 3, H, W] in 0..1, rays [N, 2, 3 or 5, H, W]: ray_channels) -> log camera z [N, H, W] in the
    world's unit."""
    config_class, config_key = DepthPriorConfig, CONFIG_METADATA_KEY    # SingleFileModel: one .safetensors file
    kind, made_by = "depth prior", "export depth priors with `python -m backend train-depth-prior … --export DIR`"

    def __init__(self, config: DepthPriorConfig):
        super().__init__()
        self.config = config
        w = config.widths
        first = _block(PHOTO_CHANNELS + config.ray_channel_count, w[0])
        self.down = nn.ModuleList([first] + [_block(a, b) for a, b in zip(w, w[1:])])
        self.context = nn.Linear(w[-1], w[-1])          # the whole picture's feature, added at the bottom
        self.up = nn.ModuleList([_block(w[i + 1] + w[i], w[i]) for i in reversed(range(len(w) - 1))])
        self.head = nn.Conv2d(w[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, INITIAL_LOG_DEPTH)
        if config.ground:           # the ground head: the logit that a pixel shows the ground
            self.floor = nn.Conv2d(w[0], 1, 1)
            nn.init.zeros_(self.floor.weight)
            nn.init.constant_(self.floor.bias, INITIAL_FLOOR_LOGIT)

    def forward(self, photo: Tensor, rays: Tensor, with_floor: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Log camera z [N, H, W]; `with_floor` (a ground prior's training): and the ground head's logits [N, H, W]."""
        x, skips = torch.cat([photo, rays], dim=1), []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        x = x + self.context(x.mean(dim=(2, 3)))[..., None, None]
        for block, skip in zip(self.up, reversed(skips[:-1])):
            up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([up, skip], dim=1))
        log_z = self.head(x)[:, 0]
        if not self.config.ground:
            return log_z
        floor = self.floor(x)[:, 0]     # learns from its own labels only (training), not through the shift
        sure = torch.sigmoid(floor.detach())
        weight = torch.where(sure > FLOOR_SURE, sure ** FLOOR_POWER, torch.zeros_like(sure))
        log_z = log_z + ground_shift(log_z, weight, rays[:, -2], rays[:, -1])[:, None, None]
        return (log_z, floor) if with_floor else log_z


def ground_shift(log_z: Tensor, floor: Tensor, ground: Tensor, meets: Tensor) -> Tensor:
    """[N]: the log factor that puts the picture's ground where the camera's height says it is: the mean of
    ground - log_z over the pixels that meet the ground, each weighted by how surely it shows the ground
    (`floor` in 0..1: anything in front of the ground is nearer than it, so a pixel wrongly counted pushes the
    scene away; hence the sharpened probabilities, FLOOR_POWER and FLOOR_SURE), shrunk towards 0 (no change) by
    FLOOR_PRIOR_SHARE of the picture's pixels, so a picture that shows little ground, or none, or a camera told
    no ground, keeps the prior's own size."""
    weight = floor * meets
    prior = FLOOR_PRIOR_SHARE * log_z.shape[-1] * log_z.shape[-2]
    return (weight * (ground - log_z)).sum(dim=(1, 2)) / (weight.sum(dim=(1, 2)) + prior)
