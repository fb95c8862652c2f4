"""RealEstate10K and ACID camera files (the same format), with their extracted video frames.

Camera file `ID.txt`: the first line is the video's URL, then one line per frame:

    timestamp fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3

timestamp in microseconds; fx fy cx cy normalised by the image width / height; [R | t] a 3x4
WORLD-TO-CAMERA matrix in OpenCV axes (x right, y down, z forward). We convert to pixel K using the
size of the frame images (read from the first image's header, no decode) and to c2w = [Rᵀ | -Rᵀt].

Frames: one image per camera line, `<timestamp>.png` (or .jpg / .jpeg), in a folder `ID/`, looked
up in this order for a camera file `ROOT/SPLIT/ID.txt`:

    ROOT/SPLIT/ID/           beside the camera file
    ROOT/SPLIT/frames/ID/
    ROOT/frames/SPLIT/ID/
    ROOT/frames/ID/          the usual layout: ROOT/{train,test}/ID.txt + ROOT/frames/ID/

A malformed line (not 19 fields, a non-number, a non-finite value, fx or fy <= 0, R not a rotation)
or a camera line without its image rules out the whole scene, reported with the file and line:
dropping single frames would silently change the time step between the frames of a clip.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backend.cameras import CameraBatch
from backend.data.scenes import DataProblem, Scene, first_non_rotation

FIELDS = 19
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def frame_folder_candidates(camera_file: Path) -> list[Path]:
    """Where the frames of `camera_file` may be, in the order they are looked for."""
    scene_id, split_dir = camera_file.stem, camera_file.parent
    return [split_dir / scene_id, split_dir / "frames" / scene_id,
            split_dir.parent / "frames" / split_dir.name / scene_id, split_dir.parent / "frames" / scene_id]


def frame_folder(camera_file: Path) -> Path | None:
    return next((p for p in frame_folder_candidates(camera_file) if p.is_dir()), None)


def is_camera_file(path: Path) -> bool:
    """Whether a .txt file is a RealEstate10K camera file: a URL then 19-field lines, or a frames folder."""
    try:
        with open(path, encoding="utf-8") as f:
            head = [f.readline(), f.readline()]
    except (OSError, UnicodeDecodeError):
        return frame_folder(path) is not None
    return head[0].startswith(("http://", "https://")) or len(head[1].split()) == FIELDS or \
        frame_folder(path) is not None


def _line_problem(fields: list[str]) -> str | None:
    """Why a camera line (split into fields) is malformed, or None."""
    if len(fields) != FIELDS:
        return (f"expected {FIELDS} fields (timestamp fx fy cx cy 0 0 and a 3x4 world-to-camera matrix), "
                f"got {len(fields)}")
    try:
        int(fields[0])
    except ValueError:
        return f"timestamp {fields[0]!r} is not an integer (microseconds)"
    for k, token in enumerate(fields[1:], start=2):
        try:
            value = float(token)
        except ValueError:
            return f"field {k} {token!r} is not a number"
        if not math.isfinite(value):
            return f"field {k} is {token}, not a finite number"
    if not (float(fields[1]) > 0 and float(fields[2]) > 0):
        return f"fx = {fields[1]}, fy = {fields[2]}; both must be > 0"
    return None


def read_scene(camera_file: Path) -> Scene | DataProblem:
    """The scene of one camera file, or the first problem that rules it out."""
    try:
        lines = camera_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return DataProblem(camera_file, None, f"cannot read: {e}")
    numbers = [n for n, line in enumerate(lines[1:], start=2) if line.strip()]
    if not numbers:
        return DataProblem(camera_file, None, "no camera lines after the URL line; scene skipped")
    fields = [lines[n - 1].split() for n in numbers]
    try:  # fast path: one conversion for the whole file; on any failure find the first bad line
        if any(len(f) != FIELDS for f in fields):
            raise ValueError
        values = np.array([list(map(float, f[1:])) for f in fields])     # [N, 18]
        timestamps = [str(int(f[0])) for f in fields]
        if not np.isfinite(values).all() or not (values[:, :2] > 0).all():
            raise ValueError
    except ValueError:
        for number, f in zip(numbers, fields):
            reason = _line_problem(f)
            if reason is not None:
                return DataProblem(camera_file, number, reason + "; scene skipped")
        return DataProblem(camera_file, None, "the camera lines do not parse as numbers; scene skipped")
    w2c = values[:, 6:].reshape(-1, 3, 4)
    bad = first_non_rotation(w2c[:, :, :3])
    if bad is not None:
        return DataProblem(camera_file, numbers[bad[0]],
                           f"the 3x3 part of the pose is not a rotation ({bad[1]}); scene skipped")
    folder = frame_folder(camera_file)
    if folder is None:
        looked = ", ".join(str(p) for p in frame_folder_candidates(camera_file))
        return DataProblem(camera_file, None, f"no frames folder found (looked for {looked}); scene skipped")
    images: dict[str, str] = {}  # timestamp as a plain integer string -> file name
    for file in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(file)
        if suffix.lower() in IMAGE_SUFFIXES and stem.isdigit():
            images.setdefault(str(int(stem)), file)
    missing = [t for t in timestamps if t not in images]
    if missing:
        return DataProblem(camera_file, None, f"{len(missing)} of {len(timestamps)} frames have no image in "
                                              f"{folder} (first: {missing[0]}.png); scene skipped")
    frames = [folder / images[t] for t in timestamps]
    try:
        with Image.open(frames[0]) as im:
            width, height = im.size
    except OSError as e:
        return DataProblem(frames[0], None, f"cannot read image: {e}")
    K = np.zeros((len(values), 3, 3))
    K[:, 0, 0], K[:, 1, 1] = values[:, 0] * width, values[:, 1] * height
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = values[:, 2] * width, values[:, 3] * height, 1.0
    R_t = np.swapaxes(w2c[:, :, :3], 1, 2)
    c2w = np.tile(np.eye(4), (len(values), 1, 1))
    c2w[:, :3, :3] = R_t
    c2w[:, :3, 3:] = -R_t @ w2c[:, :, 3:]
    cameras = CameraBatch(torch.from_numpy(K).float(), torch.from_numpy(c2w).float(), width, height,
                          list(range(len(values))))
    return Scene(name=camera_file.stem, frames=frames, cameras=cameras, source=str(camera_file))
