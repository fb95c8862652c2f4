"""The CogVideoX image-to-video diffusion objective, with Wonderland's camera conditioning, and the batch
preparation that turns training clips into exactly what `sample_video_latents` feeds the transformer.

Conditioning (mirrors backend/pipelines/camera_i2v.py):
- video latents: the clip's frames in [-1, 1] through the VAE (a sample of the latent distribution,
  times scaling_factor), [B, T, C, h, w]; or the latent cache's stored latents;
- image condition: frame 0 through `encode_image` with CogVideoX's I2V training noise augmentation,
  sigma = exp(N(mean, std)) per sample (`VideoModelConfig.image_noise_log_sigma`), placed as latent
  frame 0 of an otherwise zero image-latent video and concatenated on channels to the noisy latents.
  A latent cache built without frames gives no pixels: its latent frame 0 is the (clean) condition;
- cameras: each clip normalized with `backend.cameras.normalize` (camera 0 = identity, fixed scale,
  the rule inference uses), Plücker maps at the latent grid, one per video frame;
- text: prompt embeddings [L, D] shared by the batch, zeros of the config's text shape by default
  (the sampler's default), rotary embeddings from the pipeline's grid logic.

Objective. Timesteps uniform over the scheduler's training timesteps, x_t = add_noise(x0, noise, t), and
the target of the scheduler's prediction type: for v-prediction (the paper scheduler)
v = sqrt(ᾱ_t)·noise − sqrt(1−ᾱ_t)·x0 (`scheduler.get_velocity`). The loss is the plain MSE to v.
diffusers' CogVideoX fine-tuning scripts instead turn the prediction into x0 and weight its MSE by
1/(1−ᾱ_t); since x0_pred − x0 = −sqrt(1−ᾱ_t)·(v_pred − v), that is the same loss term for term, written
here in the form without the division (1 − ᾱ_t is about 1e-3 near t = 0, where the weight amplifies
rounding in low precision).

Condition dropout for guidance. The sampler's unconditional branch keeps the image latents and the
cameras and swaps only the text embeddings for the negative ones (zeros by default), so `text_dropout`
(replace a sample's text with zeros) is what classifier-free guidance needs. `image_dropout` (zero image
latents) and `camera_dropout` (zero Plücker maps) are off by default: the sampler never drops them, they
are there for guidance schemes over the image or the cameras.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler
from torch import Tensor

from backend.cameras import CameraBatch, normalize
from backend.data.latent_cache import encode_video
from backend.errors import InputError
from backend.models.video import CameraControlledTransformer, VideoModelConfig
from backend.pipelines.camera_i2v import encode_image, rotary_embeddings
from backend.plucker import plucker_embedding

PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")


@dataclass
class DiffusionBatch:
    """One batch as the transformer reads it (everything on one device, float32)."""

    latents: Tensor        # [B, T, C, h, w] clean video latents x0 (scaled like the VAE's training latents)
    image_latents: Tensor  # [B, 1, C, h, w] the (noise-augmented) encoded first frame
    plucker: Tensor        # [B, F, 6, h, w] normalized cameras at the latent grid, one map per video frame
    text: Tensor           # [B, L, D] prompt embeddings


def sample_image_noise_sigma(config: VideoModelConfig, batch: int, generator: torch.Generator | None = None,
                             device: torch.device | str = "cpu") -> Tensor:
    """[B] sigmas exp(N(mean, std)) of CogVideoX's I2V image noise augmentation."""
    mean, std = config.image_noise_log_sigma
    log_sigma = torch.randn(batch, generator=generator, device=device) * std + mean
    return log_sigma.exp()


def clip_plucker(K: Tensor, c2w: Tensor, width: int, height: int, latent_height: int, latent_width: int) -> Tensor:
    """Cameras of a batch of clips ([B, F, 3, 3] K in pixels of width x height, [B, F, 4, 4] c2w) ->
    [B, F, 6, h, w] Plücker maps of each clip's normalized trajectory at the latent grid."""
    maps = []
    for b in range(K.shape[0]):
        cams, _ = normalize(CameraBatch(K[b], c2w[b], int(width), int(height)))
        maps.append(plucker_embedding(cams, latent_height, latent_width))
    return torch.stack(maps)


