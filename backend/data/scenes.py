"""Training scenes from disk: posed image sequences in three layouts, found and checked in one pass.

A `Scene` is a list of frame images in temporal order with one camera each (K in pixels of the frame
images' own size, c2w camera-to-world in OpenCV axes, as cameras.json; shared/design/cameras.md).
`load_scenes` walks the data roots and reads every scene it recognises:

- our folder format (`SCENE/cameras.json` + `SCENE/frames/`), backend.data.folder;
- RealEstate10K / ACID camera files (`ID.txt` + a folder of frames named by timestamp),
  backend.data.realestate10k;
- nerfstudio / DL3DV `transforms.json`, backend.data.nerfstudio.

Bad data is never used silently and never stops the others: each unreadable or malformed scene
becomes a `DataProblem` (file, line when known, reason) and is skipped whole; the caller logs the
problems and decides with `require_scenes` whether enough is left to train on (`training_scenes`
does both, then splits). `DataOptions` holds the data options every trainer shares and cuts the
training, latent-cache and validation clips from the scenes.

Walking: a folder holding `cameras.json` or `transforms.json` is one scene and is not searched
further; `*.txt` files that look like RealEstate10K camera files are scenes; other folders are
searched recursively, except hidden ones, folders named `frames` (frame stores) and folders named
like a camera file beside them (that scene's frames).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.cameras import ROTATION_TOLERANCE, CameraBatch
from backend.errors import InputError

FORMATS = ("auto", "folder", "realestate10k", "nerfstudio")
LAYOUT_HINT = ("supported layouts: SCENE/cameras.json + SCENE/frames/0000.png... (backend/data/folder.py), "
               "RealEstate10K/ACID ID.txt + frames named by timestamp (backend/data/realestate10k.py), "
               "nerfstudio/DL3DV transforms.json + images (backend/data/nerfstudio.py)")
SHOWN_PROBLEMS = 5

log = logging.getLogger(__name__)


@dataclass(eq=False)  # compared by identity: field-wise == would compare camera tensors
class Scene:
    name: str             # unique within a data root; the split hashes it
    frames: list[Path]    # image files in temporal order
    cameras: CameraBatch  # one per frame: K in pixels of the frame images' size, c2w OpenCV
    source: str           # the file the cameras came from
    depth: list[Path] | None = None  # per frame: camera z-depth maps (backend/data/depth.py), when the data has them


@dataclass
class DataProblem:
    path: Path
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.line is not None else f"{self.path}: {self.reason}"


def read_json(path: Path) -> tuple[str, object] | DataProblem:
    """(text, parsed JSON) of a data file, or the problem that rules it out (with the JSON error's line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return DataProblem(path, None, f"cannot read: {e}")
    try:
        return text, json.loads(text)
    except json.JSONDecodeError as e:
        return DataProblem(path, e.lineno, f"not valid JSON: {e.msg} (column {e.colno})")


def json_array_lines(text: str, key: str) -> list[int] | None:
    """1-based line numbers where each item of the JSON array `"key": [...]` starts, or None when the
    array cannot be located (the caller then reports the item index only)."""
    start = text.find(f'"{key}"')
    if start < 0:
        return None
    decoder = json.JSONDecoder()
    pos = text.find("[", start + len(key) + 2)
    if pos < 0 or text[start + len(key) + 2:pos].strip(" \t\r\n:"):
        return None
    pos += 1
    lines, line, counted = [], 1, 0
    try:
        while True:
            while text[pos] in " \t\r\n,":
                pos += 1
            if text[pos] == "]":
                return lines
            line += text.count("\n", counted, pos)
            counted = pos
            lines.append(line)
            _, pos = decoder.raw_decode(text, pos)
    except (ValueError, IndexError):
        return None


def first_non_rotation(R: np.ndarray) -> tuple[int, str] | None:
    """(index, description) of the first matrix in R [N, 3, 3] that is not a rotation (within
    cameras.md's tolerance), or None; vectorised, since datasets hold millions of poses."""
    err = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(axis=(-1, -2))
    det = np.linalg.det(R)
    bad = np.flatnonzero((err > ROTATION_TOLERANCE) | (np.abs(det - 1) > ROTATION_TOLERANCE))
    if not len(bad):
        return None
    i = int(bad[0])
    return i, f"max |RᵀR - I| = {err[i]:.3g}, det = {det[i]:.6g}"


def load_scenes(roots: list[Path] | Path, format: str = "auto", min_frames: int = 1
                ) -> tuple[list[Scene], list[DataProblem]]:
    """Every scene under `roots` (folders), and the problems of those that could not be used.

    format: "auto" recognises each layout per folder; "folder", "realestate10k" or "nerfstudio" looks
    for that one only. Scenes with fewer than `min_frames` frames are reported and skipped. A root
    that does not exist is an InputError (nothing could be read from it).
    """
    # The readers import Scene and DataProblem from this module, so they are imported here.
    from backend.data import folder, nerfstudio, realestate10k

    if format not in FORMATS:
        raise InputError(f"unknown data format {format!r}", f"use one of {', '.join(FORMATS)}")
    roots = [Path(roots)] if isinstance(roots, (str, os.PathLike)) else [Path(r) for r in roots]
    if not roots:
        raise InputError("no data folder given", "pass at least one folder of training scenes")
    for root in roots:
        if not root.is_dir():
            raise InputError(f"data folder {root} does not exist or is not a folder",
                             f"pass the folder that holds the scenes; {LAYOUT_HINT}")
    scenes: list[Scene] = []
    problems: list[DataProblem] = []

    def add(result: Scene | DataProblem) -> None:
        if isinstance(result, DataProblem):
            problems.append(result)
        elif len(result.frames) < min_frames:
            problems.append(DataProblem(Path(result.source), None,
                                        f"scene {result.name} has {len(result.frames)} frames, fewer than the "
                                        f"{min_frames} needed; skipped"))
        else:
            scenes.append(result)

    for root in roots:
        pending = [root]
        while pending:
            directory = pending.pop()
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as e:
                problems.append(DataProblem(directory, None, f"cannot list folder: {e}"))
                continue
            files = {e.name for e in entries if e.is_file()}
            subdirs = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
            name = directory.relative_to(root).as_posix() if directory != root else root.name
            if folder.CAMERAS_FILE in files and format in ("auto", "folder"):
                add(folder.read_scene(directory, name))
                continue
            if nerfstudio.TRANSFORMS_FILE in files and format in ("auto", "nerfstudio"):
                add(nerfstudio.read_scene(directory / nerfstudio.TRANSFORMS_FILE, name))
                continue
            skip = {"frames"}
            if format in ("auto", "realestate10k"):
                for file in sorted(f for f in files if f.endswith(".txt")):
                    if realestate10k.is_camera_file(directory / file):
                        skip.add(file[:-4])
                        add(realestate10k.read_scene(directory / file))
            pending.extend(directory / d for d in reversed(subdirs) if d not in skip)
    return scenes, problems


def split_scenes(scenes: list[Scene], val_fraction: float, seed: int) -> tuple[list[Scene], list[Scene]]:
    """(train, val), split by scene: the round(val_fraction · N) scenes (at least 1 when the fraction is
    > 0 and there are 2 or more) whose sha256(seed, name) is smallest go to validation.

    Deterministic for a given set of names and seed, independent of the input order; scenes that share
    a name stay together, so no scene is ever on both sides. Both lists keep the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"validation fraction {val_fraction} is outside [0, 1)",
                         "use e.g. 0.05 for 5% of the scenes, or 0 for no validation")
    names = sorted({s.name for s in scenes},
                   key=lambda n: hashlib.sha256(f"{seed}\0{n}".encode("utf-8")).digest())
    count = round(val_fraction * len(names))
    if val_fraction > 0 and len(names) >= 2:
        count = min(max(count, 1), len(names) - 1)
    val_names = set(names[:count])
    return [s for s in scenes if s.name not in val_names], [s for s in scenes if s.name in val_names]


def require_scenes(scenes: list[Scene], problems: list[DataProblem], minimum: int, what: str) -> None:
    """Raise an InputError that says what was found and what to do when fewer than `minimum` scenes."""
    if len(scenes) >= minimum:
        return
    message = f"{what}: {len(scenes)} usable scene(s), at least {minimum} needed"
    if problems:
        shown = "; ".join(str(p) for p in problems[:SHOWN_PROBLEMS])
        more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
        message += f"; {len(problems)} problem(s) found: {shown}{more}"
    else:
        message += "; no scene found in the data folders"
    raise InputError(message, "fix or remove the files named above, or point at more data; " + LAYOUT_HINT)


def training_scenes(roots: list[str], val_fraction: float, seed: int, minimum: int, what: str
                    ) -> tuple[list[Scene], list[Scene]]:
    """(train, val) scenes of the data roots: skipped scenes are logged, fewer than `minimum` usable ones
    is an InputError that names `what` needed them, the rest is split with split_scenes."""
    scenes, problems = load_scenes(roots)
    for problem in problems:
        log.warning("skipped: %s", problem)
    require_scenes(scenes, problems, minimum, what)
    return split_scenes(scenes, val_fraction, seed)


@dataclass
class DataOptions:
    """The data options every trainer shares (--data, --val-fraction, --val-clips, --stride): which scenes,
    which of them are held out, and how clips are cut from them (backend.data.clips)."""
    roots: list[str] = field(default_factory=list)
    val_fraction: float = 0.05
    val_clips: int = 8                              # held-out clips each validation looks at
    stride: tuple[int, int] = (1, 4)
    crop_scale: tuple[float, float] = (0.8, 1.0)
    min_scenes: int = 1

    def split(self, seed: int, what: str) -> tuple[list[Scene], list[Scene]]:
        """(train, val) scenes of the roots (training_scenes); ([], []) without roots."""
        if not self.roots:
            return [], []
        return training_scenes(self.roots, self.val_fraction, seed, self.min_scenes, what)

    def training_clips(self, scenes: list[Scene], num_frames: int, height: int, width: int, seed: int,
                       clips_per_scene: int = 1):
        """Random clips: a stride in the range, a random crop; `clips_per_scene` of them per scene and epoch."""
        from backend.data.clips import ClipDataset  # clips imports this module
        return ClipDataset(scenes, num_frames, height, width, stride=self.stride, crop_scale=self.crop_scale,
                           seed=seed, clips_per_scene=clips_per_scene)

    def cache_clips(self, scenes: list[Scene], num_frames: int, height: int, width: int, seed: int):
        """Fixed clips for the latent cache."""
        from backend.data.clips import ClipDataset
        return ClipDataset(scenes, num_frames, height, width, stride=self.stride, seed=seed, fixed=True)

    def validation_clips(self, scenes: list[Scene], num_frames: int, height: int, width: int, seed: int):
        """Fixed clips at the smallest stride, so validations compare on the same clips."""
        from backend.data.clips import ClipDataset
        return ClipDataset(scenes, num_frames, height, width, stride=(self.stride[0],) * 2, seed=seed, fixed=True)
