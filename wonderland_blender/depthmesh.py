"""The input view as a depth mesh, bpy-free: the detail layer's pixel grid → vertices, faces, UVs, texture.

The backend's detail layer (backend/detail.py) puts one Gaussian on every pixel's ray of the photo as the
model saw it (cropped, at `meta.json`'s detail "size" [w, h]), row-major with the top row first, at the end
of scene.ply. Neighbouring pixels become faces, except where their distances from camera 0 jump by more
than a relative threshold: there the photo shows a silhouette, and a face would be a rubber sheet stretched
from the object to what lies behind it. A quad whose four corners are on one surface stays a quad; one that
straddles a silhouette keeps the triangle (either diagonal) that does not, so edges follow the outline.
UVs are the pixel centres, so the texture (the detail colours, i.e. the cropped photo) maps exactly and the
UV map is camera 0's projection; a ring of vertices half a pixel further out (pad_grid) takes the mesh to
the photo's border.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_MAX_JUMP = 0.1  # relative distance jump between neighbours that cuts a face (the backend's edge contrast)


class DepthMeshError(ValueError):
    """Why a result cannot become a depth mesh; the message says what to do."""


@dataclass
class Grid:
    """Faces of a w×h vertex grid: quads [Q, 4] and triangles [T, 3] of row-major vertex indices, counter-
    clockwise as seen from the camera (whose image rows run top to bottom). Indices from w·h on are twins:
    twin k is grid vertex twins[k] pushed along its ray to twin_scale[k] times its distance from the camera."""
    quads: np.ndarray
    triangles: np.ndarray
    twins: np.ndarray
    twin_scale: np.ndarray

    def loops(self) -> tuple[np.ndarray, np.ndarray]:
        """(loop vertex indices, polygon loop starts): quads first, then triangles."""
        vertices = np.concatenate([self.quads.ravel(), self.triangles.ravel()]).astype(np.int32)
        starts = np.concatenate([np.arange(len(self.quads)) * 4,
                                 len(self.quads) * 4 + np.arange(len(self.triangles)) * 3]).astype(np.int32)
        return vertices, starts


def detail_size(meta: dict, source: str) -> tuple[int, int]:
    """The detail grid (w, h) from a job's meta.json contents; DepthMeshError when there is none."""
    detail = meta.get("detail") or {}
    size, count = detail.get("size"), detail.get("count", 0)
    if not size or not count:
        raise DepthMeshError(f"{source}: this result has no detail layer (detail count 0), so there is no "
                             "per-pixel input view to mesh; generate again with a detail size above 0.")
    w, h = (int(v) for v in size)
    if w * h != count:
        raise DepthMeshError(f"{source}: detail size {w}x{h} does not match its count {count}; "
                             "the job folder is damaged, generate again.")
    return w, h


def read_job(job_dir: str | Path) -> tuple[tuple[int, int], np.ndarray]:
    """((w, h) of the detail grid, camera 0's centre in the world) from a job folder's meta.json and
    cameras.json."""
    job_dir = Path(job_dir)
    meta_path, cams_path = job_dir / "meta.json", job_dir / "cameras.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        cams = json.loads(cams_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DepthMeshError(f"{e.filename} is missing: the result's job folder was moved or removed, so its "
                             "input view cannot be rebuilt; generate again.") from e
    except (OSError, ValueError) as e:
        raise DepthMeshError(f"Cannot read the job folder {job_dir}: {e}") from e
    size = detail_size(meta, str(meta_path))
    try:
        centre = np.asarray(cams["frames"][0]["c2w"], np.float64)[:3, 3]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise DepthMeshError(f"{cams_path} has no camera 0 pose (frames[0].c2w): {e}") from e
    return size, centre


def neighbourhood_max(x: np.ndarray) -> np.ndarray:
    """The largest value in each element's 3×3 neighbourhood (the border repeated)."""
    h, w = x.shape
    pad = np.pad(x, 1, mode="edge")
    return np.max([pad[r:r + h, c:c + w] for r in range(3) for c in range(3)], axis=0)


