"""LaLRM: the latent large reconstruction model (paper.md, "Reconstruction stage").

It reads CogVideoX video latents directly (no VAE decode) together with full-resolution Plücker maps
of the same cameras, and predicts one pixel-aligned Gaussian per output pixel per frame. The latents
are those the video diffusion model denoises (VAE latents × scaling_factor, [B, T, C, h, w]); training
must encode its videos the same way.

    latents [B, T, C, h, w] --Conv2d(k=s=patch) per latent frame--> LayerNorm ┐
                                                                          concat -> Linear 2W -> W
    plucker [B, F, 6, H, W] --Conv3d(k=s=(4,16,16), pad (2,0,0))--> LayerNorm ┘
    -> pre-norm transformer blocks (SDPA) -> LayerNorm
    -> ConvTranspose3d(k=(5,8,8), s=(4,8,8), pad (2,0,0)) -> raw [B, F, H/2, W/2, 12]

Gaussians come out in the normalized camera frame of backend cameras (cameras.md: poses relative to
camera 0, translations scaled so that the largest camera distance from camera 0 is 1.0). The distance
head's near/far and the scale cap are in those units: near 0.1 and far 20 span a close object in
front of a 1-unit camera path up to a background 20× the path length; a scale cap of 0.3 is the
GS-LRM rule "0.3 × scene extent" for a path of extent ~1 (gaussians.md).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from backend.cameras import CameraBatch
from backend.errors import InputError
from backend.gaussians import Gaussians
from backend.heads import RAW_CHANNELS, gaussians_from_raw
from backend.models.weights import SingleFileModel, config_from_dict
from backend.plucker import pixel_rays, plucker_embedding

PLUCKER_CHANNELS = 6
CONFIG_METADATA_KEY = "lalrm_config"  # the config's JSON inside a weights file's safetensors header


@dataclass
class LaLRMConfig:
    """Every shape of the model. The defaults are the paper's; `tiny()` is the same code, small.

    Geometry is checked when the config is made: the video must be 1 + vae_temporal·k frames, the
    latent grid divisible by the patch, the camera convolution must give exactly the latent token
    grid, and the head must give back num_frames frames.
    """
    num_frames: int = 49                 # video frames F (and cameras); latent frames T = 1 + (F-1)/4
    height: int = 480                    # pixel size the cameras and the video share
    width: int = 720
    latent_channels: int = 16            # CogVideoX VAE latent channels
    vae_temporal_factor: int = 4
    vae_spatial_factor: int = 8
    patch_size: int = 2                  # latent patch: Conv2d kernel = stride
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    camera_kernel: tuple[int, int, int] = (4, 16, 16)  # Conv3d over Plücker maps: kernel = stride
    camera_temporal_padding: int = 2
    head_kernel: tuple[int, int, int] = (5, 8, 8)      # ConvTranspose3d to the Gaussian grid
    head_stride: tuple[int, int, int] = (4, 8, 8)
    head_temporal_padding: int = 2
    near: float = 0.1                    # distance head range, normalized units (module docstring)
    far: float = 20.0
    max_scale: float = 0.3
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("camera_kernel", "head_kernel", "head_stride"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self._validate()

    # Named configurations -------------------------------------------------------------------------
    @classmethod
    def paper(cls) -> "LaLRMConfig":
        """The paper's model: 49 frames at 480×720, 24 blocks of width 1024 (~17,550 tokens)."""
        return cls()

    @classmethod
    def paper_low_res(cls) -> "LaLRMConfig":
        """The paper's first (low resolution) training stage, same weights shapes.

        The paper trains at 240×360, but that gives a 30×45 latent grid that patch 2 does not divide;
        256×384 (32×48 latents, 16×24 tokens per latent frame) is the nearest size that works and
        keeps the 2:3 aspect.
        """
        return cls(height=256, width=384)

    @classmethod
    def tiny(cls) -> "LaLRMConfig":
        """Same code at test size: 9 frames (3 latent frames) of 64×96 px, width 64, 2 blocks."""
        return cls(num_frames=9, height=64, width=96, hidden_size=64, num_layers=2, num_heads=2)

    # Derived shapes -------------------------------------------------------------------------------
    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // self.vae_temporal_factor + 1

    @property
    def latent_size(self) -> tuple[int, int]:
        """(h, w) of the VAE latents."""
        return self.height // self.vae_spatial_factor, self.width // self.vae_spatial_factor

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """One video's latents in CogVideoX layout (T, C, h, w)."""
        return (self.latent_frames, self.latent_channels, *self.latent_size)

    @property
    def token_grid(self) -> tuple[int, int, int]:
        h, w = self.latent_size
        return self.latent_frames, h // self.patch_size, w // self.patch_size

    @property
    def num_tokens(self) -> int:
        t, h, w = self.token_grid
        return t * h * w

    @property
    def camera_grid(self) -> tuple[int, int, int]:
        """What the camera Conv3d makes of F×H×W Plücker maps (stride = kernel)."""
        kt, kh, kw = self.camera_kernel
        return ((self.num_frames + 2 * self.camera_temporal_padding - kt) // kt + 1,
                (self.height - kh) // kh + 1, (self.width - kw) // kw + 1)

    @property
    def output_grid(self) -> tuple[int, int, int]:
        """(frames, height, width) of the Gaussian grid the head makes of the token grid."""
        sizes = []
        for axis, n in enumerate(self.token_grid):
            pad = self.head_temporal_padding if axis == 0 else 0
            sizes.append((n - 1) * self.head_stride[axis] - 2 * pad + self.head_kernel[axis])
        return tuple(sizes)

    def _validate(self) -> None:
        def fail(problem: str, hint: str) -> None:
            raise InputError(f"invalid LaLRM config ({self.num_frames} frames at {self.height}×"
                             f"{self.width}): {problem}", hint)

        positive = ("num_frames", "height", "width", "latent_channels", "vae_temporal_factor",
                    "vae_spatial_factor", "patch_size", "hidden_size", "num_layers", "num_heads")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(f"{name} must be a positive integer, got {value!r}", "use a positive integer")
        factor = self.vae_temporal_factor
        if (self.num_frames - 1) % factor:
            fail(f"the video VAE needs 1 + {factor}·k frames",
                 f"use e.g. {1 + factor * max(1, round((self.num_frames - 1) / factor))}")
        step = self.vae_spatial_factor * self.patch_size
        if self.height % step or self.width % step:
            h, w = self.height // self.vae_spatial_factor, self.width // self.vae_spatial_factor
            fail(f"the {h}×{w} latent grid is not divisible by the latent patch {self.patch_size}",
                 f"use a height and width divisible by {step}, e.g. "
                 f"{-(-self.height // step) * step}×{-(-self.width // step) * step}")
        if self.hidden_size % self.num_heads:
            fail(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}",
                 "pick a width that is a multiple of the head count")
        if self.camera_grid != self.token_grid:
            fail(f"the camera Conv3d (kernel = stride = {self.camera_kernel}, temporal padding "
                 f"{self.camera_temporal_padding}) gives a {self.camera_grid} grid, but the latents give "
                 f"{self.token_grid} tokens", "make the camera kernel (vae_temporal_factor, "
                 "vae_spatial_factor·patch, vae_spatial_factor·patch)")
        if self.output_grid[0] != self.num_frames:
            fail(f"the head makes {self.output_grid[0]} frames of Gaussians from {self.token_grid[0]} "
                 f"latent frames, not {self.num_frames}", "match the head's temporal kernel, stride and "
                 "padding to the VAE's temporal factor, e.g. (5, 4, 2) for factor 4")
        if not 0 < self.near < self.far:
            fail(f"near {self.near} and far {self.far} must satisfy 0 < near < far", "fix near/far")
        if not self.max_scale > 0:
            fail(f"max_scale must be > 0, got {self.max_scale}", "use e.g. 0.3")

    # JSON -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> "LaLRMConfig":
        return config_from_dict(cls, data, source="LaLRM config")


