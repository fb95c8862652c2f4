"""Splat file formats besides the standard 3DGS PLY (plyio.py): SPZ, SuperSplat's compressed PLY, .splat.

Pure numpy and the standard library (no bpy), so they are tested without Blender. Every reader returns
plyio's ReadResult in the PLY frame (the frame of the .ply the file was made from), so the importer's
axis options mean the same for every format.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..plyio import ReadResult, Splats, _finite_rows

# Opacity codes 0 and 255 decode to the edges of their quantization bins, so that every logit is finite.
_ALPHA_EDGE = np.float32(0.5 / 255)


class FormatError(ValueError):
    """A splat file this add-on cannot read or write; the message says what is wrong and what to do."""


def logit(alpha: np.ndarray) -> np.ndarray:
    """Opacity 0..1 → logit, float32, finite (clamped half a uint8 step inside 0 and 1)."""
    a = np.clip(alpha.astype(np.float32), _ALPHA_EDGE, 1 - _ALPHA_EDGE)
    return np.log(a / (1 - a))


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise FormatError(f"Cannot open {path}: {e.strerror or e}.") from e


def finite_result(splats: Splats) -> ReadResult:
    """Drop (and count) rows holding NaN or infinity, as the PLY reader does."""
    finite = _finite_rows([splats.means, splats.f_dc, splats.f_rest, splats.opacity_logits,
                           splats.log_scales, splats.quats])
    if finite is None:
        return ReadResult(splats, 0, [])
    return ReadResult(splats.select(finite), int(len(splats) - finite.sum()), [])


def read_gaussians(path: str | os.PathLike) -> ReadResult:
    """Any supported file by its content: SPZ, compressed or standard PLY, or .splat (by its extension,
    since it has no header). Raises FormatError or plyio.PlyError."""
    from . import compressed_ply, splat, spz
    from ..plyio import read_ply
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise FormatError(f"Cannot open {path}: {e.strerror or e}.") from e
    if head[:2] == b"\x1f\x8b" or head == b"NGSP":
        return spz.read_spz(path)
    if head[:3] == b"ply":
        return compressed_ply.read_compressed_ply(path) if compressed_ply.is_compressed_ply(path) \
            else read_ply(path)
    if path.suffix.lower() == ".splat":
        return splat.read_splat(path)
    raise FormatError(f"{path.name} is not a splat file this add-on reads: expected a 3DGS .ply, a compressed "
                      ".ply, an .spz or an antimatter15 .splat.")
