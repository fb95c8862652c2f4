"""Refiner training: the detail layer's refiner (backend/models/refiner.py) learned with the LaLRM frozen.

One step, per clip of a latent cache that stores its frames (built from scene folders; with depth maps when
they had them):
1. The model folder's LaLRM (frozen, no gradients) predicts the clip's Gaussians from its latents in the
   input cameras' normalized frame, pruned like inference (ModelConfig.prune_opacity).
2. The detail layer (backend/detail.py, detail_layer) is built from frame 0, the photo at the cache's
   size (the detail size of training; the refiner is fully convolutional, so it then runs at 512), with
   the refiner's corrections: this is the function inference runs, so training and use cannot drift apart.
3. The kept model Gaussians and the detail Gaussians are rendered together at `views` frames of the
   clip: always frame 0 (the input view, where the detail layer must reproduce the photo) and `views - 1`
   others drawn at random (where wrong depth or halos show).
4. Loss: ReconstructionLoss's MSE (+ SSIM when asked) and its depth term (log-depth L1 against the cache's
   depth maps divided by the clip's normalization scale, as train-lrm does) where depth exists. Its Gaussian
   regularizers stay off: they are the LaLRM's, and the opacity one would fade the photo.

Why a command of its own (`train-refiner`) rather than `train-lrm --refiner`: a different module is trained
(the engine's model is the refiner; the LaLRM is an input, read from a model folder), from other data
(frames are needed, not only latents) and exported to another file; train-lrm's options (stages, strides,
perceptual loss) would not apply.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from backend.detail import detail_layer
from backend.errors import InputError
from backend.gaussians import Gaussians
from backend.models.config import ModelConfig
from backend.models.lalrm import LaLRM
from backend.models.model_dir import LALRM_FILE, initial_part, load_vae, read_config, write_part
from backend.models.refiner import Refiner, RefinerConfig
from backend.render import check_training_renderer, render
from backend.training.engine import Trainer, TrainConfig
from backend.training.losses import LossWeights, ReconstructionLoss
from backend.training.train_lrm import clip_cameras, depth_term_inputs

log = logging.getLogger(__name__)


@dataclass
class RefinerRun:
    """Everything `python -m backend train-refiner` decides (the command fills it from its options)."""
    train: TrainConfig
    model: str                                  # model folder whose LaLRM (frozen) and VAE are used
    latent_cache: list[str]
    refiner: RefinerConfig = dataclasses.field(default_factory=RefinerConfig)
    weights: LossWeights = dataclasses.field(default_factory=lambda: LossWeights(perceptual=0, scale=0, opacity=0))
    views: int = 4                              # rendered per clip and step, frame 0 among them
    renderer: str = "auto"
    init: str | None = None                     # a refiner .safetensors or a model folder with one
    resume: bool = False
    export: str | None = None

    def __post_init__(self) -> None:
        if self.views < 1:
            raise InputError(f"--views {self.views}: at least the input view is rendered", "use --views 1 or more")
        check_training_renderer(self.renderer)
        if self.weights.perceptual or self.weights.scale or self.weights.opacity:
            raise InputError("the refiner trains on MSE, SSIM and depth only",
                             "leave the perceptual, scale and opacity weights at 0")


class RefinerObjective:
    """The engine's step function (module docstring)."""

    def __init__(self, lalrm: LaLRM, config: ModelConfig, loss: ReconstructionLoss, views: int, renderer: str):
        self.lalrm, self.config, self.loss, self.views, self.renderer = lalrm, config, loss, views, renderer

    def clip_gaussians(self, refiner: nn.Module, batch: dict, b: int):
        """(model + detail Gaussians, all clip cameras, normalization) of clip b, normalized frame."""
        frames = batch["frames"][b]
        height, width = frames.shape[-2:]
        inputs, cams, norm = clip_cameras(batch["K"][b], batch["c2w"][b], int(width), int(height),
                                          list(range(frames.shape[0])), self.config.lalrm_by_path)
        with torch.no_grad():
            local = self.lalrm.predict_gaussians(batch["latents"][b], inputs, prune_opacity=self.config.prune_opacity,
                                                 max_count=self.config.max_gaussians)
        # the detail layer is built on the CPU (its photo moved there too, the frames may be on CUDA); so is keep
        detail, keep, _ = detail_layer(local, frames[0].permute(1, 2, 0).float().cpu(), inputs[0], refiner)
        return Gaussians.cat([local.to("cpu")[keep.cpu()], detail.to("cpu")]), cams, norm

    def __call__(self, model: nn.Module, batch: dict, stage: dict) -> dict[str, Tensor]:
        total: dict[str, Tensor] = {}
        count = batch["latents"].shape[0]
        for b in range(count):
            g, cams, norm = self.clip_gaussians(model, batch, b)
            available = batch["frames"].shape[1]
            others = (torch.randperm(available - 1)[:self.views - 1] + 1).sort().values
            views = torch.cat([torch.zeros(1, dtype=torch.long), others])
            target = batch["frames"][b, views].float()
            device = target.device
            out = render(g.to(device), cams[views.tolist()].to(device), backend=self.renderer)
            depth = depth_term_inputs(out, batch["depth"][b, views], norm) \
                if "depth" in batch and self.loss.weights.depth > 0 else None
            for name, value in self.loss(out.rgb.permute(0, 3, 1, 2), target, None, depth).items():
                total[name] = total.get(name, 0) + value / count
        return total


