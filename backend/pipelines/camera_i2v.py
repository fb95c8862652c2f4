"""Camera-controlled image-to-video sampling: the denoising loop of diffusers'
`CogVideoXImageToVideoPipeline`, driven by our `CameraControlledTransformer` and stopping at latents
(the LaLRM reads latents, so no VAE decode is needed).

Mirrors the pipeline at inference: the conditioning image is VAE-encoded (a sample of the latent
distribution, scaled by the VAE's scaling factor, no noise augmentation: that is a training-time
trick), placed as latent frame 0 of an otherwise zero "image latent" video and concatenated on
channels to the noisy latents; rotary embeddings come from the pipeline's grid logic; the
`CogVideoXDPMScheduler` steps with its two-step `old_pred_original_sample` form; classifier-free
guidance runs [uncond, cond] as one batch, and only when guidance_scale > 1 (and text embeddings
are given: with none, both halves would be equal).

Speed levers (all off by default except SDPA, which diffusers' CogVideoX attention always uses):
- `controlnet_fraction` < 1 runs the ControlNet branch only in the first steps (AC3D: 0.4);
- `cache="pab"`: diffusers' Pyramid Attention Broadcast on the base transformer (re-uses attention
  outputs between steps in the middle of the schedule; it works on attention modules, below the
  camera hooks). First Block Cache and FasterCache (both in diffusers 0.42.1 for CogVideoX) are not
  offered: on a skipped step First Block Cache returns a cached tail residual that already holds the
  ControlNet residuals, which our per-block hooks would then add a second time, and FasterCache's
  CFG hook changes the batch inside the base, under the camera tokens we add for the full batch;
- `compile_blocks(model)`, once after loading: torch.compile of each transformer block's forward
  (regional compilation; the per-call camera hooks stay outside the compiled code, so adding and
  removing them causes no recompilation).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel
from diffusers.hooks import PyramidAttentionBroadcastConfig
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import get_resize_crop_region_for_grid
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from backend.errors import Cancelled, InputError
from backend.models.video import CameraControlledTransformer, VideoModelConfig
from backend.models.weights import load_state_dict

CACHES = (None, "pab")
COMPILE_VARIANTS = 32  # graphs kept per compiled block forward (see compile_blocks)


def rotary_embeddings(transformer: CameraControlledTransformer | CogVideoXTransformer3DModel, latent_height: int,
                      latent_width: int, latent_frames: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
    """The pipeline's `_prepare_rotary_positional_embeddings` (CogVideoX 1.0 branch) for a latent grid;
    None for a transformer without rotary embeddings. Takes ours or a stock diffusers transformer."""
    cfg = getattr(transformer, "base", transformer).config
    if not cfg.use_rotary_positional_embeddings:
        return None
    p = cfg.patch_size
    grid_h, grid_w = latent_height // p, latent_width // p
    crops = get_resize_crop_region_for_grid((grid_h, grid_w), cfg.sample_width // p, cfg.sample_height // p)
    return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops,
                                   grid_size=(grid_h, grid_w), temporal_size=latent_frames, device=device)


def encode_image(vae: AutoencoderKLCogVideoX, image: Tensor, generator: torch.Generator | None = None,
                 noise_sigma: Tensor | float | None = None) -> Tensor:
    """Image [B, 3, H, W] in [-1, 1] -> scaled image latents [B, 1, C, H/8, W/8], as the I2V pipeline
    encodes its condition (a latent sample, times scaling_factor). `noise_sigma` ([B] or a number) adds
    CogVideoX's training-time noise augmentation; leave it None at inference, as the pipeline does."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputError(f"encode_image expects an image batch [B, 3, H, W], got {tuple(image.shape)}",
                         "convert the image to RGB and add a batch dimension")
    x = image.to(device=vae.device, dtype=vae.dtype).unsqueeze(2)          # [B, 3, 1, H, W]
    if noise_sigma is not None:
        sigma = torch.as_tensor(noise_sigma, device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1, 1)
        x = x + randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype) * sigma
    latents = vae.encode(x).latent_dist.sample(generator).permute(0, 2, 1, 3, 4)
    scale = vae.config.scaling_factor
    return latents / scale if vae.config.invert_scale_latents else latents * scale


