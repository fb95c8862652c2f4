"""Standard 3DGS PLY files (gaussians.md) to and from the Gaussians container, bit for bit.

Reading also accepts what other tools write: any property order, no normals, no or any degree of f_rest,
extra elements (SHARP's camera metadata), ascii or big-endian bodies, float64 properties, and SuperSplat's
packed "compressed" PLY (as gsplat's exporter writes with format="ply_compressed").
Binary bodies are memory-mapped by plyfile and copied out as blocks of columns, so millions of Gaussians load
in seconds.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import plyfile
import torch

from backend.atomic import atomic_path
from backend.errors import InputError
from backend.gaussians import SH_C0, Gaussians, sh_rest_count

FORMAT_3DGS = "3dgs"
FORMAT_SUPERSPLAT = "supersplat-compressed"

MEANS = ["x", "y", "z"]
NORMALS = ["nx", "ny", "nz"]
SH0 = ["f_dc_0", "f_dc_1", "f_dc_2"]
OPACITY = ["opacity"]
SCALES = ["scale_0", "scale_1", "scale_2"]
QUATS = ["rot_0", "rot_1", "rot_2", "rot_3"]

_F_REST = re.compile(r"f_rest_(\d+)$")
_PLY_HINT = ("a 3D Gaussian Splatting PLY as written by gsplat, the original 3DGS code, SuperSplat or "
             "SHARP is needed; a mesh or plain point-cloud PLY does not hold Gaussians")
_F_REST_HINT = ("the file is damaged or its writer broke the 3DGS layout: export it again from the tool that "
                "made it")

# SuperSplat's compressed PLY: 256 Gaussians per chunk, each quantized against its chunk's ranges.
SUPERSPLAT_CHUNK = 256
SUPERSPLAT_CHUNK_PROPERTIES = ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
                               "min_scale_x", "min_scale_y", "min_scale_z",
                               "max_scale_x", "max_scale_y", "max_scale_z"]
SUPERSPLAT_COLOR_PROPERTIES = ["min_r", "min_g", "min_b", "max_r", "max_g", "max_b"]
SUPERSPLAT_VERTEX_PROPERTIES = ["packed_position", "packed_rotation", "packed_scale", "packed_color"]
# uint8 f_rest code -> value: bin centres over [-4, 4); codes 0 and 255 (saturated) decode to -4 and 4.
_SUPERSPLAT_SH_VALUES = (((np.arange(256) + 0.5) / 256 - 0.5) * 8).astype(np.float32)
_SUPERSPLAT_SH_VALUES[[0, -1]] = -4.0, 4.0


@dataclass
class PlyReport:
    """What reading a PLY found, for `backend info` and for log lines."""
    count: int                    # Gaussians loaded (after dropping non-finite rows)
    dropped_nonfinite: int        # rows with a NaN or infinite value, left out
    sh_degree: int
    format: str                   # FORMAT_3DGS or FORMAT_SUPERSPLAT
    ignored_elements: list[str] = field(default_factory=list)
    ignored_properties: list[str] = field(default_factory=list)  # vertex properties not used (normals aside)
    warnings: list[str] = field(default_factory=list)


def property_names(sh_degree: int) -> list[str]:
    """Vertex property names of a standard 3DGS PLY, in the standard order."""
    f_rest = [f"f_rest_{i}" for i in range(3 * sh_rest_count(sh_degree))]
    return MEANS + NORMALS + SH0 + f_rest + OPACITY + SCALES + QUATS


def write_ply(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write a binary little-endian float32 3DGS PLY atomically; values are stored exactly as held."""
    g = gaussians.detach().to(device="cpu", dtype=torch.float32)
    n, k = g.sh_rest.shape[:2]
    names = property_names(g.sh_degree)
    # f_rest is channel-major: all R coefficients, then all G, then all B.
    f_rest = g.sh_rest.transpose(1, 2)
    table = torch.empty((n, len(names)), dtype=torch.float32)
    for first, values in [("x", g.means), ("nx", torch.zeros(1, 3)), ("f_dc_0", g.sh0), ("rot_0", g.quats),
                          ("opacity", g.opacity_logits[:, None]), ("scale_0", g.log_scales)]:
        start = names.index(first)
        table[:, start:start + values.shape[1]] = values
    start = names.index("f_dc_2") + 1
    table[:, start:start + 3 * k].view(n, 3, k).copy_(f_rest)
    rows = table.numpy().view(np.dtype([(name, "<f4") for name in names])).reshape(n)
    data = plyfile.PlyData([plyfile.PlyElement.describe(rows, "vertex")], byte_order="<")
    with atomic_path(path) as tmp:
        data.write(str(tmp))


