"""Depth prior training (backend/models/depth_prior.py): single frames of scene folders with depth maps.

One step: `batch_size` frames, each a random frame of a training scene with a random crop (DataOptions'
crop scale) resized to the model's size, flipped left-right at random (the rays' x flipped and negated
with it: the mirrored camera). Loss: L1 of log depth where the map shows a surface away from silhouettes
(backend/data/depth.py), the mean over those pixels. A prior that reads the ground is not told it in
GROUND_WITHHELD of the frames, and its ground head learns, by cross-entropy (FLOOR_WEIGHT), which pixels show
the ground (ground_labels: the truth's depth is the ground's there). Depth maps are camera z in the world's unit (metres
for tools/synthetic_scenes.py), so the prior learns metres; scenes without depth/ are left out.

Validation: the held-out scenes' frame 0 uncropped (what generate gives the prior: the input view), the same
L1 and the median scale error |log(median prior / median truth)|, the number `generate` scales the model by.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.data import collate
from backend.data.scenes import DataOptions, Scene
from backend.errors import InputError
from backend.models.depth_prior import DepthPrior, DepthPriorConfig
from backend.models.model_dir import CONFIG_FILE, initial_part, read_config, write_part
from backend.training.engine import Trainer, TrainConfig

log = logging.getLogger(__name__)

SYNTHETIC_GROUND_Z = 0.0    # tools/synthetic_scenes.py stands every room's floor and yard on the world's Z = 0
GROUND_WITHHELD = 0.25      # the share of frames a ground-reading prior trains without the ground (it may be unknown)
GROUND_TOLERANCE = 0.05     # a pixel whose true log depth is this close to its ray's ground depth shows the ground
FLOOR_WEIGHT = 0.1          # the ground head's cross-entropy beside the log-depth L1


@dataclass
class DepthPriorRun:
    """Everything `python -m backend train-depth-prior` decides (the command fills it from its options)."""
    train: TrainConfig
    scenes: DataOptions
    size: tuple[int, int] = (96, 64)            # (width, height) it trains at: the model's
    prior: DepthPriorConfig = dataclasses.field(default_factory=DepthPriorConfig)
    frames_per_scene: int = 9                   # random frames drawn from each scene per epoch
    init: str | None = None                     # a depth prior .safetensors or a model folder with one
    resume: bool = False
    export: str | None = None

    def __post_init__(self) -> None:
        if self.frames_per_scene < 1:
            raise InputError(f"--frames-per-scene {self.frames_per_scene}", "use 1 or more")
        if min(self.size) < 2 ** (len(self.prior.widths) - 1):
            raise InputError(f"--size {self.size[0]}x{self.size[1]} is smaller than the prior's "
                             f"{len(self.prior.widths) - 1} halvings allow",
                             "train at the model's size (96x64 for `small`)")
        if self.export:
            check_export(Path(self.export))


def check_export(folder: Path) -> None:
    """A depth prior gives metres: refuse, before training, to export it into a path-scale model folder."""
    if not (folder / CONFIG_FILE).is_file():
        return
    scene_scale = read_config(folder).scene_scale
    if scene_scale != "metric":
        raise InputError(f"--export {folder}: its LaLRM reads cameras normalized by the move (scene_scale "
                         f"{scene_scale!r}), and a depth prior's metres would not fit it",
                         "export into a metric-scale model folder (train-lrm --scene-scale metric)")


def batch_inputs(batch: dict, config: DepthPriorConfig, withheld: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """(photo [N, 3, H, W], rays [N, C, H, W]: ray_channels for `config`, depth [N, H, W]; 0 = no valid depth) of
    a batch of 1-frame clips. A ground-reading prior is told the ground at SYNTHETIC_GROUND_Z, except in the
    frames `withheld` [N] (bool) marks."""
    photo, depth, K, c2w = batch["frames"][:, 0], batch["depth"][:, 0], batch["K"][:, 0], batch["c2w"][:, 0]
    height, width = photo.shape[-2:]
    withheld = torch.zeros(len(K), dtype=torch.bool) if withheld is None else withheld
    rays = torch.stack([config.rays(k, height, width, pose, None if hide else SYNTHETIC_GROUND_Z)
                        for k, pose, hide in zip(K, c2w, withheld.tolist())]).to(photo.device)
    return photo, rays, depth


def log_depth_l1(log_z: Tensor, depth: Tensor) -> Tensor:
    """Mean |log_z - log depth| over the pixels with valid depth (> 0)."""
    valid = depth > 0
    return ((log_z - depth.clamp_min(1e-6).log()).abs() * valid).sum() / valid.sum().clamp_min(1)


@dataclass
class DepthPriorObjective:
    """The engine's step function (module docstring). A mirrored camera sees the world's up mirrored too, so
    the rise channel only flips with the picture (and the ground channels, which follow from it)."""
    config: DepthPriorConfig

    def __call__(self, model: nn.Module, batch: dict, stage: dict) -> dict[str, Tensor]:
        withheld = torch.rand(batch["frames"].shape[0]) < GROUND_WITHHELD
        photo, rays, depth = batch_inputs(batch, self.config, withheld)
        flip = torch.rand(photo.shape[0]) < 0.5
        if bool(flip.any()):
            photo, rays, depth = photo.clone(), rays.clone(), depth.clone()
            photo[flip], depth[flip] = photo[flip].flip(-1), depth[flip].flip(-1)
            mirror = torch.ones(rays.shape[1], device=rays.device)
            mirror[0] = -1.0
            rays[flip] = rays[flip].flip(-1) * mirror[:, None, None]
        if not self.config.ground:
            return {"loss": log_depth_l1(model(photo, rays), depth)}
        log_z, floor = model(photo, rays, with_floor=True)
        depth_loss, floor_loss = log_depth_l1(log_z, depth), ground_loss(floor, rays, depth)
        return {"loss": depth_loss + FLOOR_WEIGHT * floor_loss, "depth": depth_loss.detach(), "floor": floor_loss.detach()}


def ground_labels(rays: Tensor, depth: Tensor) -> tuple[Tensor, Tensor]:
    """(1 where the truth lies on the ground within GROUND_TOLERANCE in log depth, else 0; the pixels that count:
    rays that meet a told ground, with valid depth), each [N, H, W]."""
    counted = (rays[:, -1] > 0) & (depth > 0)
    on_ground = (depth.clamp_min(1e-6).log() - rays[:, -2]).abs() < GROUND_TOLERANCE
    return (on_ground & counted).to(depth.dtype), counted


def ground_loss(floor_logits: Tensor, rays: Tensor, depth: Tensor) -> Tensor:
    """Binary cross-entropy of the ground head against ground_labels, the mean over the counted pixels."""
    labels, counted = ground_labels(rays, depth)
    bce = F.binary_cross_entropy_with_logits(floor_logits, labels, reduction="none")
    return (bce * counted).sum() / counted.sum().clamp_min(1)


def depth_validator(module: DepthPrior, dataset, max_items: int):
    """validate_fn for the engine: mean log-depth L1 and median scale error over up to max_items frames."""
    def validate(trainer: Trainer) -> dict[str, float]:
        was_training = module.training
        module.eval()
        l1, scale, count = 0.0, 0.0, 0
        with torch.no_grad():
            for i in range(min(max_items, len(dataset))):
                photo, rays, depth = batch_inputs(collate([dataset[i]]), module.config)
                valid = depth > 0
                if not bool(valid.any()):
                    continue
                log_z = module(photo.to(trainer.device), rays.to(trainer.device)).cpu()
                l1 += float(log_depth_l1(log_z, depth))
                scale += abs(float(log_z[valid].median() - depth[valid].log().median()))
                count += 1
        module.train(was_training)
        return {"log_l1": l1 / max(count, 1), "scale_error": scale / max(count, 1)}
    return validate


def with_depth(scenes: list[Scene], what: str) -> list[Scene]:
    kept = [s for s in scenes if s.depth is not None]
    if len(kept) < len(scenes):
        log.info("%d of the %s scenes have no depth maps and are left out", len(scenes) - len(kept), what)
    return kept


def train_depth_prior(run: DepthPriorRun) -> dict:
    """Train (or resume) a depth prior run; returns {"steps", "loss", "val"} of the end of training."""
    train_scenes, val_scenes = run.scenes.split(run.train.seed, "depth prior training")
    train_scenes, val_scenes = with_depth(train_scenes, "training"), with_depth(val_scenes, "validation")
    if not train_scenes:
        raise InputError("none of the training scenes has depth maps (depth/0000.npy ...)",
                         "render scenes with depth: tools/synthetic_scenes.py writes them")
    width, height = run.size
    data = run.scenes.training_clips(train_scenes, 1, height, width, run.train.seed, run.frames_per_scene)
    trainer = Trainer(run.train, lambda: initial_part("depth_prior", run.prior, run.init),
                      run_info={"command": "train-depth-prior", "depth_prior": run.prior.to_dict(),
                                "data": [str(r) for r in run.scenes.roots], "size": list(run.size),
                                "frames_per_scene": run.frames_per_scene, "init": run.init})
    if run.resume and trainer.resume():
        log.info("resumed from step %d", trainer.step)
    validate = None
    if val_scenes:
        val_set = run.scenes.validation_clips(val_scenes, 1, height, width, run.train.seed)
        validate = depth_validator(trainer.unwrapped_model, val_set, run.scenes.val_clips)
    trainer.fit(data, DepthPriorObjective(run.prior), collate_fn=collate, validate_fn=validate)
    if run.export:
        trainer.export(DepthPrior(run.prior), lambda prior: write_part(run.export, "depth_prior", prior))
    trainer.end()
    return trainer.summary()