def decode_latents(vae: AutoencoderKLCogVideoX, latents: Tensor, tiling: bool = False) -> Tensor:
    """Latents [B, T, C, h, w] (scaled) -> video [B, F, 3, H, W] in about [-1, 1], for previews.

    `tiling`: decode in overlapping spatial tiles (diffusers' VAE tiling), which bounds the decoder's
    memory at the paper's 480x720 (the untiled decode of 49 frames needs tens of GB) for softly
    blended tile seams; it is switched off again afterwards (see `check_tiling` for which VAEs can)."""
    z = latents.to(device=vae.device, dtype=vae.dtype).permute(0, 2, 1, 3, 4)
    scale = vae.config.scaling_factor
    z = z * scale if vae.config.invert_scale_latents else z / scale
    if tiling:
        check_tiling(vae)
        vae.enable_tiling()
    try:
        return vae.decode(z).sample.permute(0, 2, 1, 3, 4)
    finally:
        if tiling:
            vae.disable_tiling()


def check_tiling(vae: AutoencoderKLCogVideoX) -> None:
    """Refuses tiles that diffusers' tiled decode cannot put together: it steps tiles by the overlap but
    keeps `tile - blend` pixels of each, so the frame only comes out whole when the two agree. True for
    CogVideoX's 240x360 tiles at 480x720, not for the half-frame tiles of small VAEs (which need none)."""
    ratio = 2 ** (len(vae.config.block_out_channels) - 1)
    for tile, factor in ((vae.tile_sample_min_height, vae.tile_overlap_factor_height),
                         (vae.tile_sample_min_width, vae.tile_overlap_factor_width)):
        if ratio * int(tile // ratio * (1 - factor)) != tile - int(tile * factor):
            raise InputError(f"this VAE's {tile}-pixel tiles with overlap {factor:.3f} would not put the frame "
                             "together exactly in diffusers' tiled decode",
                             "leave out --vae-tiling: a small model's frames decode in one piece")


def leading_steps(steps: int, fraction: float) -> int:
    """How many of the first denoising steps run a branch kept for `fraction` of them (ControlNet, CFG)."""
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"a step fraction of {fraction} is outside [0, 1]",
                         "use 1.0 (every step), or e.g. 0.4 to keep the branch for the first 40% of the steps")
    return round(fraction * steps)


