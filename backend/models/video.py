"""The camera-controlled video diffusion model: diffusers' CogVideoX-I2V plus Wonderland's two camera
branches (shared/design/paper.md, "Dual branch").

- `VideoModelConfig` pins every size: the kwargs of diffusers' `CogVideoXTransformer3DModel`,
  `AutoencoderKLCogVideoX` and `CogVideoXDPMScheduler`, the video size, and the camera branches.
  `paper()` is CogVideoX-5B-I2V's public configuration, `tiny()` the same code at test size,
  `small()` the size of the shipped default.
- `CameraControlledTransformer` wraps an unmodified `CogVideoXTransformer3DModel` (`base`) and adds
  * a ControlNet branch: a trainable copy of the first K base blocks, fed with the base's
    patch-embedded (noisy + image) video tokens plus camera tokens (from a zero-initialised camera
    patch embedding, ControlNet's "zero convolution" on the condition); block k's output goes through
    a zero-initialised Linear and is added to the video tokens output by base block k;
  * a LoRA branch: peft LoRA on the base blocks' attention projections, plus camera tokens added to
    the base's video tokens through a zero-initialised Linear.
  At initialisation every camera path adds exact zeros, so the model equals the base bit for bit.

Camera input. Plücker maps [o × d, d] (backend.plucker) at the LATENT grid, i.e. H/8 x W/8 for the
video's H x W (rays through the centres of the 8x8 pixel blocks that one latent pixel encodes:
`plucker_embedding(cameras, H // 8, W // 8)`), one map per video frame: [B, F, 6, h, w], F = 49 for
the paper model. They are grouped like the VAE groups frames ({0}, {1-4}, ...) with
`backend.plucker.group_frames_for_latents` into [B, T, 24, h, w]; callers may pass that grouped
form directly. A camera patch embedding (Conv2d, kernel = stride = the transformer's patch size, the
same patchify as CogVideoX's own patch embedding) turns each latent frame's p x p block of rays into
the token that covers the same pixels as the matching video token: each token sees the 4 frames x
2x2 latent pixels (= 16x16 image pixels) it stands for.

The base is driven through its stock forward; the branches join through forward hooks on
`base.time_embedding` (read), `base.patch_embed` (camera tokens in, ControlNet run) and
`base.transformer_blocks[:K]` (residuals added) that live only for the duration of one call,
so the base stays a plain diffusers model (its weights load with `from_pretrained`, its cache hooks
such as Pyramid Attention Broadcast apply, and it runs unchanged when called on its own).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.utils.checkpoint
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel
from peft import LoraConfig
from torch import Tensor, nn

from backend.errors import InputError
from backend.models.weights import check_field_types, config_from_dict
from backend.plucker import group_frames_for_latents

PLUCKER_CHANNELS = 6
LORA_ADAPTER = "camera"
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class VideoModelConfig:
    """Every size of the video model; JSON round-trips through `to_dict()` / `from_dict()`."""

    name: str
    transformer: dict[str, Any]      # kwargs of diffusers.CogVideoXTransformer3DModel
    vae: dict[str, Any]              # kwargs of diffusers.AutoencoderKLCogVideoX
    scheduler: dict[str, Any]        # kwargs of diffusers.CogVideoXDPMScheduler
    num_frames: int                  # video frames (pixels); latent frames = 1 + (F - 1) / 4
    height: int                      # pixels
    width: int                       # pixels
    controlnet_layers: int           # K: the ControlNet copies base blocks 0 .. K-1
    lora_rank: int
    lora_alpha: float
    controlnet_fraction: float = 1.0  # share of denoising steps (the first ones) that run the ControlNet; AC3D: 0.4
    guidance_scale: float = 6.0       # classifier-free guidance weight; <= 1 disables CFG
    num_inference_steps: int = 50
    # Training-time noise on the conditioning image before VAE encoding, as CogVideoX's I2V training:
    # sigma = exp(N(mean, std)) per sample. Inference encodes the clean image (like diffusers' pipeline).
    image_noise_log_sigma: tuple[float, float] = (-3.0, 0.5)
    lora_target_modules: tuple[str, ...] = field(default=LORA_TARGET_MODULES)

    def __post_init__(self) -> None:
        self.image_noise_log_sigma = tuple(self.image_noise_log_sigma)
        self.lora_target_modules = tuple(self.lora_target_modules)
        self.validate()

    # --- named configurations ---------------------------------------------------------------------
    @classmethod
    def paper(cls) -> "VideoModelConfig":
        """CogVideoX-5B-I2V's public settings (THUDM/CogVideoX-5b-I2V on the Hub; class defaults
        differ) with Wonderland's camera branches: ControlNet on 21 of 42 blocks, LoRA rank 256.
        49 x 480 x 720 only: the learned positional embedding fixes the 13 x 60 x 90 latent grid."""
        return cls(
            name="wonderland-cogvideox-5b-i2v",
            transformer=dict(
                num_attention_heads=48, attention_head_dim=64, in_channels=32, out_channels=16,
                flip_sin_to_cos=True, freq_shift=0, time_embed_dim=512, ofs_embed_dim=None,
                text_embed_dim=4096, num_layers=42, dropout=0.0, attention_bias=True,
                sample_width=90, sample_height=60, sample_frames=49, patch_size=2, patch_size_t=None,
                temporal_compression_ratio=4, max_text_seq_length=226,
                activation_fn="gelu-approximate", timestep_activation_fn="silu",
                norm_elementwise_affine=True, norm_eps=1e-5, spatial_interpolation_scale=1.875,
                temporal_interpolation_scale=1.0, use_rotary_positional_embeddings=True,
                use_learned_positional_embeddings=True, patch_bias=True),
            vae=dict(
                in_channels=3, out_channels=3,
                down_block_types=["CogVideoXDownBlock3D"] * 4, up_block_types=["CogVideoXUpBlock3D"] * 4,
                block_out_channels=[128, 256, 256, 512], latent_channels=16, layers_per_block=3,
                act_fn="silu", norm_eps=1e-6, norm_num_groups=32, temporal_compression_ratio=4,
                sample_height=480, sample_width=720, scaling_factor=0.7, force_upcast=True,
                use_quant_conv=False, use_post_quant_conv=False, invert_scale_latents=False),
            scheduler=_cogvideox_scheduler(),
            num_frames=49, height=480, width=720,
            controlnet_layers=21, lora_rank=256, lora_alpha=256.0,
            controlnet_fraction=1.0, guidance_scale=6.0, num_inference_steps=50,
        )

    @classmethod
    def tiny(cls) -> "VideoModelConfig":
        """The same code at test size (seconds on 2 CPU cores): 9 frames at 64 x 96 -> 3 x 8 x 12 latents
        of 4 channels, 3 blocks of 2 heads x 16, ControlNet on 2 blocks, LoRA rank 4, a VAE with the
        same 8x / 4x compression but 16 channels and one layer per block."""
        return cls(
            name="tiny",
            transformer=dict(
                num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4,
                time_embed_dim=32, text_embed_dim=16, num_layers=3, attention_bias=True,
                sample_width=12, sample_height=8, sample_frames=9, patch_size=2,
                temporal_compression_ratio=4, max_text_seq_length=8,
                use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True),
            vae=dict(
                in_channels=3, out_channels=3,
                down_block_types=["CogVideoXDownBlock3D"] * 4, up_block_types=["CogVideoXUpBlock3D"] * 4,
                block_out_channels=[16, 16, 16, 16], latent_channels=4, layers_per_block=1,
                norm_num_groups=8, temporal_compression_ratio=4, sample_height=64, sample_width=96,
                scaling_factor=0.7, use_quant_conv=False, use_post_quant_conv=False),
            scheduler=_cogvideox_scheduler(),
            num_frames=9, height=64, width=96,
            controlnet_layers=2, lora_rank=4, lora_alpha=4.0,
            controlnet_fraction=1.0, guidance_scale=1.0, num_inference_steps=4,
        )

    @classmethod
    def small(cls) -> "VideoModelConfig":
        """The shipped default's size, trained from scratch on 2 CPU cores: tiny's 9 frames at 64 x 96,
        but CogVideoX's 16 latent channels (its compression ratio), 4 blocks of 4 heads x 32, a VAE of
        16/32/32/32 channels, LoRA rank 8 and 50 sampling steps."""
        tiny = cls.tiny()
        return dataclasses.replace(
            tiny, name="small",
            transformer={**tiny.transformer, "num_attention_heads": 4, "attention_head_dim": 32, "in_channels": 32,
                         "out_channels": 16, "time_embed_dim": 64, "num_layers": 4},
            vae={**tiny.vae, "block_out_channels": [16, 32, 32, 32], "latent_channels": 16},
            lora_rank=8, lora_alpha=8.0, num_inference_steps=50)

    # --- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_noise_log_sigma"] = list(self.image_noise_log_sigma)
        d["lora_target_modules"] = list(self.lora_target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VideoModelConfig":
        """Inverse of `to_dict`; unknown or missing fields are an InputError."""
        if isinstance(d, dict):
            check_field_types(cls, d, "video model config")
        return config_from_dict(cls, d, "video model config")

    # --- derived sizes ---------------------------------------------------------------------------
    @property
    def vae_spatial_compression(self) -> int:
        return 2 ** (len(self.vae.get("block_out_channels", (128, 256, 256, 512))) - 1)

    @property
    def vae_temporal_compression(self) -> int:
        return int(self.vae.get("temporal_compression_ratio", 4))

    @property
    def latent_channels(self) -> int:
        return int(self.vae.get("latent_channels", 16))

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // self.vae_temporal_compression + 1

    @property
    def latent_height(self) -> int:
        return self.height // self.vae_spatial_compression

    @property
    def latent_width(self) -> int:
        return self.width // self.vae_spatial_compression

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """[T, C, h, w] of one video's latents (the sampler's output, the LaLRM's input)."""
        return self.latent_frames, self.latent_channels, self.latent_height, self.latent_width

    @property
    def text_shape(self) -> tuple[int, int]:
        """[tokens, dim] of the prompt embeddings the transformer reads (T5-XXL for the paper model)."""
        t = self.transformer
        return int(t.get("max_text_seq_length", 226)), int(t.get("text_embed_dim", 4096))

    @property
    def inner_dim(self) -> int:
        return int(self.transformer["num_attention_heads"]) * int(self.transformer["attention_head_dim"])

    def validate(self) -> None:
        """Cross-checks between the parts, with what to change when they disagree."""
        t = self.transformer
        for key in ("num_attention_heads", "attention_head_dim", "in_channels", "num_layers"):
            if key not in t:
                raise InputError(f"video model config: transformer lacks {key!r}",
                                 "give all sizes explicitly (class defaults differ from the checkpoints)")
        patch = int(t.get("patch_size", 2))
        if t.get("patch_size_t") is not None or t.get("ofs_embed_dim"):
            raise InputError("video model config: patch_size_t / ofs_embed_dim (CogVideoX 1.5 layout) are "
                             "not supported", "use the CogVideoX 1.0 layout of CogVideoX-5B-I2V (both None)")
        if int(t["in_channels"]) != 2 * self.latent_channels or \
                int(t.get("out_channels", 16)) != self.latent_channels:
            raise InputError(
                f"video model config: transformer in/out channels {t['in_channels']}/{t.get('out_channels')} "
                f"do not fit the VAE's {self.latent_channels} latent channels",
                "image-to-video needs in_channels = 2 x latent_channels (noisy + image) and "
                "out_channels = latent_channels")
        if (self.num_frames - 1) % self.vae_temporal_compression:
            raise InputError(f"video model config: num_frames = {self.num_frames} is not 1 + 4k",
                             "use 49 (paper) or another 1 + 4k frame count")
        step = self.vae_spatial_compression * patch
        if self.height % step or self.width % step:
            raise InputError(f"video model config: {self.width}x{self.height} is not a multiple of {step}",
                             f"the VAE (x{self.vae_spatial_compression}) and patches (x{patch}) need it")
        if t.get("use_learned_positional_embeddings") and (
                int(t.get("sample_height", 60)) != self.latent_height
                or int(t.get("sample_width", 90)) != self.latent_width
                or int(t.get("sample_frames", 49)) != self.num_frames):
            raise InputError(
                "video model config: learned positional embeddings fix the video size to the "
                f"transformer's sample size, which disagrees with {self.num_frames}x{self.height}x{self.width}",
                "set sample_frames = num_frames, sample_height = height / 8, sample_width = width / 8")
        if not 0 < self.controlnet_layers <= int(t["num_layers"]):
            raise InputError(f"video model config: controlnet_layers = {self.controlnet_layers} is outside "
                             f"1..{t['num_layers']}", "K must be between 1 and the number of blocks")
        if self.lora_rank < 1:
            raise InputError(f"video model config: lora_rank = {self.lora_rank}", "use a rank >= 1")
        if not 0.0 <= self.controlnet_fraction <= 1.0:
            raise InputError(f"video model config: controlnet_fraction = {self.controlnet_fraction}",
                             "use a fraction in [0, 1]")


