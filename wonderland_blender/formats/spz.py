"""Niantic's SPZ (gzip-compressed, quantized Gaussians): read versions 1-3, write version 3.

Layout and quantization follow nianticlabs/spz (load-spz.cc): a 16-byte header (magic "NGSP", version,
count, SH degree, fractional bits, flags) then, per attribute, all Gaussians' values: 24-bit fixed-point
positions, 8-bit opacities (after sigmoid), 8-bit colours (f_dc·0.15 + 0.5), 8-bit log-scales
((s + 10)·16), rotations (v2: x y z of the w ≥ 0 quaternion in 8 bits; v3: the smallest three components
in 10 bits plus the index of the largest) and 8-bit SH coefficients (x·128 + 128, 5 bits kept for
degree 1 and 4 for higher, as the reference writer does). Files store the RUB frame (x right, y up,
z back); like PlayCanvas' splat-transform we convert to and from the PLY frame (RDF: y down, z forward,
a 180° turn about x), so an .spz and the .ply it was made from import alike. Early writers (spz-js,
Niantic's code before it had coordinate systems) stored the PLY frame as is: such files come in turned
180° about x, and the importer's Forward −Y / Up −Z options turn them back.

Version 4 (ZSTD streams) needs a zstd decoder, which Python's standard library lacks before 3.14; such
files are refused with a message saying how to convert them.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..atomic_write import atomic_file
from ..plyio import ReadResult, Splats
from . import FormatError, finite_result, logit, read_bytes

MAGIC = 0x5053474E  # "NGSP"
WRITE_VERSION = 3
FRACTIONAL_BITS = 12
COLOR_SCALE = 0.15
SH1_BITS, SH_REST_BITS = 5, 4
_HEADER = struct.Struct("<IIIBBBB")
_FLAG_EXTENSIONS = 0x2
_SH_DIMS = (0, 3, 8, 15, 24)  # coefficients per channel beyond DC, by degree
# Sign of each SH basis function under (x, y, z) → (x, −y, −z): RDF ⇄ RUB (nianticlabs/spz flipSh).
_SH_FLIP = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1,
                     -1, 1, -1, 1, 1, -1, 1, -1, -1], np.float32)
_SQRT1_2 = np.float32(0.7071067811865476)


def _round(x: np.ndarray) -> np.ndarray:
    """C's round(): halves away from zero (numpy rounds them to even)."""
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(_round(x), 0, 255).astype(np.uint8)


def swap_rdf_rub(splats: Splats) -> Splats:
    """The PLY (RDF) frame ⇄ SPZ's RUB frame; the map is its own inverse."""
    k = splats.sh_rest_count
    flip = np.array([1, -1, -1], np.float32)
    return Splats(splats.means * flip, splats.f_dc, splats.f_rest * _SH_FLIP[:k, None],
                  splats.opacity_logits, splats.log_scales, splats.quats * np.array([1, 1, -1, -1], np.float32))


def _sizes(n: int, k: int, version: int) -> list[int]:
    """Bytes of positions, alphas, colours, scales, rotations and SH, in file order."""
    return [n * (6 if version == 1 else 9), n, 3 * n, 3 * n, n * (4 if version >= 3 else 3), 3 * n * k]


def _decode_positions(raw: np.ndarray, n: int, version: int, fractional_bits: int) -> np.ndarray:
    if version == 1:  # float16, never released but readable by the reference
        return raw.view("<f2").reshape(n, 3).astype(np.float32)
    b = raw.reshape(n, 3, 3).astype(np.int32)
    fixed = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    fixed = (fixed ^ 0x800000) - 0x800000  # sign-extend 24 bits
    return (fixed * np.float32(1.0 / (1 << fractional_bits))).astype(np.float32)


def _decode_rotations(raw: np.ndarray, n: int, version: int) -> np.ndarray:
    """[N, 4] w x y z."""
    if version < 3:
        xyz = raw.reshape(n, 3).astype(np.float32) / np.float32(127.5) - 1
        w = np.sqrt(np.maximum(0, 1 - (xyz * xyz).sum(axis=1)))
        return np.concatenate([w[:, None], xyz], axis=1)
    comp = raw.view("<u4").astype(np.int64)
    largest = comp >> 30
    xyzw = np.empty((n, 4), np.float32)
    rest = comp.copy()
    for i in (3, 2, 1, 0):  # stored last-to-first, skipping the largest
        here = largest != i
        value = _SQRT1_2 * (rest & 511).astype(np.float32) / np.float32(511)
        xyzw[here, i] = np.where((rest >> 9) & 1, -value, value)[here]
        rest = np.where(here, rest >> 10, rest)
    xyzw[np.arange(n), largest] = 0
    xyzw[np.arange(n), largest] = np.sqrt(np.maximum(0, 1 - (xyzw * xyzw).sum(axis=1)))
    return xyzw[:, [3, 0, 1, 2]]


