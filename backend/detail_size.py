"""The detail layer's size: the `--detail-size` check and the grid it gives (no torch, so the CLI checks
it before the heavy imports; the layer itself is backend/detail.py)."""
from __future__ import annotations

import math

from backend.errors import InputError

DEFAULT_DETAIL_SIZE = 512       # long side in pixels: 512x341 = 174,592 Gaussians for a 3:2 model
MAX_DETAIL_SIZE = 1024          # 1024x683 = 699,392 Gaussians: the most Blender and the renderers take well


def check_detail_size(value: int | str) -> int:
    """The detail size (an int, or its decimal text from the command line) as an int in
    0..MAX_DETAIL_SIZE, or an InputError with a hint."""
    hint = (f"give the long side in pixels, a whole number from 0 to {MAX_DETAIL_SIZE} (0 turns the detail "
            f"layer off; default {DEFAULT_DETAIL_SIZE}; a photo smaller than that is used at its own size)")
    number = value
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise InputError(f"--detail-size {value!r} is not a whole number of pixels", hint) from None
    if isinstance(number, bool) or not isinstance(number, int):
        raise InputError(f"--detail-size {value!r} is not a whole number of pixels", hint)
    if not 0 <= number <= MAX_DETAIL_SIZE:
        raise InputError(f"--detail-size {number} is out of range", hint)
    return number


def detail_grid(crop_box: tuple[float, float, float, float], model_size: tuple[int, int],
                detail_size: int) -> tuple[int, int]:
    """(width, height) of the detail layer: the model's aspect, long side detail_size capped at the crop's
    own pixels (a small photo is not upsampled)."""
    model_w, model_h = model_size
    long_side = min(detail_size, math.floor(max(crop_box[2], crop_box[3]) + 1e-6))
    if model_w >= model_h:
        return long_side, max(1, round(long_side * model_h / model_w))
    return max(1, round(long_side * model_w / model_h)), long_side
