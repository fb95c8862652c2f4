"""LaLRM training (paper.md, "Reconstruction stage"): video latents + cameras -> Gaussians -> renders vs frames.

One step, per clip of the batch:
1. Latents of the clip's input video: from latent caches (fixed clips: the VAE's, and optionally the
   video model's samples of the same clips, backend/data/generated_latents.py), or the frozen VAE
   encodes the frames on the fly (random clips and crops) under no_grad. Latents are scaled like the
   sampler's. `--init` starts from trained weights (fine-tuning on generated latents).
2. The input cameras are normalized with backend.cameras.normalize (camera 0 = identity, largest camera
   distance = 1; with `scene_scale` "metric" the world's unit is kept), the rule inference uses for a model
   folder of that scene_scale; every other frame of the clip goes through the same map.
3. The LaLRM predicts one Gaussian per output pixel per input frame (normalized frame).
4. `views` supervision frames are drawn from the whole clip and rendered (backend.render.render) at the
   stage's render size; the targets are the ground-truth frames at that size.
5. With a depth weight and clips that carry depth maps (scene folders with depth/, and latent caches built
   from them), the rendered depth of the same views is compared with the maps (losses.py, the depth term):
   the maps are in the scene's world units, so they are divided by the clip's normalization scale s
   (backend.cameras.normalize), the map that also shrinks the cameras; silhouettes are already masked
   (backend/data/depth.py). Clips without depth (all 0) add nothing to the term.

Input vs supervision frames: with `input_stride` s and `extra_frames` e, clips are read with
(F − 1)·s + 1 + e frames; frames 0, s, …, (F − 1)·s are the input video and supervision is drawn from
all of them, so with s > 1 or e > 0 it includes views between and beyond the input cameras. With a
latent cache (whose clips are exactly the F input frames) s = 1 and e = 0.

Progressive resolution: `TrainConfig.stages` lists {"steps", "height", "width"[, "render_height",
"render_width"]}. The LaLRM's weights do not depend on the pixel size (no positional embeddings: the
Plücker tokens say where each token is), so each stage uses the same model with the config's
height/width set to the stage's. The paper's 240×360 first stage becomes 256×384 here: 240×360 gives a
30×45 latent grid that the latent patch 2 does not divide (LaLRMConfig.paper_low_res). The paper recipe:
stages [[200000, 256, 384], [100000, 480, 720]], lr 4e-4 → 1e-5 (cosine), AdamW (0.9, 0.95), wd 1e-4, bf16.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.cameras import CameraBatch, Normalization, normalize
from backend.data.depth import resize_depth
from backend.data.scenes import DataOptions
from backend.errors import InputError
from backend.models.config import SCENE_SCALES, normalizes_by_path
from backend.models.lalrm import LaLRM, LaLRMConfig
from backend.models.model_dir import load_vae, write_vae_if_missing
from backend.models.weights import named_or_file_config
from backend.plucker import plucker_embedding
from backend.render import RenderOutput, check_training_renderer, render
from backend.training.engine import Trainer, TrainConfig, image_validator
from backend.training.losses import LossWeights, ReconstructionLoss

log = logging.getLogger(__name__)


@dataclass
class LRMData:
    """How clips become model inputs and supervision (module docstring)."""
    views: int = 4                     # supervision views per clip and step
    input_stride: int = 1
    extra_frames: int = 0
    render_height: int | None = None   # default: the stage's (or model's) pixel size
    render_width: int | None = None
    renderer: str = "auto"             # backend.render's backend for the supervision renders
    scene_scale: str = "path"          # the LaLRM's frame (backend.models.config.SCENE_SCALES)

    def __post_init__(self) -> None:
        if self.views < 1 or self.input_stride < 1 or self.extra_frames < 0:
            raise InputError(f"views {self.views}, input stride {self.input_stride}, extra frames "
                             f"{self.extra_frames}", "use views >= 1, input stride >= 1, extra frames >= 0")
        if self.scene_scale not in SCENE_SCALES:
            raise InputError(f"scene scale {self.scene_scale!r} is unknown", f"use one of {', '.join(SCENE_SCALES)}")
        check_training_renderer(self.renderer)

    def clip_frames(self, num_frames: int) -> int:
        return (num_frames - 1) * self.input_stride + 1 + self.extra_frames

    def input_index(self, num_frames: int) -> list[int]:
        return list(range(0, (num_frames - 1) * self.input_stride + 1, self.input_stride))


def stage_config(base: LaLRMConfig, stage: dict) -> LaLRMConfig:
    """The model config at a stage's pixel size (same weights shapes)."""
    if "height" not in stage and "width" not in stage:
        return base
    return dataclasses.replace(base, height=int(stage.get("height", base.height)),
                               width=int(stage.get("width", base.width)))