def grid_faces(distance: np.ndarray, max_jump: float = DEFAULT_MAX_JUMP) -> Grid:
    """Faces between grid neighbours of `distance` [h, w] (from camera 0; > 0) whose corners' largest
    distance is at most (1 + max_jump) × their smallest.

    A cell across a silhouette keeps the triangle (either diagonal) of its corners on one surface, and the
    surface behind is closed up to the silhouette: the near corners' twins, pushed back along their rays to
    the far side's distance, complete its quad. Without them camera 0 would see the World through a one-pixel
    slit around every object; with them it sees the photo there (the near pixel's colour fading into the far
    one's, as the photo itself does), and other views see that one-pixel fringe on the far surface.
    """
    if max_jump <= 0:
        raise DepthMeshError(f"max_jump must be above 0 (a relative distance jump, e.g. 0.1), got {max_jump}")
    h, w = distance.shape
    limit = 1.0 + max_jump
    far = neighbourhood_max(distance)
    has_twin = (far > limit * distance).ravel()
    twins = np.flatnonzero(has_twin)
    twin_of = np.full(h * w, -1)
    twin_of[twins] = h * w + np.arange(len(twins))
    index = np.arange(h * w).reshape(h, w)
    # corners of each grid cell: top-left, bottom-left, bottom-right, top-right (CCW seen from the camera)
    corners = [index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()]
    flat, far_flat = distance.ravel(), far.ravel()
    ds = np.stack([flat[k] for k in corners])

    def smooth(d):
        return d.max(axis=0) <= limit * d.min(axis=0)

    quad = smooth(ds)
    near = ds.max(axis=0) > limit * ds           # corners in front of the cell's farthest
    pushed = np.where(near, np.stack([far_flat[k] for k in corners]), ds)
    backed = ~quad & smooth(pushed)                                  # the far surface closed behind them
    tris = [(0, 1, 2), (0, 2, 3), (0, 1, 3), (1, 2, 3)]
    keep = [~quad & smooth(ds[list(t)]) for t in tris]
    keep[2] &= ~(keep[0] | keep[1])   # at most one diagonal's triangles
    keep[3] &= ~(keep[0] | keep[1])
    keep = [k & ~(backed & ~near[list(t)].any(axis=0)) for k, t in zip(keep, tris)]  # far ones: in the quad
    back = np.stack([np.where(near[i], twin_of[corners[i]], corners[i]) for i in range(4)], axis=1)[backed]
    triangles = np.concatenate([np.stack([corners[i][k] for i in t], axis=1) for t, k in zip(tris, keep)])
    quads = np.concatenate([np.stack([k[quad] for k in corners], axis=1), back])
    return Grid(quads.reshape(-1, 4), triangles.reshape(-1, 3), twins, far_flat[twins] / flat[twins])


def pad_grid(values: np.ndarray) -> np.ndarray:
    """[h, w, ...] → [h + 2, w + 2, ...]: a ring half a pixel outside the pixel centres, extrapolated
    linearly from the two outermost rows and columns, so the mesh reaches the photo's border (pixel centres
    alone leave half a pixel of World around the frame)."""
    if values.shape[0] < 2 or values.shape[1] < 2:
        raise DepthMeshError(f"A detail grid of {values.shape[1]}x{values.shape[0]} pixels has no faces; "
                             "generate with a detail size of at least 2.")
    v = np.concatenate([1.5 * values[:1] - 0.5 * values[1:2], values, 1.5 * values[-1:] - 0.5 * values[-2:-1]])
    return np.concatenate([1.5 * v[:, :1] - 0.5 * v[:, 1:2], v, 1.5 * v[:, -1:] - 0.5 * v[:, -2:-1]], axis=1)


def grid_uvs(w: int, h: int, twins: np.ndarray) -> np.ndarray:
    """UV [(h + 2)·(w + 2) + len(twins), 2] of each vertex of the padded grid (pixel centres, the ring on the
    image's edges), then each twin (its vertex's); v up (Blender images store the bottom row first)."""
    v, u = np.meshgrid((np.arange(h + 2) - 0.5) / h, (np.arange(w + 2) - 0.5) / w, indexing="ij")
    uv = np.clip(np.stack([u.ravel(), 1.0 - v.ravel()], axis=1), 0.0, 1.0).astype(np.float32)
    return np.concatenate([uv, uv[twins]])


def texture_pixels(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    """Blender image pixels (RGBA float, bottom row first, flat) from row-major top-first colours [h·w, 3]."""
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :3] = np.clip(rgb, 0.0, 1.0).reshape(h, w, 3)
    return rgba[::-1].ravel()