def compile_blocks(transformer: CameraControlledTransformer, **compile_kwargs) -> None:
    """Opt-in torch.compile (kwargs go to it, e.g. mode="max-autotune") of every transformer block's
    forward, base and ControlNet copy. All blocks share one code object, so graphs serve them all, but
    one per variant: batch 2 or 1 (CFG on or off), the stride layout of the inputs, frozen base or
    trainable ControlNet parameters. ControlNet 40% + CFG 20% makes 7, next to dynamo's default limit of
    8, past which calls silently run eager: the limit is raised. Not with `cache="pab"`: enabling the
    cache replaces the attention forwards, which throws the compiled graphs away on every run."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILE_VARIANTS)
    for block in [*transformer.base.transformer_blocks, *transformer.controlnet_blocks]:
        block.forward = torch.compile(block.forward, **compile_kwargs)


@torch.no_grad()
def sample_video_latents(
    transformer: CameraControlledTransformer,
    scheduler: CogVideoXDPMScheduler,
    image_latents: Tensor,
    plucker: Tensor,
    *,
    steps: int | None = None,
    guidance_scale: float | None = None,
    num_frames: int | None = None,
    prompt_embeds: Tensor | None = None,
    negative_prompt_embeds: Tensor | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    controlnet_fraction: float | None = None,
    guidance_fraction: float = 1.0,
    cache: str | None = None,
    keep_image_frame: bool = False,
) -> Tensor:
    """Denoises a camera-controlled video from one image; returns latents [B, T, C, h, w] (scaled like
    the VAE's training latents; divide by the scaling factor before `vae.decode`).

    image_latents: [B, 1, C, h, w] from `encode_image`. plucker: per video frame [B, F, 6, h, w] at the
    latent grid, or grouped [B, T, 24, h, w] (see `CameraControlledTransformer.group_plucker`).
    steps, guidance_scale, num_frames, controlnet_fraction: default to the model config's
    (num_inference_steps, guidance_scale, num_frames, controlnet_fraction); T = 1 + (F - 1) / 4.
    prompt_embeds / negative_prompt_embeds: [B, L, D] text embeddings; zeros of the config's text
    shape when None. Classifier-free guidance ([uncond, cond] in one batch) runs when
    guidance_scale > 1 and at least one of them is given: without any, both halves would be the
    same zeros and CFG would double the work for an identical result.
    guidance_fraction: CFG only in this first share of the steps, the conditional pass alone after it
    (guidance matters while the layout forms; late steps refine detail, where one pass is half the cost).
    cache: None or "pab" (Pyramid Attention Broadcast, see the module docstring).
    keep_image_frame: return image_latents itself as latent frame 0. The causal VAE encodes video frame
    0 alone, so the condition's latent is exactly what encoding the video would give there, while the
    sampled frame 0 is the model's approximation of it (what the pipeline returns when False).
    generator: seeds the initial noise and the scheduler's noise (same seed -> same latents).
    on_step(step, total) runs after each step (1-based); should_cancel() runs before each step and
    a True answer raises backend.errors.Cancelled.
    """
    cfg = transformer.config
    steps = cfg.num_inference_steps if steps is None else steps
    guidance_scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
    controlnet_fraction = cfg.controlnet_fraction if controlnet_fraction is None else controlnet_fraction
    if image_latents.ndim != 5 or image_latents.shape[1] != 1 or image_latents.shape[2] != cfg.latent_channels:
        raise InputError(f"image_latents must be [B, 1, {cfg.latent_channels}, h, w], got "
                         f"{tuple(image_latents.shape)}", "encode the image with encode_image()")
    if steps < 1:
        raise InputError(f"steps = {steps}", "use at least 1 denoising step (50 for the paper model)")
    if cache not in CACHES:
        raise InputError(f"unknown cache {cache!r}", f"use one of {CACHES}")
    num_frames = num_frames or cfg.num_frames
    if (num_frames - 1) % cfg.vae_temporal_compression:
        raise InputError(f"num_frames = {num_frames} is not 1 + 4k", "use e.g. 49 (paper) or 9 (tiny)")
    latent_frames = (num_frames - 1) // cfg.vae_temporal_compression + 1
    batch, _, channels, height, width = image_latents.shape
    base_cfg = transformer.base.config
    if base_cfg.use_learned_positional_embeddings and (num_frames, height, width) != (
            base_cfg.sample_frames, base_cfg.sample_height, base_cfg.sample_width):
        raise InputError(
            f"this model only makes {base_cfg.sample_frames} frames at latent size "
            f"{base_cfg.sample_height}x{base_cfg.sample_width}; asked {num_frames} frames at {height}x{width}",
            "its learned positional embedding fixes the size: resize the image to "
            f"{cfg.width}x{cfg.height} and resample the trajectory to {cfg.num_frames} frames")

    device, dtype = image_latents.device, transformer.base.dtype
    do_cfg = guidance_scale > 1.0 and (prompt_embeds is not None or negative_prompt_embeds is not None)
    text = _text_embeds(cfg, prompt_embeds, batch, device, dtype)
    text = torch.cat([_text_embeds(cfg, negative_prompt_embeds, batch, device, dtype), text]) if do_cfg else text
    cams = transformer.group_plucker(plucker.to(device=device, dtype=dtype), latent_frames, height, width)
    if cams.shape[0] != batch:
        raise InputError(f"{cams.shape[0]} camera trajectories for {batch} images",
                         "give one trajectory per image")
    cams = torch.cat([cams] * 2) if do_cfg else cams

    scheduler.set_timesteps(steps)  # on the CPU: the loop reads each as an int without a device sync
    timesteps = scheduler.timesteps
    latents = randn_tensor((batch, latent_frames, channels, height, width), generator=generator,
                           device=device, dtype=dtype) * scheduler.init_noise_sigma
    image_cond = torch.cat([image_latents.to(dtype),
                            image_latents.new_zeros(batch, latent_frames - 1, channels, height, width, dtype=dtype)], 1)
    image_cond = torch.cat([image_cond] * 2) if do_cfg else image_cond
    rotary = rotary_embeddings(transformer, height, width, latent_frames, device)
    with_controlnet = leading_steps(steps, controlnet_fraction)
    with_guidance = leading_steps(steps, guidance_fraction) if do_cfg else 0

    current = {"t": None}
    pab = PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(100, 800),
        current_timestep_callback=lambda: current["t"]) if cache == "pab" else None
    if pab is not None:
        transformer.base.enable_cache(pab)
    try:
        old_pred_original_sample = None
        for i, t in enumerate(timesteps):
            if should_cancel is not None and should_cancel():
                raise Cancelled(f"cancelled before denoising step {i + 1} of {steps}")
            current["t"] = int(t)
            if pab is not None and 0 < i == with_guidance:  # the cached attention is the guided batch's
                transformer.base.disable_cache()
                transformer.base.enable_cache(pab)
            guided = i < with_guidance
            part = slice(None) if guided else slice(-batch, None)  # the conditional half alone
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = torch.cat([scheduler.scale_model_input(model_input, t), image_cond[part]], dim=2)
            with transformer.base.cache_context("cond_uncond"):
                pred = transformer(model_input, text[part], t.to(device).expand(model_input.shape[0]), cams[part],
                                   image_rotary_emb=rotary, use_controlnet=i < with_controlnet).float()
            if guided:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance_scale * (cond - uncond)
            latents, old_pred_original_sample = scheduler.step(
                pred, old_pred_original_sample, t, timesteps[i - 1] if i > 0 else None, latents,
                generator=generator, return_dict=False)
            latents = latents.to(dtype)
            if on_step is not None:
                on_step(i + 1, steps)
    finally:
        if pab is not None:
            transformer.base.disable_cache()
    if keep_image_frame:
        latents = torch.cat([image_latents.to(latents.dtype), latents[:, 1:]], dim=1)
    return latents


def load_prompt_embeds(path: str | Path | None, config: VideoModelConfig) -> Tensor:
    """[L, D] prompt embeddings shared by every clip: zeros of the config's text shape without a file
    (what the sampler uses by default), else the single tensor of a .safetensors file ([L, D] or
    [1, L, D], e.g. the T5 encoding of a generic prompt padded to the model's token count)."""
    shape = config.text_shape
    if path is None:
        return torch.zeros(shape)
    tensors = load_state_dict(path)
    if len(tensors) != 1:
        raise InputError(f"{path} holds {len(tensors)} tensors ({', '.join(sorted(tensors)[:5])})",
                         "save exactly one tensor of prompt embeddings in it")
    embeds = next(iter(tensors.values())).float()
    embeds = embeds[0] if embeds.ndim == 3 and embeds.shape[0] == 1 else embeds
    if tuple(embeds.shape) != shape:
        raise InputError(f"prompt embeddings in {path} have shape {tuple(embeds.shape)}, the model reads {shape}",
                         "encode the prompt with the model's text encoder (T5) padded to its token count")
    return embeds


def _text_embeds(cfg, embeds: Tensor | None, batch: int, device, dtype) -> Tensor:
    shape = (batch, *cfg.text_shape)
    if embeds is None:
        return torch.zeros(shape, device=device, dtype=dtype)
    if tuple(embeds.shape) != shape:
        raise InputError(f"prompt embeddings of shape {tuple(embeds.shape)}, the model reads {shape}",
                         "encode the prompt with the model's text encoder (T5) padded to its token count")
    return embeds.to(device=device, dtype=dtype)
