"""Camera-controlled video diffusion training (paper.md, "Video stage"), on the shared engine.

What trains. Paper scale: the CogVideoX-5B-I2V base (`--base DIR`, diffusers' layout) is frozen and only
`CameraControlledTransformer.camera_parameters()` learn: the ControlNet copy of the first K blocks (it
starts as a copy of the pretrained blocks), its zero linears, the camera patch embeddings, the LoRA
camera projection and the LoRA adapters. Small configs (`--train-base`) train the whole model from
scratch, base included; a frozen random base would teach the camera branches nothing, so that is refused.

One step (backend.training.diffusion): clips -> VAE latents under no_grad (or the latent cache) ->
frame 0 encoded with the I2V noise augmentation -> normalized cameras -> Plücker at the latent grid ->
condition dropout -> x_t at a uniform timestep -> the scheduler's prediction type's target (v for the
paper scheduler) -> MSE. The paper recipe: 40K steps, lr 2e-5, RealEstate10K + ACID + DL3DV.

Validation: the same loss on held-out clips at fixed timesteps (10%, 30%, ..., 90% of the training
timesteps) with fixed noise (seeded by the run seed and the clip), the clean image condition and no
dropout, so runs and checkpoints compare on equal terms.

Export (`--export DIR`): write_video (the base in diffusers' layout, the camera branches, the
scheduler, the config in wonderland.json), and write_vae when the folder has no VAE yet, so
`generate --model DIR` finds everything once the LaLRM is there (train-lrm --export DIR).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel
from torch import Tensor, nn

from backend.data.scenes import DataOptions
from backend.errors import InputError
from backend.models.video import CameraControlledTransformer, VideoModelConfig, build_scheduler
from backend.models.weights import named_or_file_config
from backend.pipelines.camera_i2v import load_prompt_embeds
from backend.training.diffusion import diffusion_loss, drop_conditions, prepare_batch
from backend.training.engine import Trainer, TrainConfig

log = logging.getLogger(__name__)

NAMED_VIDEO = {"tiny": VideoModelConfig.tiny, "small": VideoModelConfig.small, "paper": VideoModelConfig.paper}
VALIDATION_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def video_model_config(name: str) -> VideoModelConfig:
    """A named video model config (tiny, small, paper) or a JSON file of VideoModelConfig fields."""
    return named_or_file_config(name, NAMED_VIDEO, VideoModelConfig)


def _find_folder(directory: Path, part: str) -> Path | None:
    """directory/part of a model or diffusers folder, following wonderland.json's base_model."""
    from backend.models.model_dir import base_folder
    for folder in (directory, base_folder(directory)):
        if (folder / part / "config.json").is_file():
            return folder / part
    return None


def load_base(directory: str | Path) -> CogVideoXTransformer3DModel:
    """The base transformer of a diffusers CogVideoX-I2V folder or of a model folder (float32)."""
    directory = Path(directory)
    folder = _find_folder(directory, "transformer")
    if folder is None:
        raise InputError(f"{directory} holds no base transformer (no transformer/config.json)",
                         "point --base at a local CogVideoX-5b-I2V folder in diffusers' layout, or at a model folder")
    try:
        return CogVideoXTransformer3DModel.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                                           torch_dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load the base transformer from {folder}: {e}",
                         "the folder needs config.json and .safetensors weights in diffusers' layout") from e


def find_vae(vae: str | None, base: str | None) -> AutoencoderKLCogVideoX | None:
    """The frozen VAE from --vae (a model folder with vae/ or a diffusers VAE folder), else from --base."""
    from backend.models.model_dir import load_vae
    if vae is not None:
        return load_vae(vae)
    if base is not None:
        folder = _find_folder(Path(base), "vae")
        return load_vae(folder) if folder is not None else None
    return None


def build_transformer(config: VideoModelConfig, base: CogVideoXTransformer3DModel | None, train_base: bool,
                      gradient_checkpointing: bool = False) -> CameraControlledTransformer:
    """The model to train: camera branches around `base` (random when None), float32; the base frozen
    unless `train_base`."""
    model = CameraControlledTransformer(config, base=base).float()
    for p in model.base_parameters():   # set both ways: peft's add_adapter freezes every weight but the LoRA's
        p.requires_grad_(train_base)
    if gradient_checkpointing:
        model.base.enable_gradient_checkpointing()
    return model