def read_ply(path: str | os.PathLike) -> tuple[Gaussians, PlyReport]:
    """Read a 3DGS or SuperSplat-compressed PLY; rows holding a non-finite value are dropped and counted."""
    path = Path(path)
    extra_body = body_size_check(path) if path.is_file() else None  # _parse says when it is missing
    ply = _parse(path)
    names = [e.name for e in ply.elements]
    if "vertex" not in names:
        raise InputError(f"{path}: the PLY has no 'vertex' element (it has: {', '.join(names) or 'none'})",
                         _PLY_HINT)
    vertex = ply["vertex"]
    vertex_names = [p.name for p in vertex.properties]
    if "chunk" in names and any(n in vertex_names for n in SUPERSPLAT_VERTEX_PROPERTIES):
        columns, used_elements, used = _decode_supersplat(path, ply)
        fmt = FORMAT_SUPERSPLAT
    else:
        columns, used = _read_3dgs(path, vertex)
        used_elements, fmt = {"vertex"}, FORMAT_3DGS

    finite = np.ones(vertex.count, dtype=bool)
    for values in columns.values():
        finite &= np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
    dropped = int(vertex.count - finite.sum())
    if dropped:
        columns = {key: values[finite] for key, values in columns.items()}
    t = {key: torch.from_numpy(np.ascontiguousarray(values)) for key, values in columns.items()}
    gaussians = Gaussians(means=t["means"], log_scales=t["log_scales"], quats=t["quats"],
                          opacity_logits=t["opacity_logits"], sh0=t["sh0"], sh_rest=t["sh_rest"])

    report = PlyReport(
        count=len(gaussians), dropped_nonfinite=dropped, sh_degree=gaussians.sh_degree, format=fmt,
        ignored_elements=[n for n in names if n not in used_elements],
        ignored_properties=[n for n in vertex_names if n not in used and n not in NORMALS])
    if extra_body:
        report.warnings.append(extra_body)
    if vertex.count == 0:
        report.warnings.append(f"{path.name} holds no Gaussians")
    if dropped:
        report.warnings.append(f"{dropped} of {vertex.count} Gaussians in {path.name} had NaN or infinite "
                               f"values and were left out")
    return gaussians, report