def render_size(config: LaLRMConfig, stage: dict, data: LRMData) -> tuple[int, int]:
    """(height, width) supervision renders use in a stage."""
    return (int(stage.get("render_height", data.render_height or config.height)),
            int(stage.get("render_width", data.render_width or config.width)))


def clip_cameras(K: Tensor, c2w: Tensor, width: int, height: int, input_index: list[int], by_path: bool = True
                 ) -> tuple[CameraBatch, CameraBatch, Normalization]:
    """(input cameras, all clip cameras, the normalization), the cameras in the input cameras' normalized
    frame (inference's rule; `by_path` as normalize's); world lengths (depth maps) divide by its scale."""
    inputs, norm = normalize(CameraBatch(K[input_index], c2w[input_index], width, height), by_path=by_path)
    return inputs, norm.cameras_to_normalized(CameraBatch(K, c2w.detach(), width, height)), norm


def depth_term_inputs(out: RenderOutput, depth: Tensor, norm: Normalization) -> tuple[Tensor, Tensor, Tensor]:
    """(rendered depth, alpha, target) of the rendered views for ReconstructionLoss's depth term: their depth
    maps [V, H, W] (world units, 0 = invalid) at the render's size, in the normalized frame."""
    h, w = out.depth.shape[1:3]
    truth = resize_depth(depth, h, w) / norm.scale
    return out.depth[..., 0], out.alpha[..., 0], truth.to(out.depth.device)


def predict_clip_gaussians(forward, lalrm: LaLRM, config: LaLRMConfig, latents: Tensor,
                           input_cams: list[CameraBatch]) -> list:
    """The Gaussians of each clip of a batch (float32, normalized frame). `forward(latents, plucker)` is
    the (possibly DDP-wrapped or autocast) model call; `lalrm` the plain module that places Gaussians."""
    plucker = torch.stack([plucker_embedding(c, config.height, config.width) for c in input_cams])
    raw = forward(latents, plucker).float()                           # [B, F, h, w, 12]
    return [lalrm.raw_to_gaussians(raw[b], cams) for b, cams in enumerate(input_cams)]


