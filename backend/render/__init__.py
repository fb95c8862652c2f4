"""Render Gaussians from cameras: one entry point, gsplat on CUDA, the compiled CPU rasterizer for
inference on the CPU, the pure-PyTorch rasterizer elsewhere (MPS, gradients, no numba, no gsplat build).

All paths follow gsplat's conventions (see reference.py), so a scene looks the same on each; gsplat and
the torch reference are differentiable with respect to every Gaussian parameter, the compiled path not.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from backend.cameras import CameraBatch
from backend.errors import InputError
from backend.gaussians import Gaussians

BACKENDS = ("auto", "gsplat", "compiled", "torch")
DIFFERENTIABLE_BACKENDS = ("auto", "gsplat", "torch")  # what training may render with


def check_training_renderer(name: str) -> None:
    """Refuse a renderer a trainer cannot use: unknown, or one without gradients (the compiled one)."""
    if name not in DIFFERENTIABLE_BACKENDS:
        raise InputError(f"renderer {name!r} is unknown or cannot train (it gives no gradients)",
                         f"use one of {', '.join(DIFFERENTIABLE_BACKENDS)}")


@dataclass
class RenderOutput:
    rgb: Tensor    # [N, H, W, 3] colour, background composited
    alpha: Tensor  # [N, H, W, 1] accumulated opacity, 1 - final transmittance
    depth: Tensor  # [N, H, W, 1] expected camera z (sum of w z / alpha; 0 where nothing is seen)


def render(gaussians: Gaussians, cameras: CameraBatch, width: int | None = None,
           height: int | None = None, background: Tensor | tuple | None = None,
           backend: str = "auto") -> RenderOutput:
    """Render every camera of the batch.

    width/height default to the cameras' size; another size renders the same image with another pixel
    count (K is scaled by w'/w and h'/h). background: RGB (tuple, [3] or [N, 3]) composited as
    rgb + (1 - alpha) * background; None is black. backend: "auto" (see pick_backend), "gsplat",
    "compiled" (CPU, no gradients) or "torch".
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown render backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    width = cameras.width if width is None else width
    height = cameras.height if height is None else height
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InputError(f"render {name} must be a positive integer, got {value!r}",
                             "pass the image size in pixels")
    device = gaussians.device
    backend = pick_backend(gaussians) if backend == "auto" else backend
    if backend == "gsplat" and device.type != "cuda":
        raise InputError(f"the gsplat renderer needs the Gaussians on a CUDA device, they are on {device}",
                         "use backend='torch' or move the Gaussians to CUDA with gaussians.to('cuda')")
    if backend == "compiled":
        if _wants_grad(gaussians):
            raise InputError("the compiled renderer returns images without gradients, but the Gaussians "
                             "require them", "use backend='torch' or 'gsplat' (or 'auto'), or render under "
                             "torch.no_grad()")
        from backend.render import compiled
        if compiled.unavailable_reason():
            raise InputError(compiled.unavailable_reason(), "or use backend='torch'")
    dtype = gaussians.means.dtype
    n_views = len(cameras)
    scale = torch.tensor([[width / cameras.width], [height / cameras.height], [1.0]], dtype=dtype,
                         device=device)
    K = cameras.K.to(device=device, dtype=dtype) * scale
    w2c = torch.linalg.inv(cameras.c2w.to(device=device, dtype=dtype))
    bg = _background(background, n_views, dtype, device)

    if len(gaussians) == 0:
        zeros = torch.zeros((n_views, height, width, 1), dtype=dtype, device=device)
        rgb, alpha, depth = zeros.expand(-1, -1, -1, 3), zeros, zeros
    elif backend == "gsplat":
        from backend.render.gsplat_backend import render_views
        rgb, alpha, depth = render_views(gaussians, w2c, K, width, height)
        rgb, alpha, depth = rgb.to(dtype), alpha.to(dtype), depth.to(dtype)
    elif backend == "compiled":
        from backend.render.compiled import render_views
        rgb, alpha, depth = render_views(gaussians, w2c, K, width, height)
        rgb, alpha, depth = rgb.to(device), alpha.to(device), depth.to(device)
    else:
        from backend.render.reference import render_views
        rgb, alpha, depth = render_views(gaussians, w2c, K, width, height)
    rgb = rgb + (1 - alpha) * bg[:, None, None, :]
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth)


_warned: set[str] = set()


def set_threads(threads: int | None) -> int:
    """Render with `threads` CPU threads (None or 0: one per core), in torch and the compiled rasterizer;
    returns the count in use. Blender passes its scene.render.threads."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 0):
        raise InputError(f"threads must be a whole number >= 0, got {threads!r}", "pass 0 for one thread per core")
    count = threads or os.cpu_count() or 1
    torch.set_num_threads(count)
    from backend.render import compiled
    return count if compiled.unavailable_reason() else compiled.set_threads(count)


def _wants_grad(gaussians: Gaussians) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in vars(gaussians).values())


def pick_backend(gaussians: Gaussians) -> str:
    """What "auto" renders with: gsplat on CUDA (our torch rasterizer where gsplat cannot build), the
    compiled rasterizer on the CPU unless gradients are wanted or numba is missing, else torch. A
    missing fast path is said once per process, as a RuntimeWarning."""
    device = gaussians.device
    if device.type == "cuda":
        from backend.render.gsplat_backend import unavailable_reason
        return "torch" if unavailable_reason() else "gsplat"
    if device.type != "cpu" or _wants_grad(gaussians):
        return "torch"
    from backend.render import compiled
    reason = compiled.unavailable_reason()
    if reason and reason not in _warned:
        _warned.add(reason)
        warnings.warn(reason, RuntimeWarning, stacklevel=3)
    return "torch" if reason else "compiled"


def _background(background, n_views: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The background as [N, 3]."""
    if background is None:
        return torch.zeros((n_views, 3), dtype=dtype, device=device)
    bg = torch.as_tensor(background, dtype=dtype, device=device)
    if bg.shape == (3,):
        return bg.expand(n_views, 3)
    if bg.shape == (n_views, 3):
        return bg
    raise InputError(f"background has shape {tuple(bg.shape)}, expected (3,) or ({n_views}, 3)",
                     "pass one RGB colour, e.g. (1.0, 1.0, 1.0), or one per camera")