_TYPE_BYTES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
               "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def body_size_check(path: Path) -> str | None:
    """Compare the header's element counts with the file's size before anything is allocated.

    An InputError when the body cannot hold what the header claims (e.g. 10^12 vertices: reading would
    try to allocate them); a warning (returned) when a binary body holds more than the header says.
    Bodies with list properties are only bounded below (each list holds at least its count byte)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    end = head.find(b"end_header")
    newline = head.find(b"\n", end)
    if end < 0 or newline < 0:
        return None  # plyfile says what is wrong with the header
    body = path.stat().st_size - (newline + 1)
    ascii_body, elements, exact = False, [], True
    for line in head[:end].decode("ascii", errors="replace").splitlines():
        words = line.split()
        if words[:1] == ["format"] and len(words) > 1:
            ascii_body = words[1] == "ascii"
        elif words[:1] == ["element"] and len(words) == 3 and words[2].isdigit():
            elements.append([words[1], int(words[2]), 0, 0])
        elif words[:1] == ["property"] and elements and len(words) >= 3:
            is_list = words[1] == "list"
            exact &= not is_list
            elements[-1][2] += 1 if is_list else _TYPE_BYTES.get(words[1], 1)
            elements[-1][3] += 1  # a list holds at least its count
    # every value takes at least 2 bytes in ascii ("0 "), its type's size in binary
    least = sum(count * (2 * values if ascii_body else row) for _, count, row, values in elements)
    if ascii_body and least:
        least -= 1  # the last value may lack its newline
    if least > body:
        claims = ", ".join(f"{count:,} {name}" for name, count, *_ in elements)
        raise InputError(f"{path}: the header claims {claims}, but the body is cut short: its {body:,} bytes "
                         "cannot hold them", "the file is damaged or truncated: export or copy it again")
    if exact and not ascii_body and body > least:
        return (f"{path.name} holds {body - least:,} bytes after the elements its header counts "
                f"({', '.join(f'{count:,} {name}' for name, count, *_ in elements)}): they were not read")
    return None


def _parse(path: Path) -> plyfile.PlyData:
    if not path.is_file():
        raise InputError(f"{path}: no such file", "check the path of the PLY file")
    try:
        return plyfile.PlyData.read(str(path), mmap="c")
    except plyfile.PlyHeaderParseError as e:
        raise InputError(f"{path}: not a readable PLY file ({e})", _PLY_HINT) from None
    except plyfile.PlyElementParseError as e:
        raise InputError(f"{path}: the PLY body is cut short or malformed ({e})",
                         "the file may be truncated (an interrupted copy or download): write or copy it "
                         "again") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable PLY file ({e})", _PLY_HINT) from None


def _require(path: Path, element: plyfile.PlyElement, names: list[str]) -> None:
    have = {p.name for p in element.properties}
    missing = [n for n in names if n not in have]
    if missing:
        raise InputError(f"{path}: the '{element.name}' element lacks the properties {', '.join(missing)}",
                         _PLY_HINT)


def _stack(data: np.ndarray, names: list[str], dtype=np.float32) -> np.ndarray:
    """Named columns of a structured array as one [N, len(names)] array (any byte order and type in).

    When all properties share one type (the usual case), the rows are viewed as a matrix and the
    columns gathered row by row, several times faster than copying one strided column at a time.
    """
    if not names:
        return np.empty((len(data), 0), dtype=dtype)
    fields = data.dtype.fields
    types = {fields[name][0] for name in data.dtype.names}
    if len(types) == 1 and data.dtype.itemsize == len(fields) * (size := types.pop().itemsize):
        matrix = data.view(fields[names[0]][0]).reshape(len(data), len(fields))
        columns = [fields[name][1] // size for name in names]
        if columns == list(range(columns[0], columns[0] + len(columns))):
            return matrix[:, columns[0]:columns[0] + len(columns)].astype(dtype)
        return matrix[:, columns].astype(dtype)
    out = np.empty((len(data), len(names)), dtype=dtype)
    for i, name in enumerate(names):
        out[:, i] = data[name]
    return out


def _f_rest_names(path: Path, element: plyfile.PlyElement) -> list[str]:
    """f_rest_0 … f_rest_{M-1} of an element, checked to be complete and to match an SH degree."""
    indices = sorted(int(m.group(1)) for p in element.properties if (m := _F_REST.match(p.name)))
    count = len(indices)
    if indices != list(range(count)):
        missing = sorted(set(range(max(indices) + 1)) - set(indices))
        missing_names = ", ".join(f"f_rest_{i}" for i in missing)
        raise InputError(f"{path}: the '{element.name}' element lacks {missing_names}"
                         f" (it has {count} f_rest_* properties, numbered up to {max(indices)})", _F_REST_HINT)
    degree = round(math.sqrt(count / 3 + 1)) - 1
    if count % 3 or 3 * sh_rest_count(degree) != count:
        valid = ", ".join(str(3 * sh_rest_count(d)) for d in range(5))
        raise InputError(f"{path}: the '{element.name}' element has {count} f_rest_* properties; "
                         f"spherical harmonics need 3·((degree+1)²−1) of them ({valid}, …)", _F_REST_HINT)
    return [f"f_rest_{i}" for i in range(count)]


def _sh_rest(f_rest: np.ndarray) -> np.ndarray:
    """Channel-major [N, 3K] (all R, then G, then B) to [N, K, 3]."""
    n, count = f_rest.shape
    return f_rest.reshape(n, 3, count // 3).transpose(0, 2, 1)


def _read_3dgs(path: Path, vertex: plyfile.PlyElement) -> tuple[dict[str, np.ndarray], set[str]]:
    _require(path, vertex, MEANS + SH0 + OPACITY + SCALES + QUATS)
    f_rest = _f_rest_names(path, vertex)
    data = vertex.data
    columns = {"means": _stack(data, MEANS), "log_scales": _stack(data, SCALES), "quats": _stack(data, QUATS),
               "opacity_logits": _stack(data, OPACITY)[:, 0], "sh0": _stack(data, SH0),
               "sh_rest": _sh_rest(_stack(data, f_rest))}
    return columns, set(MEANS + SH0 + OPACITY + SCALES + QUATS + f_rest)


def _unorm(packed: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """One unsigned-normalized field of a packed uint32, as float64 in [0, 1]."""
    top = (1 << bits) - 1
    return ((packed >> shift) & top) / top


def _unpack_111011(packed: np.ndarray) -> np.ndarray:
    return np.stack([_unorm(packed, 21, 11), _unorm(packed, 11, 10), _unorm(packed, 0, 11)], axis=1)


def _lerp(chunks: np.ndarray, lo: list[str], hi: list[str], t: np.ndarray,
          chunk_of: np.ndarray) -> np.ndarray:
    """Per row, lo + t * (hi - lo) with the bounds of the row's chunk."""
    a, b = _stack(chunks, lo, np.float64)[chunk_of], _stack(chunks, hi, np.float64)[chunk_of]
    return a * (1 - t) + b * t


