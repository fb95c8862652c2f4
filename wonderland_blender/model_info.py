"""What the chosen model consumes (size, frame count), read from its wonderland.json, and the backend's
warnings of a finished job: plain Python, no bpy and no backend import, so it is testable anywhere.

The panel describes the model the job will use, not the paper's: a model is a folder holding
wonderland.json, or the name of one the backend ships (backend/weights/NAME), found beside the add-on in
a source checkout or in the site-packages of the backend's Python.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .intrinsics import relative_motion

CONFIG_FILE = "wonderland.json"
WARNING_PREFIX = "warning: "  # how the backend starts a warning line on stderr


@dataclass(frozen=True)
class ModelSpec:
    name: str
    width: int
    height: int
    frames: int


def weights_dirs(source_root: Path, python: str | None) -> list[Path]:
    """Where shipped models may be: the checkout's backend/weights, then the backend Python's site-packages."""
    dirs = [Path(source_root) / "backend" / "weights"]
    if python:
        # <venv>/bin/python or <venv>/Scripts/python.exe; not resolved: a venv's python links to the base Python
        prefix = Path(os.path.abspath(python)).parent.parent
        dirs += sorted(prefix.glob("lib/python3*/site-packages/backend/weights"))
        dirs.append(prefix / "Lib" / "site-packages" / "backend" / "weights")
    return dirs


def find_model_config(model: str, dirs: list[Path]) -> Path | None:
    """The wonderland.json of `model` (a folder, or a shipped model's name), or None when not found."""
    folder = Path(os.path.expanduser(model))
    if folder.is_absolute() and (folder / CONFIG_FILE).is_file():
        return folder / CONFIG_FILE
    for root in dirs:
        if (Path(root) / model / CONFIG_FILE).is_file():
            return Path(root) / model / CONFIG_FILE
    return None


def read_model_spec(config: Path) -> ModelSpec:
    """Size and frame count of a model from its wonderland.json (the video model's width, height, num_frames)."""
    try:
        video = json.loads(Path(config).read_text(encoding="utf-8"))["video"]
        return ModelSpec(Path(config).parent.name, int(video["width"]), int(video["height"]),
                         int(video["num_frames"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{config} does not say the model's size and frames ({e}): reinstall the model") from None


def job_warnings(out_dir: Path, meta: str | None = None) -> list[str]:
    """The backend's warnings for a job: meta.json's "warnings" and the stderr lines starting 'warning: ',
    each once, in order."""
    found = []
    meta_path = Path(meta) if meta else Path(out_dir) / "meta.json"
    try:
        found += [str(w) for w in json.loads(meta_path.read_text(encoding="utf-8")).get("warnings", [])]
    except (OSError, ValueError, AttributeError):
        pass
    try:
        lines = (Path(out_dir) / "stderr.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    found += [line[len(WARNING_PREFIX):].strip() for line in lines if line.startswith(WARNING_PREFIX)]
    return list(dict.fromkeys(w for w in found if w))


def move_length(cameras_json: str | os.PathLike) -> float:
    """How far the job's camera moved from its first position (scene units). For a model of scene_scale
    "path" the backend scales the trajectory to a fixed size and back, so this length sets the scene's size."""
    frames = json.loads(Path(cameras_json).read_text(encoding="utf-8"))["frames"]
    return relative_motion([frame["c2w"] for frame in frames])[0]


def _read_meta(meta: str | os.PathLike) -> dict:
    """A job's meta.json as a dict; {} when it is missing or unreadable (an older or failed backend)."""
    try:
        data = json.loads(Path(meta).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def job_scene_scale(meta: str | os.PathLike) -> str:
    """How the job's model sized the scene (meta.json's "scene_scale"): "metric" (the model's own metres) or
    "path" (the paper's rule, and what a meta.json without the key, or none, means)."""
    value = _read_meta(meta).get("scene_scale", "path")
    return value if value in ("path", "metric") else "path"


def job_subject_distance(meta: str | os.PathLike) -> float:
    """The subject distance the job's result was sized to (meta.json's "subject_distance"), 0.0 when the model's
    own size stands."""
    value = _read_meta(meta).get("subject_distance")
    try:
        return float(value["distance"]) if isinstance(value, dict) else 0.0
    except (KeyError, TypeError, ValueError):
        return 0.0


def job_camera_height(meta: str | os.PathLike) -> float:
    """The camera's height over the ground the job's depth prior was told (meta.json's "depth_prior" "ground"),
    0.0 when it was told none."""
    prior = _read_meta(meta).get("depth_prior")
    ground = prior.get("ground") if isinstance(prior, dict) else None
    try:
        return float(ground["camera_height"] or 0.0) if isinstance(ground, dict) else 0.0
    except (KeyError, TypeError, ValueError):
        return 0.0


def ground_text(camera_z: float, ground_z: float) -> tuple[str, str]:
    """The panel's line under Ground, and its icon: how high the camera stands over it, which a depth prior that
    reads the ground sizes the scene by (the synthetic rooms' cameras stand 1.0-1.8 m up)."""
    height = camera_z - ground_z
    if height <= 0:
        return (f"The camera is {-height:.2f} below the ground: the size will come from the picture alone", 'ERROR')
    return f"Camera {height:.2f} over the ground: it sizes the scene (eye height: 1.5-1.7 m)", 'INFO'


def scale_text(length: float, scene_scale: str = "path", subject_distance: float = 0.0,
               camera_height: float = 0.0) -> str:
    """The panel's line on where the result's scale comes from."""
    if subject_distance > 0:
        return (f"Scale: set by Subject Distance, the picture's median depth {subject_distance:.3g} units (the camera "
                f"moved {length:.3g})")
    if scene_scale == "metric" and camera_height > 0:
        return (f"Scale: metres, from the picture and the camera's {camera_height:.3g}-unit height over the ground "
                f"(the camera moved {length:.3g})")
    if scene_scale == "metric":
        return (f"Scale: metres, as the model learned rooms (the camera moved {length:.3g} units: a short move "
                "stays short)")
    if length < 1e-6:
        return "Scale: the camera only turns, so the scene's size is arbitrary (no move to measure it by)"
    return f"Scale follows the camera move ({length:.3g} units here): twice the move, twice the scene"