def resize_frames(frames: Tensor, height: int, width: int) -> Tensor:
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    return F.interpolate(frames, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


class LaLRMObjective:
    """The engine's step function for LaLRM (module docstring); also renders for validation."""

    def __init__(self, lalrm: LaLRM, loss: ReconstructionLoss, data: LRMData, vae=None):
        self.lalrm = lalrm                     # the unwrapped module: its config follows the stage
        self.base = lalrm.config
        self.loss = loss
        self.data = data
        self.vae = vae

    def _inputs(self, batch: dict, stage: dict):
        config = stage_config(self.base, stage)
        self.lalrm.config = config
        F_in = config.num_frames
        index = self.data.input_index(F_in)
        if "latents" in batch:
            latents = batch["latents"]
        else:
            if self.vae is None:
                raise InputError("clips without latents need a VAE", "pass --vae DIR or --latent-cache PATH")
            from backend.data.latent_cache import encode_video
            with torch.no_grad():
                latents = encode_video(self.vae, batch["frames"][:, index]).float()
        if tuple(latents.shape[1:]) != config.latent_shape:
            raise InputError(f"latents of shape {tuple(latents.shape[1:])} do not fit the LaLRM at "
                             f"{config.height}×{config.width} (expects {config.latent_shape})",
                             "build the latent cache at the model's frame count and pixel size")
        height, width = batch["frames"].shape[-2:]
        cams = [clip_cameras(batch["K"][b], batch["c2w"][b], int(width), int(height), index,
                             normalizes_by_path(self.data.scene_scale))
                for b in range(latents.shape[0])]
        return config, latents, cams

    def __call__(self, model: nn.Module, batch: dict, stage: dict) -> dict[str, Tensor]:
        config, latents, cams = self._inputs(batch, stage)
        rh, rw = render_size(config, stage, self.data)
        gaussians = predict_clip_gaussians(model, self.lalrm, config, latents, [c[0] for c in cams])
        total: dict[str, Tensor] = {}
        for b, g in enumerate(gaussians):
            available = batch["frames"].shape[1]
            views = torch.randperm(available)[:self.data.views].sort().values
            target = resize_frames(batch["frames"][b, views].float(), rh, rw)
            out = render(g, cams[b][1][views.tolist()], width=rw, height=rh, backend=self.data.renderer)
            depth = depth_term_inputs(out, batch["depth"][b, views], cams[b][2]) \
                if "depth" in batch and self.loss.weights.depth > 0 else None
            for name, value in self.loss(out.rgb.permute(0, 3, 1, 2), target, g, depth).items():
                total[name] = total.get(name, 0) + value / len(gaussians)
        return total

    @torch.no_grad()
    def render_clip(self, item_batch: dict, stage: dict, model=None) -> tuple[Tensor, Tensor]:
        """(renders, targets) [V, 3, H, W] of one clip's held-out frames (all frames when none are).
        `model(latents, plucker)` defaults to the LaLRM itself (e.g. pass one that runs under autocast)."""
        config, latents, cams = self._inputs(item_batch, stage)
        rh, rw = render_size(config, stage, self.data)
        g = predict_clip_gaussians(model or self.lalrm, self.lalrm, config, latents, [cams[0][0]])[0]
        held_out = sorted(set(range(item_batch["frames"].shape[1])) - set(self.data.input_index(config.num_frames)))
        views = held_out or list(range(item_batch["frames"].shape[1]))
        rgb = render(g, cams[0][1][views], width=rw, height=rh, backend=self.data.renderer).rgb.permute(0, 3, 1, 2)
        return rgb.clamp(0, 1), resize_frames(item_batch["frames"][0, views].float(), rh, rw)


def make_validator(objective: LaLRMObjective, dataset, max_clips: int, collate_fn, stage: dict):
    """validate_fn for the engine: PSNR/SSIM over up to max_clips held-out clips (at `stage`'s size, the
    size the model is exported at), split over ranks."""

    def images(trainer: Trainer, batch: dict) -> tuple[Tensor, Tensor]:
        def forward(latents: Tensor, plucker: Tensor) -> Tensor:
            with trainer.accelerator.autocast():  # the model only: renders and metrics stay float32, as in training
                return objective.lalrm(latents, plucker)

        return objective.render_clip(batch, stage, model=forward)

    return image_validator(objective.lalrm, dataset, max_clips, collate_fn, images, "val/render_vs_target")


def final_config(base: LaLRMConfig, config: TrainConfig) -> LaLRMConfig:
    """The exported model's config: the last stage's pixel size (the resolution it ends training at)."""
    return stage_config(base, config.stages[-1]) if config.stages else base


def export_lalrm(trainer: Trainer, base: LaLRMConfig, directory: str | Path, vae=None,
                 scene_scale: str = "path") -> LaLRM:
    """write_lalrm(directory) with the trained (EMA when on) weights and the frame it was trained in, and
    write_vae when the folder has no VAE yet, so `generate --model directory` finds everything once the video
    part is there. All ranks call it."""
    from backend.models.model_dir import write_lalrm

    def write(lalrm: LaLRM) -> None:
        write_lalrm(directory, lalrm, scene_scale)
        write_vae_if_missing(directory, vae)
    return trainer.export(LaLRM(final_config(base, trainer.config)), write)


# The command's pieces ------------------------------------------------------------------------------------
def _paired_lalrm(name: str):
    """The LaLRM of a named ModelConfig: it reads that config's video latents (tiny's have 4 channels)."""
    def make() -> LaLRMConfig:
        from backend.models.config import NAMED_CONFIGS
        return NAMED_CONFIGS[name]().lalrm
    return make


NAMED_LALRM = {"tiny": _paired_lalrm("tiny"), "small": _paired_lalrm("small"), "paper": LaLRMConfig.paper,
               "paper_low_res": LaLRMConfig.paper_low_res}


def lalrm_config(name: str) -> LaLRMConfig:
    """A named LaLRM config (tiny, small, paper, paper_low_res) or a JSON file of LaLRMConfig fields."""
    return named_or_file_config(name, NAMED_LALRM, LaLRMConfig)


def initial_lalrm(config: LaLRMConfig, init: str | None, gradient_checkpointing: bool = False) -> LaLRM:
    """A fresh LaLRM of `config`, with the weights of `init` (a model folder or a LaLRM safetensors) when given."""
    from backend.models.model_dir import LALRM_FILE
    from backend.models.weights import load_into, load_state_dict
    lalrm = LaLRM(config, gradient_checkpointing=gradient_checkpointing)
    if init is None:
        return lalrm
    path = Path(init)
    path = path / LALRM_FILE if path.is_dir() else path
    state = load_state_dict(path)  # a missing or unreadable file is its own InputError
    try:
        load_into(lalrm, state)
    except InputError as e:  # its message names the tensor; the hint is --init's own
        raise InputError(f"--init {path}: {e.message}", "start from weights of --model-config's LaLRM (e.g. "
                         "--model-config small for the shipped default)") from None
    return lalrm


@dataclass
class LRMRun:
    """Everything `python -m backend train-lrm` decides (the command fills it from its options)."""
    train: TrainConfig
    model: LaLRMConfig
    data: LRMData
    weights: LossWeights
    scenes: DataOptions = dataclasses.field(default_factory=DataOptions)
    vae: str | None = None
    latent_cache: list[str] | None = None   # the first is built from the data when missing
    init: str | None = None                 # a model folder or LaLRM safetensors to start from
    vgg19: str | None = None
    resume: bool = False
    export: str | None = None


def train_lrm(run: LRMRun) -> dict:
    """Train (or resume) a LaLRM run; returns {"steps", "loss", "val": {...}} of the end of training."""
    from backend.data import collate
    from backend.training.losses import load_vgg19
    cfg, model_cfg, data = run.train, run.model, run.data
    vgg = load_vgg19(run.vgg19) if run.weights.perceptual > 0 else None   # refuse early, before any data
    loss = ReconstructionLoss(run.weights, vgg)
    vae = load_vae(run.vae) if run.vae else None
    if vae is not None and int(vae.config.latent_channels) != model_cfg.latent_channels:
        raise InputError(f"the VAE makes {vae.config.latent_channels}-channel latents, the LaLRM config reads "
                         f"{model_cfg.latent_channels}", "use the VAE the model's video part was trained with")
    if not run.scenes.roots and not run.latent_cache:
        raise InputError("no training data", "pass --data ROOT... (and --vae DIR), or --latent-cache PATH")
    if not run.latent_cache and vae is None:
        raise InputError("training from frames needs the VAE that makes the video model's latents",
                         "pass --vae DIR (a model folder with vae/ or a diffusers VAE folder), or --latent-cache")
    train_scenes, val_scenes = run.scenes.split(cfg.seed, "LaLRM training")
    final = final_config(model_cfg, cfg)
    clip_frames = data.clip_frames(model_cfg.num_frames)

    trainer = Trainer(cfg, lambda: initial_lalrm(model_cfg, run.init, cfg.gradient_checkpointing),
                      run_info={"command": "train-lrm", "lalrm": model_cfg.to_dict(), "init": run.init,
                                "data": [str(r) for r in run.scenes.roots], "latent_cache": run.latent_cache,
                                "vae": run.vae, "loss": dataclasses.asdict(run.weights),
                                "lrm_data": dataclasses.asdict(data)})
    if run.latent_cache:
        from backend.data.latent_cache import build_latent_cache, latent_caches
        if data.input_stride != 1 or data.extra_frames or (cfg.stages and len({(s.get("height"), s.get("width"))
                                                                             for s in cfg.stages}) > 1):
            raise InputError("a latent cache holds fixed clips of the input frames at one size",
                             "use --input-stride 1 --extra-frames 0 and one stage size with --latent-cache")
        caches = [Path(p) for p in run.latent_cache]
        cache = caches[0]
        if not (cache / "cache.json").is_file() and train_scenes and vae is not None:
            size = stage_config(model_cfg, cfg.stages[0] if cfg.stages else {})
            if trainer.is_main:
                build_latent_cache(vae, run.scenes.cache_clips(train_scenes, model_cfg.num_frames, size.height,
                                                               size.width, cfg.seed), cache, seed=cfg.seed)
            trainer.accelerator.wait_for_everyone()
        cached = latent_caches(caches, vae=vae, num_frames=model_cfg.num_frames)   # all yield depth, or none
        has_depth = any(d.signature.get("depth_stored") for d in cached.datasets)

        def train_data(index, stage):
            return cached
    else:
        def train_data(index, stage):
            size = stage_config(model_cfg, stage)
            return run.scenes.training_clips(train_scenes, clip_frames, size.height, size.width, cfg.seed)
        has_depth = any(s.depth is not None for s in train_scenes)
    if run.weights.depth > 0 and not has_depth:
        log.warning("--depth-weight %g, but no training clip has depth maps (scene folders' depth/, latent caches "
                    "built from them): the depth term adds nothing", run.weights.depth)

    if run.resume and trainer.resume():
        log.info("resumed from step %d", trainer.step)
    loss.to(trainer.device)
    if vae is not None:
        vae.to(trainer.device, torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float32)
    objective = LaLRMObjective(trainer.unwrapped_model, loss, data, vae)
    validate = None
    if val_scenes:
        val_set = run.scenes.validation_clips(val_scenes, clip_frames, final.height, final.width, cfg.seed)
        validate = make_validator(objective, val_set, run.scenes.val_clips, collate,
                                  cfg.stages[-1] if cfg.stages else {})
    trainer.fit(train_data, objective, collate_fn=collate, validate_fn=validate)
    if run.export:
        export_lalrm(trainer, model_cfg, run.export, vae, data.scene_scale)
    trainer.end()
    return trainer.summary()
