"""Images in and out: anything Pillow reads, as float RGB; PNGs written atomically."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from backend.atomic import atomic_path
from backend.errors import InputError


def reduction_factor(width: int, height: int, min_side: int | None) -> int:
    """The largest whole factor that keeps the image's shorter side at `min_side` pixels or more (1: none)."""
    if not min_side:
        return 1
    return max(1, min(width, height) // min_side)


def load_rgb(path: str | Path, background: tuple[float, float, float] = (1.0, 1.0, 1.0),
             min_side: int | None = None) -> np.ndarray:
    """Read an image as float32 RGB in [0, 1], [H, W, 3].

    EXIF orientation is applied, alpha is composited over `background`, 16-bit and float images keep their
    precision, greyscale and palette images become RGB. With `min_side`, a large photo is decoded at a
    whole-number reduction whose shorter side stays >= min_side (JPEG decodes at 1/2, 1/4 or 1/8 directly;
    other formats are reduced before the float conversion), so a 100-megapixel photo costs what the model
    needs, not gigabytes. Pillow refuses images over Image.MAX_IMAGE_PIXELS x 2 (decompression bombs).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}", "check the path, or pick the image again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decoded reduced below
            with Image.open(path) as im:
                factor = reduction_factor(*im.size, min_side)
                if factor > 1 and im.format == "JPEG":
                    im.draft(im.mode, (im.width // factor, im.height // factor))
                    factor = reduction_factor(*im.size, min_side)
                if factor > 1:
                    im = _reducible(im).reduce(factor)
                im = ImageOps.exif_transpose(im)
                rgb, alpha = _to_float(im)
    except Image.DecompressionBombError as e:
        raise InputError(f"image {path} is too large to read safely: {e}",
                         "scale it down (the model needs far fewer pixels), e.g. below 100 megapixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"cannot read image {path}: {e}",
                         "use a PNG, JPEG, TIFF, WebP or EXR file that opens in an image viewer") from e
    if alpha is not None:
        rgb = rgb * alpha[..., None] + np.asarray(background, np.float32) * (1.0 - alpha[..., None])
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _reducible(im: Image.Image) -> Image.Image:
    """`im` in a mode that Image.reduce takes and averages right: it refuses 1, P and the 16-bit modes, and
    would average the palette indices of PA. 16-bit greyscale becomes float in [0, 1] (mode F)."""
    if im.mode in _SIXTEEN_BIT:
        grey = Image.fromarray(np.asarray(im, dtype=np.float32) / 65535.0)
        grey.info = im.info.copy()  # the EXIF orientation, as reduce keeps it
        return grey
    if im.mode in ("1", "P", "PA"):
        return im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    return im


def _to_float(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb, alpha or None) as float32 in [0, 1], whatever the mode."""
    if im.mode in _SIXTEEN_BIT:
        grey = np.asarray(im, dtype=np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, axis=2), None
    if im.mode == "I":
        grey = np.asarray(im, dtype=np.float32)
        return np.repeat((grey / (65535.0 if grey.max() > 255 else 255.0))[..., None], 3, axis=2), None
    if im.mode == "F":
        grey = np.asarray(im, dtype=np.float32)
        return np.repeat(grey[..., None], 3, axis=2), None
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    return (arr[..., :3], arr[..., 3]) if has_alpha else (arr, None)


def crop_resize(rgb: np.ndarray, box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """Crop `box` = (x0, y0, w, h) in source pixels and resize to width x height (bicubic, antialiased).

    The same box goes through `backend.cameras.fit_cameras`, so K stays consistent with the pixels.
    """
    x0, y0, w, h = box
    channels = [Image.fromarray(rgb[..., c].astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.BICUBIC, box=(x0, y0, x0 + w, y0 + h)) for c in range(3)]
    return np.clip(np.stack([np.asarray(c) for c in channels], axis=-1), 0.0, 1.0).astype(np.float32)


def to_uint8(rgb: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(rgb, torch.Tensor):
        rgb = rgb.detach().float().cpu().numpy()
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str | Path, rgb: np.ndarray | torch.Tensor, alpha: np.ndarray | torch.Tensor | None = None
             ) -> None:
    """Write [H, W, 3] floats in [0, 1] (plus optional straight alpha [H, W, 1]) as an 8-bit PNG, atomically."""
    pixels = to_uint8(rgb)
    if alpha is not None:
        pixels = np.concatenate([pixels, to_uint8(alpha).reshape(*pixels.shape[:2], 1)], axis=-1)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