def frozen_lalrm(model_dir: Path) -> tuple[LaLRM, ModelConfig]:
    """The model folder's LaLRM without gradients, and its config (pruning, size)."""
    if not (model_dir / LALRM_FILE).is_file():
        raise InputError(f"--model {model_dir} holds no {LALRM_FILE}",
                         "give a model folder with a trained LaLRM, e.g. backend/weights/default")
    lalrm = LaLRM.from_pretrained(model_dir / LALRM_FILE).requires_grad_(False)
    return lalrm, read_config(model_dir)


def cache_datasets(paths: list[str], vae, num_frames: int):
    """The latent caches, each checked to store frames (the detail layer's photo and the targets)."""
    from backend.data.latent_cache import latent_caches
    caches = latent_caches(paths, vae=vae, num_frames=num_frames)   # all yield depth (zeros: none), or none
    for path, data in zip(paths, caches.datasets):
        if not data.signature.get("frames_stored"):
            raise InputError(f"latent cache {path} stores no frames, and the refiner needs them (photo, targets)",
                             "use a cache built from scene folders by train-lrm --latent-cache (frames are stored)")
    return caches


def train_refiner(run: RefinerRun) -> dict:
    """Train (or resume) a refiner run; returns {"steps", "loss", "val"} of the end of training."""
    from backend.data import collate
    model_dir = Path(run.model)
    lalrm, config = frozen_lalrm(model_dir)
    data = cache_datasets(run.latent_cache, load_vae(model_dir), config.frames)
    if run.weights.depth > 0 and not any(d.signature.get("depth_stored") for d in data.datasets):
        log.warning("--depth-weight %g, but no latent cache stores depth maps: the depth term adds nothing",
                    run.weights.depth)
    trainer = Trainer(run.train, lambda: initial_part("refiner", run.refiner, run.init),
                      run_info={"command": "train-refiner", "model": str(model_dir), "refiner": run.refiner.to_dict(),
                                "latent_cache": run.latent_cache, "init": run.init,
                                "loss": dataclasses.asdict(run.weights), "views": run.views})
    if run.resume and trainer.resume():
        log.info("resumed from step %d", trainer.step)
    lalrm.to(trainer.device)
    objective = RefinerObjective(lalrm, config, ReconstructionLoss(run.weights), run.views, run.renderer)
    trainer.fit(data, objective, collate_fn=collate)
    if run.export:
        trainer.export(Refiner(run.refiner), lambda refiner: write_part(run.export, "refiner", refiner))
    trainer.end()
    return trainer.summary()
