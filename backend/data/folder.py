"""Our own scene folder format, the one the synthetic data generator writes:

    SCENE/
      cameras.json        the cameras.json of shared/design/cameras.md: width, height and one entry per
                          frame with K (pixels at width x height) and c2w (camera-to-world, OpenCV axes)
      frames/
        0000.png          the image of frames[0] in cameras.json
        0001.png          frames[1], ... in the order of the "frames" list (not the "frame" numbers)
      depth/              optional: 0000.npy, 0001.npy, ... float32 [H, W] camera z-depth of each frame in
                          world units (tools/synthetic_scenes.py writes it); LaLRM training's depth term
                          reads it (backend/data/depth.py), everything else ignores it

A frame entry may carry `"file": "name.jpg"` (a path relative to frames/) to override its default
name `NNNN.png` (its index in the list, 4 digits). The frame order in the list is the temporal order.
Frame images should be width x height; images of another size with the same aspect ratio (within
1%) are accepted and K is rescaled to their size, since Scene.cameras holds K for the images as
they are.
"""
from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

from PIL import Image

from backend.cameras import CameraBatch, cameras_from_dict, crop_resize_intrinsics
from backend.data.depth import DEPTH_DIR, depth_file_name
from backend.data.scenes import DataProblem, Scene, json_array_lines, read_json
from backend.errors import InputError

CAMERAS_FILE = "cameras.json"
FRAMES_DIR = "frames"
ASPECT_TOLERANCE = 0.01
_FRAME_INDEX = re.compile(r"frames\[(\d+)\]")


def frame_file_name(index: int) -> str:
    """The default image name of the frame at `index` in the "frames" list."""
    return f"{index:04d}.png"


def read_scene(directory: Path, name: str) -> Scene | DataProblem:
    """The scene in `directory` (which holds cameras.json), or the first problem that rules it out."""
    source = directory / CAMERAS_FILE
    read = read_json(source)
    if isinstance(read, DataProblem):
        return read
    text, data = read
    lines = json_array_lines(text, "frames") or []

    def line_of(index: int) -> int | None:
        return lines[index] if index < len(lines) else None

    try:
        cameras = cameras_from_dict(data, source=CAMERAS_FILE)
    except InputError as e:
        match = _FRAME_INDEX.search(e.message)
        return DataProblem(source, line_of(int(match.group(1))) if match else None,
                           e.message.removeprefix(f"{CAMERAS_FILE}: "))
    frames_dir = directory / FRAMES_DIR
    if not frames_dir.is_dir():
        return DataProblem(source, None, f"no {FRAMES_DIR}/ folder beside it (one image per camera: "
                                          f"{FRAMES_DIR}/0000.png, 0001.png, ...)")
    frames = []
    for i, entry in enumerate(data["frames"]):
        file = entry.get("file", frame_file_name(i))
        if not isinstance(file, str) or not file or PurePosixPath(file).is_absolute() or \
                ".." in PurePosixPath(file).parts:
            return DataProblem(source, line_of(i), f"frames[{i}].file must be an image path inside "
                                                   f"{FRAMES_DIR}/, got {json.dumps(file)}")
        path = frames_dir / file
        if not path.is_file():
            return DataProblem(source, line_of(i), f"frames[{i}]: image {FRAMES_DIR}/{file} is missing")
        frames.append(path)
    try:
        with Image.open(frames[0]) as im:
            width, height = im.size
    except OSError as e:
        return DataProblem(frames[0], None, f"cannot read image: {e}")
    if (width, height) != (cameras.width, cameras.height):
        if abs(width * cameras.height / (height * cameras.width) - 1) > ASPECT_TOLERANCE:
            return DataProblem(frames[0], None,
                               f"image is {width}x{height} but cameras.json is for {cameras.width}x"
                               f"{cameras.height}, a different aspect ratio; export images and cameras together")
        box = (0.0, 0.0, float(cameras.width), float(cameras.height))
        cameras = CameraBatch(crop_resize_intrinsics(cameras.K, box, width, height), cameras.c2w,
                              width, height, cameras.frames)
    depth = None
    if (directory / DEPTH_DIR).is_dir():
        depth = [directory / DEPTH_DIR / depth_file_name(i) for i in range(len(frames))]
        missing = [p.name for p in depth if not p.is_file()]
        if missing:
            return DataProblem(source, None, f"{DEPTH_DIR}/ lacks {len(missing)} of the {len(frames)} frames' depth "
                                             f"maps (first: {DEPTH_DIR}/{missing[0]}); render the scene again, or "
                                             f"remove {DEPTH_DIR}/ to train it without depth")
    return Scene(name=name, frames=frames, cameras=cameras, source=str(source), depth=depth)
