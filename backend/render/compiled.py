"""The compiled CPU rasterizer: numba kernels (compiled_kernels.py) behind reference.py's conventions.

Why numba: it ships prebuilt wheels for every Python and OS Blender runs on (numba 0.63.1: CPython 3.11 and
3.13 on Linux x86_64, macOS arm64 (12+) and Windows x86_64; numpy 1.22-2.3), so users need no compiler.
Its JIT costs seconds once per machine: kernels are cached (`cache=True`) in a user-writable folder, never
the package folder (it may be read-only), and `python -m backend warm-render` fills that cache at install.
Threads: numba's "workqueue" layer, its own plain threads, so that it never loads a second OpenMP runtime
beside torch's (two runtimes in one process abort on macOS) nor fights torch's pool; the two run one
after the other, never at once. Inference only (no gradients): training keeps the torch reference.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from backend.gaussians import Gaussians
from backend.render.compiled_buffers import WorkBuffers
from backend.render.sh import sh_to_rgb

NUMBA_PIN = "numba==0.63.1"
_kernels = None
_missing: str | None = None
BUFFERS = WorkBuffers()  # reused from frame to frame (fresh arrays cost page faults); renders take turns


def cache_dir() -> Path:
    """Where numba keeps compiled kernels: the user's cache folder (WONDERLAND_CACHE_DIR overrides)."""
    if os.environ.get("WONDERLAND_CACHE_DIR"):
        return Path(os.environ["WONDERLAND_CACHE_DIR"]) / "numba"
    if sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches"
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "wonderland" / "numba"


def _writable_cache_dir() -> Path:
    """cache_dir(), or a folder in the temporary directory where that one cannot be written."""
    user = os.getuid() if hasattr(os, "getuid") else os.getpid()
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / f"wonderland-numba-{user}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                return folder
        except OSError:
            continue
    raise OSError(f"no writable folder for numba's cache ({cache_dir()} is not writable)")


def unavailable_reason() -> str | None:
    """None when the compiled rasterizer can run; else why not and how to get it (imports numba once)."""
    global _kernels, _missing
    if _kernels is None and _missing is None:
        try:
            if "NUMBA_CACHE_DIR" not in os.environ:  # the caller's choice stands; no folder is made then
                os.environ["NUMBA_CACHE_DIR"] = str(_writable_cache_dir())
            os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
            import numba
            # numba reads its environment when first imported; someone may have imported it before us.
            numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
            numba.config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"]
            from backend.render import compiled_kernels
            _kernels = compiled_kernels
        except (ImportError, OSError) as e:
            _missing = (f"the compiled CPU rasterizer is unavailable ({type(e).__name__}: {e}); rendering with "
                        f"the slower PyTorch rasterizer instead. To fix it, install numba into the backend's "
                        f"environment: pip install {NUMBA_PIN}")
    return _missing


def kernel_cache_dir() -> str:
    """The folder numba caches the kernels in for this process."""
    return os.environ.get("NUMBA_CACHE_DIR", str(cache_dir()))


def set_threads(threads: int | None) -> int:
    """Use `threads` CPU threads for rendering (None or 0: all cores); returns the count in use."""
    if unavailable_reason():
        raise RuntimeError(_missing)
    import numba
    most = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(most if not threads else max(1, min(int(threads), most)))
    return numba.get_num_threads()


def render_views(gaussians: Gaussians, w2c: Tensor, K: Tensor, width: int,
                 height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Render C views on the CPU; returns (rgb without background [C,H,W,3], alpha, depth) as torch
    tensors in the Gaussians' dtype. No gradients flow through it."""
    if unavailable_reason():
        raise RuntimeError(_missing)
    import numba
    k = _kernels
    g = gaussians.detach().to(device="cpu", dtype=torch.float32)
    means, quats = (np.ascontiguousarray(v.numpy()) for v in (g.means, g.quats))
    tiles_x, tiles_y = -(-width // k.TILE), -(-height // k.TILE)
    chunks = 4 * numba.get_num_threads()  # parts of the Gaussians binned in parallel
    out = torch.empty((len(w2c), height, width, 5))
    with BUFFERS.borrow() as take:
        scales, opacities = take("scales", (len(means), 3), np.float32), take("opacities", (len(means),), np.float32)
        torch.exp(g.log_scales, out=torch.from_numpy(scales))  # Gaussians.scales, into a kept array
        torch.sigmoid(g.opacity_logits, out=torch.from_numpy(opacities))
        rows = take("rows", (len(means), k.ROW_COLUMNS), np.float32)  # read only where boxes are set
        boxes = take("boxes", (len(means), 4), np.int32)
        for view in range(len(w2c)):
            w2c_v, K_v = w2c[view].detach().double().cpu(), K[view].detach().double().cpu()
            intrinsics = np.array([K_v[0, 0], K_v[1, 1], K_v[0, 2], K_v[1, 2]])
            k.project(means, quats, scales, opacities, w2c_v[:3].numpy(), intrinsics, width, height, rows, boxes)
            if g.sh_degree == 0:  # view-independent: the kernel takes the DC coefficients
                colors = g.sh0.numpy()
            else:  # colours of the projected Gaussians, in input order
                index = torch.from_numpy(np.flatnonzero(boxes[:, 1] >= boxes[:, 0]))
                campos = torch.linalg.inv(w2c_v)[:3, 3].float()
                sh = torch.cat([g.sh0.index_select(0, index)[:, None], g.sh_rest.index_select(0, index)], dim=1)
                colors = take("colors", (len(means), 3), np.float32)
                colors[index.numpy()] = sh_to_rgb(sh, g.means.index_select(0, index) - campos).numpy()
            counts = k.count_tiles(boxes, tiles_x, tiles_y, chunks)
            offsets = np.zeros(tiles_x * tiles_y + 1, np.int64)
            np.cumsum(counts.sum(axis=0), out=offsets[1:])
            starts = offsets[:-1] + np.cumsum(counts, axis=0) - counts  # each part's first slot in each tile
            records = take("records", (int(offsets[-1]), k.RECORD_COLUMNS), np.float32)
            k.fill_tiles(rows, boxes, colors, g.sh_degree == 0, starts, tiles_x, records)
            k.rasterize(records, offsets, width, height, tiles_x, out[view].numpy())
    out = out.to(gaussians.means.dtype)
    return out[..., :3], out[..., 3:4], out[..., 4:5]


def free_buffers() -> int:
    """Hand the work arrays kept between renders back; returns the bytes freed."""
    return BUFFERS.free()


def warm() -> float:
    """Compile (or load from the cache) every kernel by rendering a tiny scene; returns the seconds taken."""
    import time
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    gaussians = Gaussians(means=torch.rand(64, 3, generator=gen) + torch.tensor([-0.5, -0.5, 2.0]),
                          log_scales=torch.full((64, 3), -3.0), quats=torch.randn(64, 4, generator=gen),
                          opacity_logits=torch.zeros(64), sh0=torch.rand(64, 3, generator=gen), sh_rest=None)
    K = torch.tensor([[[20.0, 0, 10], [0, 20.0, 10], [0, 0, 1]]])
    render_views(gaussians, torch.eye(4)[None], K, 20, 20)
    return time.perf_counter() - start