def read_spz(path: str | os.PathLike) -> ReadResult:
    """Gaussians of an .spz file (versions 1-3), in the PLY frame. Raises FormatError."""
    path = Path(path)
    raw = read_bytes(path)
    if raw[:4] == b"NGSP":
        raise FormatError(f"{path.name} is an SPZ version 4 file (ZSTD-compressed), which Blender's Python "
                          "cannot decompress. Convert it to version 3 first, e.g. `npx @playcanvas/splat-transform "
                          f"--spz-version 3 {path.name} out.spz` or to .ply, and import that.")
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise FormatError(f"{path.name} is not an SPZ file (not gzip-compressed: {e}).") from e
    if len(data) < _HEADER.size:
        raise FormatError(f"{path.name}: the SPZ data is {len(data)} bytes, shorter than its header.")
    magic, version, n, degree, fractional_bits, flags, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FormatError(f"{path.name} is gzip-compressed but not an SPZ file (no 'NGSP' magic).")
    if not 1 <= version <= 3:
        raise FormatError(f"{path.name}: SPZ version {version} is not supported (this reader knows 1-3).")
    if degree >= len(_SH_DIMS):
        raise FormatError(f"{path.name}: SH degree {degree} is beyond SPZ's 4; the file is damaged.")
    k = _SH_DIMS[degree]
    sizes = _sizes(n, k, version)
    start = len(data) - sum(sizes) if flags & _FLAG_EXTENSIONS else _HEADER.size  # skip vendor extensions
    if start < _HEADER.size or start + sum(sizes) > len(data):
        raise FormatError(f"{path.name} is truncated: {n} Gaussians need {sum(sizes)} bytes after the header, "
                          f"the file holds {len(data) - _HEADER.size}.")
    body = np.frombuffer(data, np.uint8, sum(sizes), start)
    positions, alphas, colors, scales, rotations, sh = np.split(body, np.cumsum(sizes)[:-1])
    splats = Splats(
        means=_decode_positions(positions, n, version, fractional_bits),
        f_dc=((colors.reshape(n, 3) / np.float32(255) - np.float32(0.5)) / np.float32(COLOR_SCALE)),
        f_rest=((sh.reshape(n, k, 3).astype(np.float32) - 128) / 128),
        opacity_logits=logit(alphas.astype(np.float32) / 255),
        log_scales=scales.reshape(n, 3).astype(np.float32) / 16 - 10,
        quats=_decode_rotations(rotations, n, version))
    return finite_result(swap_rdf_rub(splats))


def _quantize_sh(x: np.ndarray, bits: int) -> np.ndarray:
    bucket = 1 << (8 - bits)
    q = _round(x * np.float32(128)) + 128
    return np.clip(np.trunc((q + bucket // 2) / bucket) * bucket, 0, 255).astype(np.uint8)


def _encode_rotations(quats: np.ndarray) -> np.ndarray:
    """[N, 4] w x y z → [N] uint32 smallest-three codes (version 3)."""
    n = len(quats)
    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    q = np.where(norm > 0, quats / np.where(norm > 0, norm, 1), np.array([1, 0, 0, 0], np.float32))
    xyzw = q[:, [1, 2, 3, 0]].astype(np.float32)
    largest = np.argmax(np.abs(xyzw), axis=1)
    negate = xyzw[np.arange(n), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        here = largest != i
        negbit = ((xyzw[:, i] < 0) ^ negate).astype(np.uint32)
        mag = (np.float32(511) * (np.abs(xyzw[:, i]) / _SQRT1_2) + np.float32(0.5)).astype(np.uint32)
        comp = np.where(here, (comp << 10) | (negbit << 9) | mag, comp)
    return comp.astype("<u4")


def encode_spz(splats: Splats) -> bytes:
    """The uncompressed SPZ version 3 stream of Gaussians given in the PLY frame. Raises FormatError."""
    n, k = len(splats), splats.sh_rest_count
    if k not in _SH_DIMS:
        raise FormatError(f"SPZ stores SH degrees 0-4; these Gaussians have {k} coefficients per channel.")
    s = swap_rdf_rub(splats)
    fixed = _round(s.means.astype(np.float64) * (1 << FRACTIONAL_BITS)).astype(np.int64)
    if np.abs(fixed).max(initial=0) >= 1 << 23:
        raise FormatError(f"A Gaussian lies {np.abs(s.means).max():.0f} units from the origin; SPZ stores "
                          f"positions within ±{(1 << 23) >> FRACTIONAL_BITS} units. Scale the object down.")
    positions = (fixed[..., None] >> np.array([0, 8, 16])) & 0xFF
    with np.errstate(over="ignore"):
        alpha = np.float32(1) / (np.float32(1) + np.exp(-s.opacity_logits))
    sh_codes = np.empty(s.f_rest.shape, np.uint8)
    sh_codes[:, :3] = _quantize_sh(s.f_rest[:, :3], SH1_BITS)
    sh_codes[:, 3:] = _quantize_sh(s.f_rest[:, 3:], SH_REST_BITS)
    parts = [positions.astype(np.uint8), _to_uint8(alpha * np.float32(255)),
             _to_uint8(s.f_dc * np.float32(COLOR_SCALE * 255) + np.float32(0.5 * 255)),
             _to_uint8((s.log_scales + np.float32(10)) * np.float32(16)),
             _encode_rotations(s.quats), sh_codes]
    header = _HEADER.pack(MAGIC, WRITE_VERSION, n, _SH_DIMS.index(k), FRACTIONAL_BITS, 0, 0)
    return header + b"".join(np.ascontiguousarray(p).tobytes() for p in parts)


def write_spz(path: str | os.PathLike, splats: Splats) -> None:
    """Write Gaussians given in the PLY frame as an SPZ version 3 file, atomically. Raises FormatError."""
    data = gzip.compress(encode_spz(splats), compresslevel=6, mtime=0)
    with atomic_file(path) as f:
        f.write(data)