def gaussian_count(config: LaLRMConfig) -> int:
    """Gaussians per video before pruning: one per output pixel per frame (4,233,600 for the paper)."""
    f, h, w = config.output_grid
    return f * h * w


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x)); attention through SDPA (flash/fused)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, c // self.num_heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v)           # [b, heads, n, c/heads]
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class LaLRM(SingleFileModel, nn.Module):
    """Video latents + Plücker maps -> raw per-pixel Gaussian parameters (see the module docstring)."""

    def __init__(self, config: LaLRMConfig, gradient_checkpointing: bool = False):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = gradient_checkpointing
        c = config
        self.latent_embed = nn.Conv2d(c.latent_channels, c.hidden_size, c.patch_size, stride=c.patch_size)
        self.latent_norm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.camera_embed = nn.Conv3d(PLUCKER_CHANNELS, c.hidden_size, c.camera_kernel, stride=c.camera_kernel,
                                      padding=(c.camera_temporal_padding, 0, 0))
        self.camera_norm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.fuse = nn.Linear(2 * c.hidden_size, c.hidden_size)
        self.blocks = nn.ModuleList(TransformerBlock(c.hidden_size, c.num_heads, c.mlp_ratio, c.norm_eps)
                                    for _ in range(c.num_layers))
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.head = nn.ConvTranspose3d(c.hidden_size, RAW_CHANNELS, c.head_kernel, stride=c.head_stride,
                                       padding=(c.head_temporal_padding, 0, 0))
        self.apply(_init_weights)

    @classmethod
    def from_config(cls, config: LaLRMConfig | dict, **kwargs) -> "LaLRM":
        return cls(config if isinstance(config, LaLRMConfig) else LaLRMConfig.from_dict(config), **kwargs)

    # Weights with their config (SingleFileModel: save_pretrained, pretrained_config, from_pretrained) ------
    config_class, config_key = LaLRMConfig, CONFIG_METADATA_KEY
    kind, made_by = "LaLRM", "save LaLRM weights with LaLRM.save_pretrained"

    # Network ----------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.fuse.weight.dtype

    def _check_inputs(self, latents: Tensor, plucker: Tensor) -> None:
        c = self.config
        if latents.ndim != 5 or tuple(latents.shape[1:]) != c.latent_shape:
            raise ValueError(f"LaLRM expects latents [B, {', '.join(map(str, c.latent_shape))}] "
                             f"(B, T, C, h, w; CogVideoX layout), got {tuple(latents.shape)}")
        expected = (latents.shape[0], c.num_frames, PLUCKER_CHANNELS, c.height, c.width)
        if tuple(plucker.shape) != expected:
            raise ValueError(f"LaLRM expects Plücker maps {list(expected)} (B, F, 6, H, W at full "
                             f"resolution), got {list(plucker.shape)}")

    def tokens(self, latents: Tensor, plucker: Tensor) -> Tensor:
        """Fused latent + camera tokens [B, T·h'·w', width], ordered frame, row, column."""
        self._check_inputs(latents, plucker)
        b, t, ch, h, w = latents.shape
        x = self.latent_embed(latents.to(self.dtype).reshape(b * t, ch, h, w))   # [B·T, W, h', w']
        x = x.reshape(b, t, *x.shape[1:]).permute(0, 1, 3, 4, 2).flatten(1, 3)   # [B, T·h'·w', W]
        cam = self.camera_embed(plucker.to(self.dtype).transpose(1, 2))         # [B, W, T, h', w']
        cam = cam.flatten(2).transpose(1, 2)
        return self.fuse(torch.cat([self.latent_norm(x), self.camera_norm(cam)], dim=-1))

    def forward(self, latents: Tensor, plucker: Tensor) -> Tensor:
        """latents [B, T, C, h, w], plucker [B, F, 6, H, W] -> raw [B, F_out, H_out, W_out, 12]."""
        x = self.tokens(latents, plucker)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.norm(x)
        b, (t, h, w) = x.shape[0], self.config.token_grid
        raw = self.head(x.transpose(1, 2).reshape(b, -1, t, h, w))             # [B, 12, F, H_out, W_out]
        return raw.permute(0, 2, 3, 4, 1)

    def predict_gaussians(self, latents: Tensor, cameras_normalized: CameraBatch,
                          prune_opacity: float | None = None, max_count: int | None = None) -> Gaussians:
        """Gaussians of one video in the normalized camera frame (float32, frame-major pixel order).

        `latents` is [T, C, h, w] or [1, T, C, h, w]; `cameras_normalized` holds the F cameras at the
        model's pixel size. Each Gaussian sits on its output pixel's ray (K scaled to the output grid)
        at the predicted distance. Pruning and the cap are for inference (see select_gaussians).
        """
        c = self.config
        if latents.ndim == len(c.latent_shape):
            latents = latents[None]
        if latents.shape[0] != 1:
            raise ValueError(f"predict_gaussians takes one video's latents, got a batch of {latents.shape[0]}")
        cams = cameras_normalized
        if len(cams) != c.num_frames or (cams.width, cams.height) != (c.width, c.height):
            raise ValueError(f"LaLRM needs {c.num_frames} cameras at {c.width}×{c.height} px, got "
                             f"{len(cams)} at {cams.width}×{cams.height}: resample and rescale the "
                             "trajectory first")
        device = self.fuse.weight.device
        cams = cams.to(device)
        plucker = plucker_embedding(cams, c.height, c.width)[None]
        raw = self(latents.to(device), plucker)[0].float()
        return select_gaussians(self.raw_to_gaussians(raw, cams), prune_opacity, max_count)

    def raw_to_gaussians(self, raw: Tensor, cameras: CameraBatch) -> Gaussians:
        """One video's raw output [F, H_out, W_out, 12] -> Gaussians on the rays of its output pixels."""
        c = self.config
        origins, dirs = pixel_rays(cameras, raw.shape[1], raw.shape[2])
        return gaussians_from_raw(raw, origins.to(raw.dtype), dirs.to(raw.dtype), c.near, c.far, c.max_scale)


def select_gaussians(gaussians: Gaussians, min_opacity: float | None = None,
                     max_count: int | None = None) -> Gaussians:
    """Drop Gaussians with opacity < min_opacity, then keep the max_count most opaque.

    Ties are broken by position in the input (earlier first), so the result is deterministic; the
    kept Gaussians stay in their input order.
    """
    keep = torch.arange(len(gaussians), device=gaussians.device)
    opacity = gaussians.opacities.detach()
    if min_opacity is not None:
        keep = keep[opacity >= min_opacity]
    if max_count is not None:
        if max_count < 0:
            raise ValueError(f"max_count must be >= 0, got {max_count}")
        if len(keep) > max_count:
            order = torch.sort(opacity[keep], descending=True, stable=True).indices[:max_count]
            keep = keep[order].sort().values
    return gaussians if len(keep) == len(gaussians) else gaussians[keep]


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal(0.02) weights and zero biases, as GS-LRM / ViT train from scratch."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
