"""SuperSplat's compressed PLY (also written by gsplat and splat-transform): Gaussians quantized per chunk.

Elements: `chunk` (one per 256 Gaussians: float32 ranges of position, log-scale and optionally colour),
`vertex` (four uint32: position and log-scale as 11-10-11-bit fractions of the chunk's range, rotation as
the three smallest quaternion components in 10 bits each plus the largest's index in 2, RGBA in 8 bits
each) and optionally `sh` (f_rest_* as uint8 over [-4, 4]). Decoded as PlayCanvas' reader does.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..plyio import SH_C0, PlyError, ReadResult, Splats, _parse_header, _rest_count
from . import FormatError, finite_result, logit

CHUNK = 256
_RANGES = {"means": ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z"),
           "log_scales": ("min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z"),
           "rgb": ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")}
_PACKED = ("packed_position", "packed_rotation", "packed_scale", "packed_color")


def _header(path: Path):
    try:
        with open(path, "rb") as f:
            fmt, elements, _ = _parse_header(f, path)
            return fmt, elements, f.tell()
    except OSError as e:
        raise FormatError(f"Cannot open {path}: {e.strerror or e}.") from e


def is_compressed_ply(path: str | os.PathLike) -> bool:
    """A PLY whose header has a `chunk` element or packed vertex properties."""
    _, elements, _ = _header(Path(path))
    return any(e.name == "chunk" or any(p == "packed_position" for p, _ in e.properties) for e in elements)


def _fields(value: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """Unsigned-normalized bit fields of uint32s, most significant first, as [N, len(widths)] in 0..1."""
    out, shift = [], 32
    for bits in widths:
        shift -= bits
        out.append(((value >> shift) & ((1 << bits) - 1)) / np.float64((1 << bits) - 1))
    return np.stack(out, axis=1)


def _lerp(chunks: np.ndarray, names: tuple[str, ...], t: np.ndarray) -> np.ndarray:
    lo = np.stack([chunks[name] for name in names[:3]], axis=1).astype(np.float64)
    hi = np.stack([chunks[name] for name in names[3:]], axis=1).astype(np.float64)
    chunk_of = np.arange(len(t)) // CHUNK
    return lo[chunk_of] * (1 - t) + hi[chunk_of] * t


def _quats(packed: np.ndarray) -> np.ndarray:
    """2-10-10-10 smallest-three rotations → [N, 4] in file order (rot_0..rot_3 = w x y z)."""
    small = (_fields(packed << np.uint32(2), (10, 10, 10)) - 0.5) * np.sqrt(2.0)
    largest = packed >> np.uint32(30)
    out = np.empty((len(packed), 4))
    for j in range(4):  # component j is the largest, or the next stored one (the stored skip the largest)
        stored = small[np.arange(len(packed)), np.minimum(j - (j > largest), 2)]
        out[:, j] = np.where(largest == j, np.sqrt(np.maximum(0.0, 1.0 - (small ** 2).sum(axis=1))), stored)
    return out


def read_compressed_ply(path: str | os.PathLike) -> ReadResult:
    """Gaussians of a compressed PLY (binary little endian). Raises FormatError."""
    path = Path(path)
    try:
        fmt, elements, offset = _header(path)
    except PlyError as e:
        raise FormatError(str(e)) from e
    if fmt != "binary_little_endian":
        raise FormatError(f"{path.name}: a compressed PLY must be binary_little_endian, this one is {fmt}.")
    if any(e.has_list for e in elements):
        raise FormatError(f"{path.name}: a compressed PLY has no list properties; this file is damaged.")
    tables = {}
    with open(path, "rb") as f:
        f.seek(offset)
        for e in elements:
            dtype = np.dtype([(p, "<" + t) for p, t in e.properties])
            tables[e.name] = np.fromfile(f, dtype, e.count)
            if len(tables[e.name]) != e.count:
                raise FormatError(f"{path.name} is truncated in its '{e.name}' element.")
    chunks, vertex = tables.get("chunk"), tables.get("vertex")
    needed = {"chunk": _RANGES["means"] + _RANGES["log_scales"], "vertex": _PACKED}
    for name, table in (("chunk", chunks), ("vertex", vertex)):
        missing = [p for p in needed[name] if table is None or p not in table.dtype.names]
        if missing:
            raise FormatError(f"{path.name} is not a SuperSplat compressed PLY: element '{name}' lacks "
                              f"{', '.join(missing)}.")
    n = len(vertex)
    if len(chunks) != -(-n // CHUNK):
        raise FormatError(f"{path.name}: {n} Gaussians need {-(-n // CHUNK)} chunks, the file has {len(chunks)}.")
    packed = {name: vertex[name].astype(np.uint32) for name in _PACKED}
    color = _fields(packed["packed_color"], (8, 8, 8, 8))
    rgb = _lerp(chunks, _RANGES["rgb"], color[:, :3]) if "min_r" in chunks.dtype.names else color[:, :3]
    sh = tables.get("sh")
    k = 0 if sh is None else _rest_count(set(sh.dtype.names), path)
    codes = np.stack([sh[f"f_rest_{i}"] for i in range(3 * k)], axis=1) if k else np.zeros((n, 0), np.uint8)
    if len(codes) != n:
        raise FormatError(f"{path.name}: the 'sh' element has {len(codes)} rows for {n} Gaussians.")
    rest = np.where(codes == 0, 0.0, np.where(codes == 255, 1.0, (codes + 0.5) / 256))
    splats = Splats(means=_lerp(chunks, _RANGES["means"], _fields(packed["packed_position"], (11, 10, 11))),
                    f_dc=(rgb - 0.5) / SH_C0,
                    f_rest=((rest - 0.5) * 8).reshape(n, 3, k).transpose(0, 2, 1),
                    opacity_logits=logit(color[:, 3]),
                    log_scales=_lerp(chunks, _RANGES["log_scales"], _fields(packed["packed_scale"], (11, 10, 11))),
                    quats=_quats(packed["packed_rotation"]))
    return finite_result(Splats(*(np.ascontiguousarray(a, np.float32) for a in
                                  (splats.means, splats.f_dc, splats.f_rest, splats.opacity_logits,
                                   splats.log_scales, splats.quats))))
