"""Small-VAE training: an `AutoencoderKLCogVideoX` (the same class and 8x / 4x compression as CogVideoX's) of a
small config's `vae` kwargs, for video models trained from scratch. Paper-scale configs use CogVideoX-5B-I2V's
own VAE, so they are refused.

Loss: L1 (or MSE) between the clip and its reconstruction from a posterior sample, plus
kl_weight · KL(q(z|x) || N(0, I)), both per element (the KL summed over latent elements, divided by the
number of pixel values): with kl_weight 1e-6 this is the weighting of Stable Diffusion's and CogVideoX's
VAE trainings, whose sums both terms over the pixels. Their perceptual (LPIPS) and GAN terms are left
out: LPIPS needs network weights this project does not ship, and a GAN is not needed at test scale.

Clips: the config's frame count and size by default; the VAE is convolutional, so it may train on
smaller clips (`frames`, `height`, `width`) and still encode the model's size. The frame count must
encode to an odd number of latent frames (1 + 8k frames: 1, 9, 17, ..., 49), the only counts that
diffusers' CogVideoX VAE decodes back to the same number of frames.

Validation: PSNR / SSIM of the reconstructions (posterior mean, decoded) of held-out clips.
Export (`--export DIR`): write_vae(DIR, vae), the model folder's vae/.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX
from torch import Tensor, nn

from backend.data.scenes import DataOptions
from backend.errors import InputError
from backend.models.video import VideoModelConfig
from backend.training.engine import Trainer, TrainConfig, image_validator

log = logging.getLogger(__name__)

RECONSTRUCTION = ("l1", "mse")
PAPER_VAE_HINT = ("paper-scale models use CogVideoX-5B-I2V's own VAE: download THUDM/CogVideoX-5b-I2V and pass "
                  "its folder to train-video (--base DIR, or --vae DIR/vae); train-vae is for small configs "
                  "such as --model-config tiny")


class ReconstructingVAE(nn.Module):
    """The VAE behind one forward (what the engine and distributed wrappers call): clip -> (reconstruction,
    per-element KL)."""

    def __init__(self, vae: AutoencoderKLCogVideoX):
        super().__init__()
        self.vae = vae

    def forward(self, x: Tensor, sample: bool = True) -> tuple[Tensor, Tensor]:
        """x [B, 3, F, H, W] in [-1, 1] -> reconstruction like x, KL per pixel value [B]."""
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample() if sample else posterior.mode()
        reconstruction = self.vae.decode(z).sample
        return reconstruction, posterior.kl() / x[0].numel()


def check_vae_config(config: VideoModelConfig, name: str) -> None:
    """Refuse the paper model (and any config with CogVideoX's VAE): its VAE is the released one."""
    if name == "paper" or config.vae == VideoModelConfig.paper().vae:
        raise InputError(f"train-vae does not train the paper model's VAE (model config {name!r})", PAPER_VAE_HINT)


def check_frames(frames: int, config: VideoModelConfig) -> None:
    step = 2 * config.vae_temporal_compression
    if frames < 1 or (frames - 1) % step:
        raise InputError(f"clips of {frames} frames do not decode back to {frames} frames",
                         f"use 1 + {step}k frames (1, 9, 17, ..., 49): an odd number of latent frames")


def vae_loss(model: nn.Module, frames: Tensor, reconstruction: str = "l1", kl_weight: float = 1e-6
             ) -> dict[str, Tensor]:
    """frames [B, F, 3, H, W] in [0, 1] -> {"loss", "reconstruction", "kl"} (module docstring)."""
    x = (frames * 2.0 - 1.0).permute(0, 2, 1, 3, 4)
    rec, kl = model(x)
    diff = rec.float() - x.float()
    rec_loss = diff.abs().mean() if reconstruction == "l1" else diff.square().mean()
    kl = kl.float().mean()
    return {"loss": rec_loss + kl_weight * kl, "reconstruction": rec_loss.detach(), "kl": kl.detach()}


@torch.no_grad()
def reconstruct(model: ReconstructingVAE, frames: Tensor) -> Tensor:
    """frames [B, F, 3, H, W] in [0, 1] -> the reconstruction from the posterior mean, in [0, 1]."""
    rec, _ = model((frames * 2.0 - 1.0).permute(0, 2, 1, 3, 4), sample=False)
    return ((rec.float().permute(0, 2, 1, 3, 4) + 1.0) / 2.0).clamp(0, 1)


def make_validator(module: ReconstructingVAE, dataset, max_clips: int, collate_fn):
    """validate_fn for the engine: PSNR / SSIM of reconstructions of up to max_clips held-out clips."""

    def images(trainer: Trainer, batch: dict) -> tuple[Tensor, Tensor]:
        frames = batch["frames"]
        with trainer.accelerator.autocast():
            rec = reconstruct(module, frames)
        return rec[0], frames[0]

    return image_validator(module, dataset, max_clips, collate_fn, images, "val/reconstruction_vs_clip")


def export_vae(trainer: Trainer, config: VideoModelConfig, directory: str | Path) -> AutoencoderKLCogVideoX:
    """write_vae(directory) with the trained (EMA when on) weights; all processes call it."""
    from backend.models.model_dir import write_vae
    return trainer.export(AutoencoderKLCogVideoX(**config.vae), lambda vae: write_vae(directory, vae), prefix="vae.")


@dataclass
class VAERun:
    """Everything `python -m backend train-vae` decides (the command fills it from its options)."""
    train: TrainConfig
    model: VideoModelConfig
    model_name: str
    scenes: DataOptions = dataclasses.field(default_factory=DataOptions)
    reconstruction: str = "l1"
    kl_weight: float = 1e-6
    frames: int | None = None      # clip size; default: the model config's
    height: int | None = None
    width: int | None = None
    resume: bool = False
    export: str | None = None


def train_vae(run: VAERun) -> dict:
    """Train (or resume) a VAE run; returns {"steps", "loss", "val": {...}} at the end."""
    from backend.data import collate
    cfg, model_cfg = run.train, run.model
    check_vae_config(model_cfg, run.model_name)
    if run.reconstruction not in RECONSTRUCTION:
        raise InputError(f"reconstruction loss {run.reconstruction!r}", f"use one of {', '.join(RECONSTRUCTION)}")
    if run.kl_weight < 0:
        raise InputError(f"kl weight {run.kl_weight}", "use a small weight >= 0, e.g. 1e-6")
    frames = run.frames or model_cfg.num_frames
    height, width = run.height or model_cfg.height, run.width or model_cfg.width
    check_frames(frames, model_cfg)
    if height % model_cfg.vae_spatial_compression or width % model_cfg.vae_spatial_compression:
        raise InputError(f"clips of {width}x{height} pixels",
                         f"use multiples of the VAE's {model_cfg.vae_spatial_compression}x spatial compression")
    if not run.scenes.roots:
        raise InputError("no training data", "pass --data ROOT... (folders of scenes)")
    train_scenes, val_scenes = run.scenes.split(cfg.seed, "VAE training")

    def make_model() -> ReconstructingVAE:
        vae = AutoencoderKLCogVideoX(**model_cfg.vae)
        if cfg.gradient_checkpointing:
            vae.enable_gradient_checkpointing()
        return ReconstructingVAE(vae)

    trainer = Trainer(cfg, make_model, run_info={
        "command": "train-vae", "video": model_cfg.to_dict(), "data": [str(r) for r in run.scenes.roots],
        "reconstruction": run.reconstruction, "kl_weight": run.kl_weight, "clip": [frames, height, width]})
    train_data = run.scenes.training_clips(train_scenes, frames, height, width, cfg.seed)
    if run.resume and trainer.resume():
        log.info("resumed from step %d", trainer.step)

    def step(model: nn.Module, batch: dict, stage: dict) -> dict[str, Tensor]:
        return vae_loss(model, batch["frames"], run.reconstruction, run.kl_weight)

    validate = None
    if val_scenes:
        val_set = run.scenes.validation_clips(val_scenes, frames, height, width, cfg.seed)
        validate = make_validator(trainer.unwrapped_model, val_set, run.scenes.val_clips, collate)
    trainer.fit(train_data, step, collate_fn=collate, validate_fn=validate)
    if run.export:
        export_vae(trainer, model_cfg, run.export)
    trainer.end()
    return trainer.summary()
