"""Per-pixel camera rays and their Plücker embedding [o × d, d], the camera conditioning of the
video model and of the LaLRM (shared/design/cameras.md)."""
from __future__ import annotations

import torch
from torch import Tensor

from backend.cameras import CameraBatch, crop_resize_intrinsics


def scale_intrinsics(K: Tensor, src_w: int, src_h: int, dst_w: int, dst_h: int) -> Tensor:
    """K [..., 3, 3] for a dst_w x dst_h pixel grid over the same image as src_w x src_h (no crop)."""
    return crop_resize_intrinsics(K, (0.0, 0.0, float(src_w), float(src_h)), dst_w, dst_h)


def camera_directions(K: Tensor, height: int, width: int) -> Tensor:
    """K⁻¹ [u + 0.5, v + 0.5, 1] at the pixel centres of a height x width grid (K [..., 3, 3] at that size):
    [..., H, W, 3] directions in the camera frame with z = 1, in K's dtype and device."""
    v, u = torch.meshgrid(torch.arange(height, dtype=K.dtype, device=K.device) + 0.5,
                          torch.arange(width, dtype=K.dtype, device=K.device) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)                           # [H, W, 3]
    return torch.einsum("...ij,hwj->...hwi", torch.linalg.inv(K), pix)


def pixel_rays(cameras: CameraBatch, height: int, width: int) -> tuple[Tensor, Tensor]:
    """World rays through the pixel centres (u + 0.5, v + 0.5) of a height x width grid over each image.

    Returns origins [N, H, W, 3] (the camera centres) and unit directions [N, H, W, 3], in the
    cameras' dtype and device.
    """
    K = scale_intrinsics(cameras.K, cameras.width, cameras.height, width, height)
    d_cam = camera_directions(K.to(dtype=cameras.c2w.dtype, device=cameras.c2w.device), height, width)
    d = torch.einsum("nij,nhwj->nhwi", cameras.c2w[:, :3, :3], d_cam)
    d = d / torch.linalg.norm(d, dim=-1, keepdim=True)
    o = cameras.c2w[:, None, None, :3, 3].expand_as(d)
    return o, d


def plucker_embedding(cameras: CameraBatch, height: int, width: int) -> Tensor:
    """[N, 6, H, W]: per pixel the moment o × d (channels 0-2), then the unit direction d (3-5)."""
    o, d = pixel_rays(cameras, height, width)
    return torch.cat([torch.cross(o, d, dim=-1), d], dim=-1).permute(0, 3, 1, 2).contiguous()


def group_frames_for_latents(x: Tensor) -> Tensor:
    """Per-frame maps [F, C, H, W] (or [B, F, C, H, W]) -> per-latent-frame maps [T, 4C, H, W].

    The CogVideoX VAE compresses time 4x causally: latent 0 holds frame 0, latent t ≥ 1 holds frames
    4t-3 .. 4t, so F = 1 + 4(T-1). Each group's four maps are stacked on channels frame-major
    ([f0 c0..cC-1, f1 c0.., ...]); group 0 is frame 0's map four times.
    """
    if x.ndim not in (4, 5):
        raise ValueError(f"group_frames_for_latents expects [F, C, H, W] or [B, F, C, H, W], got {tuple(x.shape)}")
    frames = x.shape[-4]
    if frames % 4 != 1:
        raise ValueError(f"group_frames_for_latents needs F = 1 + 4k frames (e.g. 49), got F = {frames}; "
                         "resample the trajectory to such a count first")
    first = x[..., :1, :, :, :]
    grouped = torch.cat([first.expand(*x.shape[:-4], 4, *x.shape[-3:]), x[..., 1:, :, :, :]], dim=-4)
    lead, (c, h, w) = x.shape[:-4], x.shape[-3:]
    return grouped.reshape(*lead, (frames + 3) // 4, 4 * c, h, w)
