"""Ground-truth depth maps for training: read, masked at silhouettes, cropped and resized like the frames.

A scene folder may hold `depth/NNNN.npy` beside `frames/` (tools/synthetic_scenes.py writes them): float32
[H, W], Cycles' camera z-depth (along the view axis, OpenCV z) in world units, anti-aliased like the colour,
so a pixel on an object's silhouette holds a blend of the near and far depths, a depth where no surface is.

Invalid pixels are 0 in every depth map this module returns (a depth is > 0 where it is meant): pixels
that are not finite and positive, pixels where no surface is (Cycles writes 1e10 where a ray hits nothing,
e.g. the sky beyond an open room's side; a share of it in an anti-aliased pixel exceeds NO_SURFACE_DEPTH
too), and silhouette pixels, those whose 3x3 neighbourhood spans more than
SILHOUETTE_LOG_STEP in log depth (the mixed pixel itself and the clean pixels beside the edge, whose
rendered depth is a blend too at any finite resolution). The mask is made at the file's resolution; a
resized pixel is valid only when every source pixel it mixes is (its resampled validity is ~1), so
resampling never invents a depth between two surfaces either.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from backend.errors import InputError

DEPTH_DIR = "depth"
SILHOUETTE_LOG_STEP = 0.1   # 10 % relative depth change to a neighbour: a depth edge, not a slanted surface
NO_SURFACE_DEPTH = 1e4     # world units: at or beyond it a pixel shows no surface (Cycles' background is 1e10)
FULL_VALIDITY = 0.999       # resampled validity above this: every mixed source pixel was valid


def depth_file_name(index: int) -> str:
    """The depth map of the frame at `index` in the scene's frame list."""
    return f"{index:04d}.npy"


def surface_mask(depth: np.ndarray) -> np.ndarray:
    """bool: True where a depth map shows a surface (finite, > 0, short of NO_SURFACE_DEPTH's sky)."""
    return np.isfinite(depth) & (depth > 0) & (depth < NO_SURFACE_DEPTH)


def silhouette_mask(depth: np.ndarray) -> np.ndarray:
    """bool [H, W]: True where the depth is usable (a surface, not on a silhouette; module docstring)."""
    good = surface_mask(depth)
    log = np.log(np.where(good, depth, 1.0))
    padded = np.pad(log, 1, mode="edge")
    good_padded = np.pad(good, 1, mode="edge")
    height, width = depth.shape
    valid = good.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near = padded[dy:dy + height, dx:dx + width]
            valid &= good_padded[dy:dy + height, dx:dx + width] & (np.abs(near - log) <= SILHOUETTE_LOG_STEP)
    return valid


def load_depth(path: Path, size: tuple[int, int], box: tuple[float, float, float, float], width: int,
               height: int) -> np.ndarray:
    """The `box` (x0, y0, w, h in pixels of a `size` = (W, H) map) of a depth file resized to width x height,
    float32 [height, width], 0 where invalid (module docstring). A map of another size is an InputError."""
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read depth map {path}: {e}",
                         "render the scene again, or remove its depth/ folder to train it without depth") from None
    if depth.shape != (size[1], size[0]):
        raise InputError(f"depth map {path} is {depth.shape[1::-1] if depth.ndim == 2 else depth.shape}, but its "
                         f"scene's frames are {size[0]}x{size[1]}",
                         "write one float32 [H, W] map per frame at the frames' size, or remove depth/")
    valid = silhouette_mask(depth.astype(np.float32))
    x0, y0, w, h = box
    if (x0, y0, w, h) == (0.0, 0.0, float(size[0]), float(size[1])) and (width, height) == tuple(size):
        return np.where(valid, depth, 0).astype(np.float32)

    def resample(values: np.ndarray) -> np.ndarray:
        image = Image.fromarray(values.astype(np.float32))   # 32-bit float: mode "F"
        return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + w, y0 + h)))

    weight = resample(valid.astype(np.float32))
    summed = resample(np.where(valid, depth, 0))
    return np.where(weight > FULL_VALIDITY, summed / np.maximum(weight, 1e-6), 0).astype(np.float32)


def resize_depth(depth: Tensor, height: int, width: int) -> Tensor:
    """Depth maps [..., H, W] (0 = invalid) at another size, area-averaged, valid only where every
    source pixel they mix is (e.g. targets for supervision renders at --render-size)."""
    if tuple(depth.shape[-2:]) == (height, width):
        return depth
    flat = depth.reshape(-1, 1, *depth.shape[-2:]).float()
    valid = (flat > 0).float()
    weight = F.interpolate(valid, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    summed = F.interpolate(flat * valid, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    out = torch.where(weight > FULL_VALIDITY, summed / weight.clamp_min(1e-6), torch.zeros_like(summed))
    return out.reshape(*depth.shape[:-2], height, width)