def prepare_batch(batch: dict, config: VideoModelConfig, vae: AutoencoderKLCogVideoX | None, text: Tensor,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  image_noise: bool = True) -> DiffusionBatch:
    """A collated batch of clips -> DiffusionBatch. The batch holds "K" [B, F, 3, 3] (pixels at the
    model's size), "c2w" [B, F, 4, 4] and "frames" [B, F, 3, H, W] in [0, 1] (ClipDataset) and/or
    "latents" [B, T, C, h, w] (LatentCacheDataset). Cached latents are used as they are; frames are
    VAE-encoded otherwise. The image condition is frame 0 encoded with the noise augmentation
    (`image_noise=False`: clean, for validation) when frames and a VAE are there, else the cached
    latent frame 0. text: [L, D] or [B, L, D] prompt embeddings."""
    K, c2w = batch["K"].to(device), batch["c2w"].to(device)
    T, C, h, w = config.latent_shape
    frames = batch.get("frames")
    if frames is not None:
        frames = frames.to(device)
        if tuple(frames.shape[1:]) != (config.num_frames, 3, config.height, config.width):
            raise InputError(f"clips of shape {tuple(frames.shape[1:])}, the model reads "
                             f"{(config.num_frames, 3, config.height, config.width)}",
                             "make the clips with the model config's num_frames, height and width")
    if "latents" in batch:
        latents = batch["latents"].to(device)
        if tuple(latents.shape[1:]) != (T, C, h, w):
            raise InputError(f"cached latents of shape {tuple(latents.shape[1:])}, the model reads {(T, C, h, w)}",
                             "rebuild the latent cache with this model config's VAE and video size")
    elif frames is None or vae is None:
        raise InputError("a training batch needs 'latents', or 'frames' and a VAE to encode them",
                         "use ClipDataset items with the model's VAE, or LatentCacheDataset items")
    else:
        latents = encode_video(vae, frames, generator)
    if frames is not None and vae is not None:
        sigma = sample_image_noise_sigma(config, frames.shape[0], generator, device) if image_noise else None
        with torch.no_grad():
            image_latents = encode_image(vae, frames[:, 0] * 2.0 - 1.0, generator, noise_sigma=sigma)
    else:
        image_latents = latents[:, :1]
    plucker = clip_plucker(K, c2w, config.width, config.height, h, w).to(device)
    B = latents.shape[0]
    text = text.to(device=device, dtype=torch.float32)
    text = text.expand(B, *text.shape[-2:]) if text.ndim == 2 or text.shape[0] == 1 else text
    return DiffusionBatch(latents.float(), image_latents.float(), plucker.float(), text)


def drop_conditions(batch: DiffusionBatch, generator: torch.Generator | None = None, text_dropout: float = 0.0,
                    image_dropout: float = 0.0, camera_dropout: float = 0.0) -> DiffusionBatch:
    """Per sample, zero the text / image latents / Plücker maps with the given probabilities."""
    B = batch.latents.shape[0]
    device = batch.latents.device

    def keep(p: float, like: Tensor) -> Tensor:
        mask = (torch.rand(B, generator=generator, device=device) >= p).to(like.dtype)
        return mask.reshape(B, *([1] * (like.ndim - 1)))

    return DiffusionBatch(batch.latents, batch.image_latents * keep(image_dropout, batch.image_latents),
                          batch.plucker * keep(camera_dropout, batch.plucker),
                          batch.text * keep(text_dropout, batch.text))


def diffusion_target(scheduler: CogVideoXDPMScheduler, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """What the model learns to predict under the scheduler's prediction type."""
    kind = scheduler.config.prediction_type
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    raise InputError(f"scheduler prediction type {kind!r} is not supported", f"use one of {PREDICTION_TYPES}")


def diffusion_loss(transformer: CameraControlledTransformer, scheduler: CogVideoXDPMScheduler, batch: DiffusionBatch,
                   timesteps: Tensor | None = None, noise: Tensor | None = None,
                   generator: torch.Generator | None = None, reduce: bool = True,
                   module: CameraControlledTransformer | None = None) -> Tensor:
    """MSE between the transformer's prediction and the diffusion target (see the module docstring).
    timesteps [B] and noise (like latents) are drawn from `generator` when not given. `reduce=False`
    returns the per-sample loss [B]. `transformer` may be a distributed wrapper (it is called), with
    `module` the CameraControlledTransformer inside (read for its dtype and rotary embeddings)."""
    module = transformer if module is None else module
    x0 = batch.latents
    B, T, C, h, w = x0.shape
    device = x0.device
    if timesteps is None:
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (B,), generator=generator, device=device)
    timesteps = timesteps.to(device=device, dtype=torch.long)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    image_cond = torch.cat([batch.image_latents, x0.new_zeros(B, T - 1, C, h, w)], dim=1)
    dtype = module.base.dtype
    model_input = torch.cat([noisy, image_cond], dim=2).to(dtype)
    rotary = rotary_embeddings(module, h, w, T, device)
    pred = transformer(model_input, batch.text.to(dtype), timesteps, batch.plucker.to(dtype),
                       image_rotary_emb=rotary).float()
    target = diffusion_target(scheduler, x0, noise, timesteps).float()
    per_sample = ((pred - target) ** 2).reshape(B, -1).mean(dim=1)
    return per_sample.mean() if reduce else per_sample