def _cogvideox_scheduler() -> dict[str, Any]:
    """CogVideoX-5B(-I2V)'s scheduler settings (its scheduler_config.json)."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, set_alpha_to_one=True, steps_offset=0, prediction_type="v_prediction",
                clip_sample_range=1.0, sample_max_value=1.0, timestep_spacing="trailing",
                rescale_betas_zero_snr=True, snr_shift_scale=1.0)


def build_vae(config: VideoModelConfig) -> AutoencoderKLCogVideoX:
    """A randomly initialised VAE of the config's shape (load real weights with `from_pretrained`)."""
    return AutoencoderKLCogVideoX(**config.vae)


def build_scheduler(config: VideoModelConfig) -> CogVideoXDPMScheduler:
    return CogVideoXDPMScheduler(**config.scheduler)


def _zero_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class CameraPatchEmbed(nn.Module):
    """Grouped Plücker maps [B, T, 24, h, w] -> camera tokens [B, T*(h/p)*(w/p), D] in the token order of
    diffusers' CogVideoXPatchEmbed (frame, then row, then column), so token i covers the same pixels
    as video token i."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, zero_init: bool):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, cams: Tensor) -> Tensor:
        b, t, c, h, w = cams.shape
        tokens = self.proj(cams.reshape(b * t, c, h, w))           # [B*T, D, h/p, w/p]
        return tokens.flatten(2).transpose(1, 2).reshape(b, -1, tokens.shape[1])


class CameraControlledTransformer(nn.Module):
    """CogVideoX-I2V transformer with Wonderland's ControlNet and LoRA camera branches.

    Build from a config (random weights; use `torch.device("meta")` for shape checks of `paper()`), or
    pass `base=` a loaded `CogVideoXTransformer3DModel` so that the ControlNet starts as a copy of its
    pretrained blocks (for training). For inference, build under `torch.device("meta")` around a loaded
    base, so that no random weights are made, then `load_camera_state_dict` fills the camera branches.
    New parts are created in fp32: call `.to(device, dtype)` on the whole model afterwards.
    """

    def __init__(self, config: VideoModelConfig, base: CogVideoXTransformer3DModel | None = None):
        super().__init__()
        self.config = config
        self.base = base if base is not None else CogVideoXTransformer3DModel(**config.transformer)
        differ = sorted(k for k, v in config.transformer.items() if self.base.config.get(k) != v)
        if differ:
            raise InputError(f"the base transformer's config differs from the video model config in {differ}",
                             "load the base that the config describes, or save the config that fits it")
        if getattr(self.base, "peft_config", None):
            raise InputError("the base transformer already carries LoRA adapters",
                             "pass a plain CogVideoXTransformer3DModel; the camera LoRA is added here")
        dim, patch, k = config.inner_dim, int(config.transformer.get("patch_size", 2)), config.controlnet_layers
        cam_channels = PLUCKER_CHANNELS * config.vae_temporal_compression

        # ControlNet branch: copied before LoRA goes into the base, so the copy holds plain Linears.
        self.controlnet_blocks = copy.deepcopy(self.base.transformer_blocks[:k])
        self.controlnet_camera_embed = CameraPatchEmbed(cam_channels, dim, patch, zero_init=True)
        self.controlnet_out = nn.ModuleList(_zero_linear(dim) for _ in range(k))

        # LoRA branch: camera tokens joined to the video tokens through a zero projection, LoRA on attention.
        self.lora_camera_embed = CameraPatchEmbed(cam_channels, dim, patch, zero_init=False)
        self.lora_camera_proj = _zero_linear(dim)
        self.base.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                                         target_modules=list(config.lora_target_modules),
                                         init_lora_weights=True), adapter_name=LORA_ADAPTER)

    # --- parameters and state --------------------------------------------------------------------
    @staticmethod
    def _is_camera_name(name: str) -> bool:
        return not name.startswith("base.") or ".lora_" in name

    def camera_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable camera branches: ControlNet copy, zero linears, camera embeddings, LoRA."""
        return (p for n, p in self.named_parameters() if self._is_camera_name(n))

    def base_parameters(self) -> Iterator[nn.Parameter]:
        """The frozen CogVideoX weights (without LoRA)."""
        return (p for n, p in self.named_parameters() if not self._is_camera_name(n))

    def camera_state_dict(self) -> dict[str, Tensor]:
        """Our own file's content (safetensors-ready): every camera-branch weight, by module path.
        The base stays in diffusers' layout, loaded with `CogVideoXTransformer3DModel.from_pretrained`."""
        return {n: p.detach().contiguous() for n, p in self.named_parameters() if self._is_camera_name(n)}

    def load_camera_state_dict(self, state: dict[str, Tensor]) -> None:
        """Loads `camera_state_dict()` output; refuses missing, extra or mis-shaped tensors."""
        expected = {n: p for n, p in self.named_parameters() if self._is_camera_name(n)}
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise InputError(
                f"camera weights do not match this video model: {len(missing)} missing "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})",
                "use camera weights trained for the same config (controlnet_layers, lora_rank, sizes)")
        wrong = [(n, tuple(state[n].shape), tuple(p.shape)) for n, p in expected.items()
                 if tuple(state[n].shape) != tuple(p.shape)]
        if wrong:
            raise InputError(f"camera weights have the wrong shapes, e.g. {wrong[:3]} (file, model)",
                             "use camera weights trained for the same config")
        if any(p.is_meta for p in expected.values()):
            # Camera branches built without values (meta device): take the loaded tensors themselves.
            self.load_state_dict(dict(state), strict=False, assign=True)
            return
        with torch.no_grad():
            for n, p in expected.items():
                p.copy_(state[n].to(dtype=p.dtype))

    # --- camera input ----------------------------------------------------------------------------
    def group_plucker(self, plucker: Tensor, latent_frames: int, height: int, width: int) -> Tensor:
        """[B, F, 6, h, w] per video frame, or already grouped [B, T, 24, h, w] -> [B, T, 24, h, w]."""
        cam_channels = PLUCKER_CHANNELS * self.config.vae_temporal_compression
        frames = (latent_frames - 1) * self.config.vae_temporal_compression + 1
        if plucker.ndim == 5 and plucker.shape[1:3] == (frames, PLUCKER_CHANNELS):
            plucker = group_frames_for_latents(plucker)
        if plucker.ndim != 5 or tuple(plucker.shape[1:]) != (latent_frames, cam_channels, height, width):
            raise InputError(
                f"Plücker maps of shape {tuple(plucker.shape)} do not fit latents of {latent_frames} frames at "
                f"{height}x{width}",
                f"pass [B, {frames}, 6, {height}, {width}] (one map per video frame at the latent grid: "
                f"plucker_embedding(cameras, {height}, {width})) or grouped [B, {latent_frames}, "
                f"{cam_channels}, {height}, {width}]")
        return plucker

    # --- forward ---------------------------------------------------------------------------------
    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Tensor,
                plucker: Tensor, image_rotary_emb: tuple[Tensor, Tensor] | None = None,
                use_controlnet: bool = True) -> Tensor:
        """hidden_states [B, T, 2C, h, w] (noisy latents and image latents on channels), prompt embeddings
        [B, L, D_text], timestep [B], Plücker maps (see `group_plucker`) -> prediction [B, T, C, h, w]
        (v-prediction for the paper scheduler), exactly what `base(...).sample` returns at init.
        `use_controlnet=False` skips the ControlNet branch (the LoRA branch always runs)."""
        b, t, _, h, w = hidden_states.shape
        cams = self.group_plucker(plucker, t, h, w).to(hidden_states.dtype)
        if cams.shape[0] != b:
            raise InputError(f"Plücker batch {cams.shape[0]} differs from the latent batch {b}",
                             "give one camera trajectory per video in the batch")
        residuals: list[Tensor] = []
        temb: list[Tensor] = []

        def keep_time_embedding(module, args, output):
            temb.append(output)

        def join_camera_tokens(module, args, output):
            # output = [text tokens | video tokens], what the first block will read.
            lora_tokens = self.lora_camera_proj(self.lora_camera_embed(cams))
            text, video = output[:, :-lora_tokens.shape[1]], output[:, -lora_tokens.shape[1]:]
            if use_controlnet:
                residuals.extend(self._controlnet(video + self.controlnet_camera_embed(cams), text,
                                                  temb[0], image_rotary_emb))
            return torch.cat([text, video + lora_tokens], dim=1)

        def add_residual(index):
            def hook(module, args, output):
                return (output[0] + residuals[index],) + tuple(output[1:])
            return hook

        handles = [self.base.time_embedding.register_forward_hook(keep_time_embedding),
                   self.base.patch_embed.register_forward_hook(join_camera_tokens)]
        if use_controlnet:
            handles += [self.base.transformer_blocks[i].register_forward_hook(add_residual(i))
                        for i in range(len(self.controlnet_out))]
        try:
            return self.base(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                             timestep=timestep, image_rotary_emb=image_rotary_emb, return_dict=False)[0]
        finally:
            for handle in handles:
                handle.remove()

    def _controlnet(self, hidden: Tensor, text: Tensor, temb: Tensor, rotary) -> list[Tensor]:
        """Runs the copied blocks; returns each block's zero-linear output (one residual per main block)."""
        out = []
        checkpoint = torch.is_grad_enabled() and self.base.gradient_checkpointing
        for block, linear in zip(self.controlnet_blocks, self.controlnet_out):
            if checkpoint:
                hidden, text = torch.utils.checkpoint.checkpoint(
                    block, hidden, text, temb, rotary, use_reentrant=False)
            else:
                hidden, text = block(hidden_states=hidden, encoder_hidden_states=text, temb=temb,
                                     image_rotary_emb=rotary)
            out.append(linear(hidden))
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_modules(model: CameraControlledTransformer) -> dict[str, int]:
    """{module path: LoRA rank} of every base module that carries the camera adapter."""
    return {name: int(m.r[LORA_ADAPTER]) for name, m in model.base.named_modules()
            if hasattr(m, "lora_A") and LORA_ADAPTER in getattr(m, "r", {})}