def load_camera_branches(model: CameraControlledTransformer, directory: Path) -> None:
    """The camera branches of the model folder `directory` (train-video --init), into `model`."""
    from backend.models.model_dir import CAMERA_FILE
    from backend.models.weights import load_state_dict
    try:
        model.load_camera_state_dict(load_state_dict(directory / CAMERA_FILE))
    except InputError as e:
        raise InputError(f"--init {directory}: {e.message}", "start from a model folder of the same --model-config "
                         "(e.g. --model-config small for the shipped default)") from None


@dataclass
class Dropout:
    """Condition dropout probabilities (backend.training.diffusion, "Condition dropout")."""
    text: float = 0.1
    image: float = 0.0
    camera: float = 0.0

    def __post_init__(self) -> None:
        for name, p in dataclasses.asdict(self).items():
            if not 0.0 <= p <= 1.0:
                raise InputError(f"{name} dropout {p} is outside [0, 1]", "use a probability, e.g. 0.1")


class VideoObjective:
    """The engine's step function: prepare the batch, drop conditions, diffusion loss (global RNG, which
    the engine seeds per process and restores on resume)."""

    def __init__(self, module: CameraControlledTransformer, scheduler: CogVideoXDPMScheduler,
                 vae: AutoencoderKLCogVideoX | None, text: Tensor, dropout: Dropout):
        self.module, self.scheduler, self.vae, self.text, self.dropout = module, scheduler, vae, text, dropout
        self.config = module.config

    def __call__(self, model: nn.Module, batch: dict, stage: dict) -> dict[str, Tensor]:
        device = batch["K"].device
        prepared = prepare_batch(batch, self.config, self.vae, self.text, device=device)
        prepared = drop_conditions(prepared, None, self.dropout.text, self.dropout.image, self.dropout.camera)
        return {"loss": diffusion_loss(model, self.scheduler, prepared, module=self.module)}

    @torch.no_grad()
    def validation_losses(self, model: nn.Module, batch: dict, seed: int) -> Tensor:
        """[len(VALIDATION_FRACTIONS)] losses of one clip at the fixed timesteps with fixed noise."""
        device = batch["K"].device
        generator = torch.Generator(device=device).manual_seed(seed)
        prepared = prepare_batch(batch, self.config, self.vae, self.text, generator=generator, device=device,
                                 image_noise=False)
        noise = torch.randn(prepared.latents.shape, generator=generator, device=device)
        total = self.scheduler.config.num_train_timesteps
        return torch.stack([
            diffusion_loss(model, self.scheduler, prepared, torch.full((noise.shape[0],), int(f * total)),
                           noise, module=self.module)
            for f in VALIDATION_FRACTIONS])


def make_validator(objective: VideoObjective, dataset, max_clips: int, collate_fn, seed: int):
    """validate_fn for the engine: the diffusion loss at fixed timesteps on up to max_clips held-out clips."""
    from accelerate.utils import send_to_device

    def validate(trainer: Trainer) -> dict[str, float]:
        acc = trainer.accelerator
        was_training = objective.module.training
        objective.module.eval()
        sums = torch.zeros(len(VALIDATION_FRACTIONS) + 1, device=acc.device)
        for i in range(acc.process_index, min(max_clips, len(dataset)), acc.num_processes):
            batch = send_to_device(collate_fn([dataset[i]]), acc.device)
            with acc.autocast():
                losses = objective.validation_losses(objective.module, batch, seed * 1_000_003 + i)
            sums += torch.cat([losses.float(), torch.ones(1, device=acc.device)])
        sums = acc.reduce(sums, reduction="sum")
        objective.module.train(was_training)
        n = max(float(sums[-1]), 1.0)
        total = objective.scheduler.config.num_train_timesteps
        out = {f"diffusion_loss_t{int(f * total)}": float(s) / n for f, s in zip(VALIDATION_FRACTIONS, sums)}
        out["diffusion_loss"] = float(sums[:-1].sum()) / n / len(VALIDATION_FRACTIONS)
        return out

    return validate


def export_video(trainer: Trainer, config: VideoModelConfig, scheduler: CogVideoXDPMScheduler,
                 directory: str | Path, vae: AutoencoderKLCogVideoX | None = None) -> None:
    """write_video(directory) with the trained (EMA when on) weights, and write_vae when the folder has no
    VAE yet. The weights go into a model built on the meta device (no second random copy is made).
    All processes call it."""
    from backend.models.model_dir import write_vae_if_missing, write_video

    def write(model: CameraControlledTransformer) -> None:
        write_video(Path(directory), model, scheduler)
        write_vae_if_missing(directory, vae)
    with torch.device("meta"):
        model = CameraControlledTransformer(config)
    trainer.export(model, write)


