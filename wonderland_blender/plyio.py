"""Standard 3DGS PLY files as numpy arrays: a reader for what other tools write, a writer for ours.

Pure numpy (no bpy) so it is tested without Blender. Values are kept raw (log-scales, opacity logits,
SH coefficients, unnormalized wxyz quaternions) so that a file read and written again keeps every bit.
Layout and conventions: shared/design/gaussians.md.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic_write import atomic_file

SH_C0 = 0.28209479177387814

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": None}
_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
_HEADER_LIMIT = 1 << 20


class PlyError(ValueError):
    """A file that is not a 3DGS PLY this reader understands; the message says what and what to do."""


@dataclass
class Splats:
    """Gaussians exactly as a 3DGS PLY stores them (float32, N rows)."""
    means: np.ndarray           # [N, 3] x y z
    f_dc: np.ndarray            # [N, 3] SH degree-0 coefficient per channel
    f_rest: np.ndarray          # [N, K, 3] higher SH coefficients (file order is channel-major), K may be 0
    opacity_logits: np.ndarray  # [N]
    log_scales: np.ndarray      # [N, 3]
    quats: np.ndarray           # [N, 4] w x y z, as stored (not normalized)

    def __post_init__(self) -> None:
        n = len(self.means)
        shapes = {"means": (n, 3), "f_dc": (n, 3), "opacity_logits": (n,), "log_scales": (n, 3),
                  "quats": (n, 4)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"Splats.{name} has shape {getattr(self, name).shape}, expected {shape}")
        if self.f_rest.ndim != 3 or self.f_rest.shape[0] != n or self.f_rest.shape[2] != 3:
            raise ValueError(f"Splats.f_rest has shape {self.f_rest.shape}, expected ({n}, K, 3)")

    def __len__(self) -> int:
        return len(self.means)

    @property
    def sh_rest_count(self) -> int:
        """K: SH coefficients per channel beyond the DC term (0, 3, 8, 15 for degrees 0..3)."""
        return self.f_rest.shape[1]

    def display_rgb(self) -> np.ndarray:
        """The view-independent display colour 0.5 + C0·f_dc, clamped to 0..1 (sRGB-ish, like viewers)."""
        return np.clip(0.5 + SH_C0 * self.f_dc, 0.0, 1.0)

    def select(self, mask_or_index) -> "Splats":
        return Splats(self.means[mask_or_index], self.f_dc[mask_or_index], self.f_rest[mask_or_index],
                      self.opacity_logits[mask_or_index], self.log_scales[mask_or_index],
                      self.quats[mask_or_index])

    @staticmethod
    def concatenate(parts: list["Splats"]) -> "Splats":
        """Join several sets; sets with fewer SH coefficients are padded with zeros (same colours)."""
        k = max(p.sh_rest_count for p in parts)
        rests = [np.pad(p.f_rest, ((0, 0), (0, k - p.sh_rest_count), (0, 0))) for p in parts]

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return Splats(cat("means"), cat("f_dc"), np.concatenate(rests), cat("opacity_logits"),
                      cat("log_scales"), cat("quats"))


@dataclass
class ReadResult:
    splats: Splats
    dropped: int            # rows removed because some value was NaN or infinite
    comments: list[str]     # the header's comment lines


@dataclass
class _Element:
    name: str
    count: int
    properties: list[tuple[str, str]]  # (name, numpy type code); list properties raise
    has_list: bool = False


def _parse_header(f, path: Path) -> tuple[str | None, list[_Element], list[str]]:
    first = f.readline()
    if first.strip() != b"ply":
        raise PlyError(f"{path.name} is not a PLY file (it does not start with 'ply').")
    fmt, elements, comments = None, [], []
    read = len(first)
    while True:
        raw = f.readline()
        read += len(raw)
        if not raw or read > _HEADER_LIMIT:
            raise PlyError(f"{path.name}: the PLY header has no 'end_header' line; the file is "
                           "truncated or not a PLY file.")
        line = raw.decode("ascii", "replace").strip()
        words = line.split()
        if not words:
            continue
        key = words[0]
        if key == "end_header":
            break
        if key == "format":
            if len(words) < 2 or words[1] not in _FORMATS:
                raise PlyError(f"{path.name}: unknown PLY format line '{line}'.")
            fmt = words[1]
        elif key in ("comment", "obj_info"):
            comments.append(line[len(key):].strip())
        elif key == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise PlyError(f"{path.name}: bad PLY element line '{line}'.")
            elements.append(_Element(words[1], int(words[2]), []))
        elif key == "property":
            if not elements:
                raise PlyError(f"{path.name}: PLY property before any element: '{line}'.")
            if len(words) >= 2 and words[1] == "list":
                elements[-1].has_list = True
                elements[-1].properties.append((words[-1], "list"))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1].properties.append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise PlyError(f"{path.name}: bad PLY property line '{line}'.")
    if fmt is None:
        raise PlyError(f"{path.name}: the PLY header has no 'format' line.")
    return fmt, elements, comments


def _check_gaussian_vertex(elements: list[_Element], path: Path) -> _Element:
    names = {e.name for e in elements}
    vertex = next((e for e in elements if e.name == "vertex"), None)
    props = {p for p, _ in vertex.properties} if vertex else set()
    if "chunk" in names or "packed_position" in props:
        raise PlyError(f"{path.name} is a compressed PLY (SuperSplat / gsplat 'ply_compressed'): its "
                       "Gaussians are quantized in packed chunks; read it with formats.read_gaussians "
                       "(as File ▸ Import does), not read_ply.")
    if vertex is None:
        raise PlyError(f"{path.name} has no 'vertex' element, so it holds no Gaussians "
                       f"(elements: {', '.join(sorted(names)) or 'none'}).")
    if vertex.has_list:
        raise PlyError(f"{path.name}: the vertex element has list properties; a 3DGS PLY has only "
                       "scalar properties per Gaussian.")
    missing = [p for p in _REQUIRED if p not in props]
    if missing:
        what = "a point cloud or mesh, not 3D Gaussians" if not {"f_dc_0", "scale_0", "rot_0"} & props else \
            "an incomplete 3DGS file"
        raise PlyError(f"{path.name} is missing the Gaussian properties {', '.join(missing)}: it looks "
                       f"like {what}. A 3DGS PLY needs x y z, f_dc_0..2, opacity, scale_0..2 and rot_0..3.")
    return vertex


def _rest_count(props: set[str], path: Path) -> int:
    rest = sorted(int(m.group(1)) for p in props if (m := re.fullmatch(r"f_rest_(\d+)", p)))
    if rest != list(range(len(rest))) or len(rest) % 3:
        raise PlyError(f"{path.name}: f_rest properties must be f_rest_0 .. f_rest_(3K-1) with no gaps; "
                       f"found {len(rest)} of them.")
    k = len(rest) // 3
    degree = round((k + 1) ** 0.5) - 1
    if (degree + 1) ** 2 - 1 != k:
        raise PlyError(f"{path.name}: {len(rest)} f_rest values is not 3·((degree+1)²−1) for any SH degree.")
    return k


def _read_vertex_table(f, fmt: str, elements: list[_Element], vertex: _Element, path: Path) -> np.ndarray:
    """The vertex element: a structured array (binary) or a float64 [N, P] table (ascii)."""
    names = [p for p, _ in vertex.properties]
    if fmt == "ascii":
        for e in elements:
            if e is vertex:
                break
            for _ in range(e.count):  # one line per entry in ascii PLY
                f.readline()
        table = np.loadtxt(f, dtype=np.float64, max_rows=vertex.count, ndmin=2) if vertex.count else \
            np.zeros((0, len(names)))
        if table.shape != (vertex.count, len(names)):
            raise PlyError(f"{path.name}: the ascii vertex data has shape {table.shape}, expected "
                           f"({vertex.count}, {len(names)}); the file is truncated or malformed.")
        return table
    order = _FORMATS[fmt]
    for e in elements:
        if e is vertex:
            break
        if e.has_list:
            raise PlyError(f"{path.name}: element '{e.name}' before the vertices has list properties, "
                           "which this reader cannot skip; move the vertex element first.")
        f.seek(e.count * np.dtype([(p, order + t) for p, t in e.properties]).itemsize, os.SEEK_CUR)
    dtype = np.dtype([(p, order + t) for p, t in vertex.properties])
    data = np.fromfile(f, dtype=dtype, count=vertex.count)
    if len(data) != vertex.count:
        raise PlyError(f"{path.name} is truncated: the header announces {vertex.count} Gaussians but the "
                       f"file holds {len(data)}.")
    return data


def _columns(table: np.ndarray, all_names: list[str], names: list[str]) -> np.ndarray:
    """Properties `names` as a contiguous float32 [N, len(names)] array.

    Properties stored side by side as native float32 (every common writer's layout) are copied in one
    strided pass instead of one pass per column.
    """
    n = len(table)
    if table.dtype.names is None:  # ascii table
        return table[:, [all_names.index(name) for name in names]].astype(np.float32)
    fields = [table.dtype.fields[name] for name in names]
    first = fields[0][1] if fields else 0
    if fields and all(dt == np.dtype("=f4") and off == first + 4 * i for i, (dt, off) in enumerate(fields)):
        view = np.ndarray((n, len(names)), np.float32, buffer=table, offset=first,
                          strides=(table.dtype.itemsize, 4))
        return np.array(view, order="C")
    out = np.empty((n, len(names)), np.float32)
    for i, name in enumerate(names):
        out[:, i] = table[name]
    return out


def _finite_rows(arrays: list[np.ndarray]) -> np.ndarray | None:
    """Boolean mask of rows whose values are all finite, or None when every row is (the usual case)."""
    if all(np.isfinite(a).all() for a in arrays):
        return None
    finite = np.ones(len(arrays[0]), bool)
    for a in arrays:
        finite &= np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    return finite


def read_ply(path: str | os.PathLike) -> ReadResult:
    """Read a 3DGS PLY (binary either endian or ascii, any property order, extra properties and
    elements ignored). Rows with any non-finite value are dropped and counted. Raises PlyError."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise PlyError(f"Cannot open {path}: {e.strerror or e}.") from e
    with f:
        fmt, elements, comments = _parse_header(f, path)
        vertex = _check_gaussian_vertex(elements, path)
        all_names = [p for p, _ in vertex.properties]
        k = _rest_count(set(all_names), path)
        table = _read_vertex_table(f, fmt, elements, vertex, path)

    def cols(names: list[str]) -> np.ndarray:
        return _columns(table, all_names, names)

    rest = cols([f"f_rest_{i}" for i in range(3 * k)]).reshape(vertex.count, 3, k).transpose(0, 2, 1)
    splats = Splats(cols(["x", "y", "z"]), cols(["f_dc_0", "f_dc_1", "f_dc_2"]), np.ascontiguousarray(rest),
                    cols(["opacity"])[:, 0], cols(["scale_0", "scale_1", "scale_2"]),
                    cols(["rot_0", "rot_1", "rot_2", "rot_3"]))
    del table
    finite = _finite_rows([splats.means, splats.f_dc, splats.f_rest, splats.opacity_logits,
                           splats.log_scales, splats.quats])
    dropped = 0 if finite is None else int(len(splats) - finite.sum())
    if dropped:
        splats = splats.select(finite)
    return ReadResult(splats, dropped, comments)


def _header(n: int, k: int, comments: list[str] = ()) -> bytes:
    """Header of the standard layout: x y z nx ny nz f_dc_0..2 f_rest_0.. opacity scale_0..2 rot_0..3."""
    lines = ["ply", "format binary_little_endian 1.0", *(f"comment {c}" for c in comments),
             f"element vertex {n}"]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
             *(f"f_rest_{i}" for i in range(3 * k)), "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
    lines += [f"property float {name}" for name in names]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(path: str | os.PathLike, splats: Splats, comments: list[str] = ()) -> None:
    """Write the standard binary little-endian 3DGS layout (normals zero) atomically."""
    n, k = len(splats), splats.sh_rest_count
    row = np.empty((n, 6 + 3 + 3 * k + 1 + 3 + 4), np.dtype("<f4"))
    row[:, 0:3] = splats.means
    row[:, 3:6] = 0.0
    row[:, 6:9] = splats.f_dc
    row[:, 9:9 + 3 * k] = splats.f_rest.transpose(0, 2, 1).reshape(n, 3 * k)
    row[:, 9 + 3 * k] = splats.opacity_logits
    row[:, 10 + 3 * k:13 + 3 * k] = splats.log_scales
    row[:, 13 + 3 * k:] = splats.quats
    with atomic_file(path) as f:
        f.write(_header(n, k, comments))
        row.tofile(f)