def _decode_supersplat(path: Path, ply: plyfile.PlyData) -> tuple[dict[str, np.ndarray], set[str], set[str]]:
    """Decode SuperSplat's packed PLY the way PlayCanvas' reference decoder does.

    Positions and log-scales are 11-10-11-bit fractions of their chunk's range; rotations keep the three
    smallest quaternion components in 10 bits each plus the index of the largest in 2; colour and opacity
    are 8 bits each (colour over the chunk's range when the chunk stores one); f_rest are uint8 over
    [-4, 4]. Opacity codes 0 and 255 decode to the edges of their quantization bins (0.5/255 and
    254.5/255) instead of 0 and 1, so that every logit is finite.
    """
    chunk, vertex = ply["chunk"], ply["vertex"]
    _require(path, chunk, SUPERSPLAT_CHUNK_PROPERTIES)
    _require(path, vertex, SUPERSPLAT_VERTEX_PROPERTIES)
    n = vertex.count
    if chunk.count != -(-n // SUPERSPLAT_CHUNK):
        raise InputError(f"{path}: a compressed PLY with {n} Gaussians needs {-(-n // SUPERSPLAT_CHUNK)} "
                         f"chunks of {SUPERSPLAT_CHUNK}, it has {chunk.count}", _PLY_HINT)
    chunks, data = chunk.data, vertex.data
    chunk_of = np.arange(n) // SUPERSPLAT_CHUNK
    packed = {name: data[name].astype(np.uint32) for name in SUPERSPLAT_VERTEX_PROPERTIES}

    means = _lerp(chunks, ["min_x", "min_y", "min_z"], ["max_x", "max_y", "max_z"],
                  _unpack_111011(packed["packed_position"]), chunk_of)
    log_scales = _lerp(chunks, ["min_scale_x", "min_scale_y", "min_scale_z"],
                       ["max_scale_x", "max_scale_y", "max_scale_z"], _unpack_111011(packed["packed_scale"]),
                       chunk_of)

    rotation = packed["packed_rotation"]
    small = np.stack([_unorm(rotation, 20, 10), _unorm(rotation, 10, 10), _unorm(rotation, 0, 10)], axis=1)
    small = (small - 0.5) * math.sqrt(2.0)
    largest = (rotation >> 30).astype(np.int64)
    biggest = np.sqrt(np.maximum(0.0, 1.0 - (small ** 2).sum(axis=1)))
    quats = np.empty((n, 4))
    for j in range(4):  # component j is the largest, or the next stored one (they skip the largest)
        stored = np.take_along_axis(small, np.minimum(j - (j > largest), 2)[:, None], axis=1)[:, 0]
        quats[:, j] = np.where(largest == j, biggest, stored)

    color = packed["packed_color"]
    rgb = np.stack([_unorm(color, 24, 8), _unorm(color, 16, 8), _unorm(color, 8, 8)], axis=1)
    if any(p.name in SUPERSPLAT_COLOR_PROPERTIES for p in chunk.properties):
        _require(path, chunk, SUPERSPLAT_COLOR_PROPERTIES)
        rgb = _lerp(chunks, ["min_r", "min_g", "min_b"], ["max_r", "max_g", "max_b"], rgb, chunk_of)
    alpha = np.clip(_unorm(color, 0, 8), 0.5 / 255, 254.5 / 255)

    columns = {"means": means, "log_scales": log_scales, "quats": quats,
               "opacity_logits": np.log(alpha / (1 - alpha)), "sh0": (rgb - 0.5) / SH_C0}
    used_elements = {"chunk", "vertex"}
    if "sh" in ply:
        sh = ply["sh"]
        if sh.count != n:
            raise InputError(f"{path}: the 'sh' element has {sh.count} rows for {n} Gaussians", _PLY_HINT)
        names = _f_rest_names(path, sh)
        codes = _stack(sh.data, names, np.uint8) if names else np.empty((n, 0), dtype=np.uint8)
        columns["sh_rest"] = _SUPERSPLAT_SH_VALUES[np.ascontiguousarray(_sh_rest(codes))]
        used_elements.add("sh")
    else:
        columns["sh_rest"] = np.zeros((n, 0, 3))
    columns = {key: values.astype(np.float32, copy=False) for key, values in columns.items()}
    return columns, used_elements, set(SUPERSPLAT_VERTEX_PROPERTIES)