@dataclass
class VideoRun:
    """Everything `python -m backend train-video` decides (the command fills it from its options)."""
    train: TrainConfig
    model: VideoModelConfig
    scenes: DataOptions = dataclasses.field(default_factory=DataOptions)
    base: str | None = None
    vae: str | None = None
    latent_cache: str | None = None
    prompt_embeds: str | None = None
    train_base: bool = False
    dropout: Dropout = dataclasses.field(default_factory=Dropout)
    resume: bool = False
    export: str | None = None
    init: str | None = None                 # a model folder whose video model (base + camera branches) to start from


def train_video(run: VideoRun) -> dict:
    """Train (or resume) a video model run; returns {"steps", "loss", "val": {...}} at the end."""
    from backend.data import collate
    cfg, model_cfg = run.train, run.model
    if run.base is None and run.init is None and not run.train_base:
        raise InputError("the camera branches need a trained base: a frozen random base teaches them nothing",
                         "pass --base DIR (a local CogVideoX-5b-I2V, or a model folder), or --train-base to train "
                         "a small config's whole model from scratch")
    if not run.scenes.roots and not run.latent_cache:
        raise InputError("no training data", "pass --data ROOT... (with a VAE), or --latent-cache PATH")
    text = load_prompt_embeds(run.prompt_embeds, model_cfg)                # refuse early, before any data
    vae = find_vae(run.vae, run.base)
    if vae is not None and dict(vae.config).get("latent_channels") != model_cfg.latent_channels:
        raise InputError(f"the VAE makes {vae.config.latent_channels}-channel latents, the video model reads "
                         f"{model_cfg.latent_channels}", "use the VAE the model config describes")
    cache_ready = run.latent_cache is not None and (Path(run.latent_cache) / "cache.json").is_file()
    if vae is None and not cache_ready:
        raise InputError("training from frames needs the VAE that makes the model's latents",
                         "pass --vae DIR (a model folder with vae/, e.g. from train-vae --export, or a diffusers "
                         "VAE folder), a --base folder with vae/, or a finished --latent-cache")
    train_scenes, val_scenes = run.scenes.split(cfg.seed, "video model training")
    scheduler = build_scheduler(model_cfg)

    def make_model() -> CameraControlledTransformer:
        base = load_base(run.base or run.init) if run.base or run.init else None
        model = build_transformer(model_cfg, base, run.train_base, cfg.gradient_checkpointing)
        if run.init:
            load_camera_branches(model, Path(run.init))
        return model

    trainer = Trainer(cfg, make_model, run_info={
        "command": "train-video", "video": model_cfg.to_dict(), "data": [str(r) for r in run.scenes.roots],
        "base": run.base, "vae": run.vae, "latent_cache": run.latent_cache, "prompt_embeds": run.prompt_embeds,
        "train_base": run.train_base, "dropout": dataclasses.asdict(run.dropout), "init": run.init})
    if run.latent_cache:
        from backend.data.latent_cache import LatentCacheDataset, build_latent_cache
        if not cache_ready and train_scenes:
            if trainer.is_main:
                clips = run.scenes.cache_clips(train_scenes, model_cfg.num_frames, model_cfg.height, model_cfg.width,
                                               cfg.seed)
                build_latent_cache(vae, clips, run.latent_cache, seed=cfg.seed)
            trainer.accelerator.wait_for_everyone()
        cached = LatentCacheDataset(run.latent_cache, vae=vae if vae is not None else model_cfg.vae,
                                    num_frames=model_cfg.num_frames, height=model_cfg.height, width=model_cfg.width)
        train_data = cached
    else:
        train_data = run.scenes.training_clips(train_scenes, model_cfg.num_frames, model_cfg.height, model_cfg.width,
                                               cfg.seed)

    if run.resume and trainer.resume():
        log.info("resumed from step %d", trainer.step)
    if vae is not None:
        vae.to(trainer.device, torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float32)
    objective = VideoObjective(trainer.unwrapped_model, scheduler, vae, text, run.dropout)
    validate = None
    if val_scenes and vae is None:
        log.warning("no validation: held-out clips are frames, and there is no VAE to encode them (pass --vae)")
    elif val_scenes:
        val_set = run.scenes.validation_clips(val_scenes, model_cfg.num_frames, model_cfg.height, model_cfg.width,
                                              cfg.seed)
        validate = make_validator(objective, val_set, run.scenes.val_clips, collate, cfg.seed)
    trainer.fit(train_data, objective, collate_fn=collate, validate_fn=validate)
    if run.export:
        export_video(trainer, model_cfg, scheduler, run.export, vae)
    trainer.end()
    return trainer.summary()
