"""nerfstudio `transforms.json` scenes (DL3DV ships its scenes in this format).

    SCENE/transforms.json
      {"camera_model": "OPENCV", "fl_x": ..., "fl_y": ..., "cx": ..., "cy": ..., "w": ..., "h": ...,
       "frames": [{"file_path": "images/frame_00001.png", "transform_matrix": [[4 x 4]]}, ...]}
    SCENE/images/…   (and/or the downscaled copies images_2/, images_4/, images_8/)

Intrinsics are global or per frame (a frame's own fl_x ... h win); they are in pixels of a w x h
image. `transform_matrix` is camera-to-world in OpenGL axes (x right, y up, z backward); OpenCV's is
`c2w @ diag(1, -1, -1, 1)` (flip y and z). Frames are sorted by file name (natural order: the
frame_00001 … numbering of nerfstudio's video extraction and DL3DV), which is their temporal order.

Images: the listed file_path when it exists, otherwise the same file in the first of images_2/,
images_4/, images_8/ that has it (DL3DV's downloads hold only a downscaled copy); K is rescaled from
w x h to the size of the images actually used. Perspective models only (PINHOLE, SIMPLE_PINHOLE,
OPENCV, SIMPLE_RADIAL, RADIAL); their lens distortion coefficients are ignored (small for DL3DV).
Fisheye and equirectangular scenes are reported and skipped. Malformed JSON or a malformed frame
rules out the whole scene, reported with the file and the JSON line.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from backend.cameras import CameraBatch
from backend.data.scenes import DataProblem, Scene, first_non_rotation, json_array_lines, read_json

TRANSFORMS_FILE = "transforms.json"
PERSPECTIVE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "SIMPLE_RADIAL", "RADIAL")
DOWNSCALES = (2, 4, 8)
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _frame_problem(frame, index: int) -> str | None:
    """Why frame `index` is malformed, or None."""
    if not isinstance(frame, dict):
        return f"frames[{index}] must be an object with file_path and transform_matrix"
    path = frame.get("file_path")
    if not isinstance(path, str) or not path or PurePosixPath(path).is_absolute():
        return f"frames[{index}].file_path must be an image path relative to {TRANSFORMS_FILE}, got {path!r}"
    matrix = frame.get("transform_matrix")
    if not isinstance(matrix, list) or len(matrix) not in (3, 4) or \
            not all(isinstance(r, list) and len(r) == 4 for r in matrix):
        return f"frames[{index}].transform_matrix must be a 4x4 (or 3x4) list of rows"
    if any(_number(x) is None for row in matrix for x in row):
        return f"frames[{index}].transform_matrix holds a non-number or non-finite value"
    if len(matrix) == 4 and [float(x) for x in matrix[3]] != [0.0, 0.0, 0.0, 1.0]:
        return f"frames[{index}].transform_matrix last row is {matrix[3]}, must be [0, 0, 0, 1]"
    return None


def _intrinsics(frame: dict, data: dict, index: int) -> tuple[float, ...] | str:
    """(fl_x, fl_y, cx, cy, w, h) with a frame's values over the global ones; w, h may be None."""
    values = {k: frame.get(k, data.get(k)) for k in INTRINSICS}
    for k, v in values.items():
        if v is not None and _number(v) is None:
            return f"frames[{index}]: {k} = {json.dumps(v)} is not a finite number"
    if values["fl_x"] is None:
        return f"frames[{index}]: no focal length fl_x (neither in the frame nor at the top level)"
    fl_y = values["fl_y"] if values["fl_y"] is not None else values["fl_x"]
    if not (values["fl_x"] > 0 and fl_y > 0):
        return f"frames[{index}]: fl_x = {values['fl_x']}, fl_y = {fl_y}; both must be > 0"
    w, h = values["w"], values["h"]
    if (w is not None and w <= 0) or (h is not None and h <= 0):
        return f"frames[{index}]: image size w = {w}, h = {h} must be positive"
    return float(values["fl_x"]), float(fl_y), values["cx"], values["cy"], w, h


def _resolve_images(directory: Path, paths: list[str]) -> list[Path] | str:
    """The image files to read (the listed ones, or one downscaled folder's copies), or why none fit."""
    listed = [directory / p for p in paths]
    if all(p.is_file() for p in listed):
        return listed
    parts = [PurePosixPath(p).parts for p in paths]
    if all(len(p) > 1 for p in parts):
        for factor in DOWNSCALES:
            candidate = [directory / f"{p[0]}_{factor}" / PurePosixPath(*p[1:]) for p in parts]
            if all(c.is_file() for c in candidate):
                return candidate
    missing = next(p for p in listed if not p.is_file())
    tried = ", ".join(f"{parts[0][0]}_{f}/" for f in DOWNSCALES) if len(parts[0]) > 1 else "no downscaled folder"
    return f"image {missing.relative_to(directory)} is missing (also tried {tried})"


def read_scene(transforms: Path, name: str) -> Scene | DataProblem:
    """The scene of one transforms.json, or the first problem that rules it out."""
    read = read_json(transforms)
    if isinstance(read, DataProblem):
        return read
    text, data = read
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        return DataProblem(transforms, None, "needs a top-level object with a non-empty 'frames' list")
    model = data.get("camera_model", "OPENCV")
    if model not in PERSPECTIVE_MODELS:
        return DataProblem(transforms, None, f"camera_model {model!r} is not a perspective camera "
                                             f"({', '.join(PERSPECTIVE_MODELS)}); scene skipped")
    lines = json_array_lines(text, "frames") or []
    frames = data["frames"]
    parsed = []
    for i, frame in enumerate(frames):
        reason = _frame_problem(frame, i)
        intrinsics = _intrinsics(frame, data, i) if reason is None else None
        if isinstance(intrinsics, str):
            reason = intrinsics
        if reason is not None:
            return DataProblem(transforms, lines[i] if i < len(lines) else None, reason + "; scene skipped")
        parsed.append((frame["file_path"], intrinsics, frame["transform_matrix"]))
    bad = first_non_rotation(np.array([[row[:3] for row in m[:3]] for _, _, m in parsed], dtype=np.float64))
    if bad is not None:
        return DataProblem(transforms, lines[bad[0]] if bad[0] < len(lines) else None,
                           f"frames[{bad[0]}].transform_matrix is not a rigid pose ({bad[1]}); scene skipped")
    parsed.sort(key=lambda item: _natural_key(item[0]))
    images = _resolve_images(transforms.parent, [p for p, _, _ in parsed])
    if isinstance(images, str):
        return DataProblem(transforms, None, images + "; scene skipped")
    try:
        with Image.open(images[0]) as im:
            width, height = im.size
    except OSError as e:
        return DataProblem(images[0], None, f"cannot read image: {e}")
    sizes = {(w, h) for _, (_, _, _, _, w, h), _ in parsed}
    if len(sizes) > 1:
        return DataProblem(transforms, None, f"frames have different image sizes {sorted(sizes, key=str)[:3]}; "
                                             "one size per scene is needed; scene skipped")
    src_w, src_h = sizes.pop()
    if (src_w is None) != (src_h is None) or (src_w is None and images[0] != transforms.parent / parsed[0][0]):
        return DataProblem(transforms, None, "w and h are needed to rescale the intrinsics to the downscaled "
                                             f"images in {images[0].parent.name}/; scene skipped")
    src_w, src_h = (src_w, src_h) if src_w is not None else (width, height)
    fx, fy, cx, cy = np.array([[fx, fy, src_w / 2 if cx is None else cx, src_h / 2 if cy is None else cy]
                               for _, (fx, fy, cx, cy, _, _), _ in parsed], dtype=np.float64).T
    K = np.zeros((len(parsed), 3, 3))
    K[:, 0, 0], K[:, 0, 2] = fx * width / src_w, cx * width / src_w
    K[:, 1, 1], K[:, 1, 2] = fy * height / src_h, cy * height / src_h
    K[:, 2, 2] = 1.0
    c2w = np.tile(np.eye(4), (len(parsed), 1, 1))
    c2w[:, :3, :] = np.array([m[:3] for _, _, m in parsed], dtype=np.float64)
    c2w = c2w @ OPENGL_TO_OPENCV
    cameras = CameraBatch(torch.from_numpy(K).float(), torch.from_numpy(c2w).float(), width, height,
                          list(range(len(parsed))))
    return Scene(name=name, frames=images, cameras=cameras, source=str(transforms))
