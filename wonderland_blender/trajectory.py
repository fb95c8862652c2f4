"""A Blender camera over a frame range → the cameras.json dict (shared/design/cameras.md), and its range check."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import bpy
import numpy as np

from .intrinsics import intrinsics_matrix, opencv_c2w, relative_motion, render_size

# What the model was trained on (RealEstate10K, ACID, DL3DV): forward walks and gentle orbits seen from
# the input view. Beyond these the views show mostly what the picture never showed.
MAX_ROTATION_DEG = 90.0      # largest rotation of any camera away from the first one
MAX_TRAVEL_PER_FOCUS = 1.0   # largest distance from the first camera, in units of the focus distance


class TrajectoryError(ValueError):
    """A camera or frame range that cannot become a trajectory; the message says how to fix it."""


def check_camera(cam_obj) -> None:
    if cam_obj is None:
        raise TrajectoryError("no camera: pick one in the Wonderland panel or set the scene's camera")
    if cam_obj.type != 'CAMERA':
        raise TrajectoryError(f"'{cam_obj.name}' is a {cam_obj.type.lower()} object, not a camera: pick a camera")
    if cam_obj.data.type != 'PERSP':
        raise TrajectoryError(f"camera '{cam_obj.name}' is {cam_obj.data.type.lower()}; only perspective cameras "
                              "have pinhole intrinsics: set its Type to Perspective in the camera properties")


def _depsgraph(scene):
    if scene == bpy.context.scene:
        return bpy.context.evaluated_depsgraph_get()
    return scene.view_layers[0].depsgraph


def camera_trajectory(scene, cam_obj, frame_start: int, frame_end: int) -> dict:
    """The cameras.json dict of `cam_obj` at every frame in [frame_start, frame_end].

    Each frame is evaluated (scene.frame_set), so parents, constraints, drivers and animated lens or
    shift count. The scene's current frame is restored afterwards, also on error.
    """
    check_camera(cam_obj)
    if frame_end < frame_start:
        raise TrajectoryError(f"the frame range {frame_start}–{frame_end} is empty: the end frame must not be "
                              "before the start frame")
    render = scene.render
    width, height = render_size(render.resolution_x, render.resolution_y, render.resolution_percentage)
    if width < 1 or height < 1:
        raise TrajectoryError(f"the render size is {width}×{height} pixels: raise the resolution or its percentage")
    frame_before, subframe_before = scene.frame_current, scene.frame_subframe
    frames = []
    try:
        for frame in range(frame_start, frame_end + 1):
            scene.frame_set(frame)
            evaluated = cam_obj.evaluated_get(_depsgraph(scene))
            cam = evaluated.data
            try:
                K = intrinsics_matrix(lens=cam.lens, sensor_width=cam.sensor_width,
                                      sensor_height=cam.sensor_height, sensor_fit=cam.sensor_fit,
                                      width=width, height=height,
                                      pixel_aspect_x=render.pixel_aspect_x, pixel_aspect_y=render.pixel_aspect_y,
                                      shift_x=cam.shift_x, shift_y=cam.shift_y)
                c2w = opencv_c2w(evaluated.matrix_world)
            except ValueError as e:
                raise TrajectoryError(f"camera '{cam_obj.name}' at frame {frame}: {e}") from None
            frames.append({"frame": frame, "K": K.tolist(), "c2w": c2w.tolist()})
    finally:
        scene.frame_set(frame_before, subframe=subframe_before)
    return {"width": width, "height": height, "frames": frames}


def write_cameras_json(cameras: dict, path: str) -> None:
    """Write cameras.json atomically: a temp file beside it, then a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cameras.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(cameras, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def focus_distance(scene, cam_obj) -> float:
    """How far the camera looks (its focus object's distance, else its focus distance): the check's unit."""
    dof = cam_obj.data.dof
    if dof.focus_object is not None:
        target = dof.focus_object.matrix_world.translation
        distance = (target - cam_obj.matrix_world.translation).length
        if distance > 1e-6:
            return distance
    return dof.focus_distance


@dataclass
class TrajectoryRange:
    frames: int
    max_rotation_deg: float
    max_travel: float          # largest distance from the first camera / focus distance

    def warnings(self) -> list[str]:
        out = []
        if self.max_rotation_deg > MAX_ROTATION_DEG:
            out.append(f"turns {self.max_rotation_deg:.0f}° away from the first view (trained up to "
                       f"{MAX_ROTATION_DEG:.0f}°)")
        if self.max_travel > MAX_TRAVEL_PER_FOCUS:
            out.append(f"moves {self.max_travel:.1f}× the focus distance from the first camera (trained up to "
                       f"{MAX_TRAVEL_PER_FOCUS:.1f}×; set the camera's focus distance to the subject)")
        return out


def trajectory_range(cameras: dict, focus: float) -> TrajectoryRange:
    """How far a cameras.json trajectory strays from its first camera, for the panel's warning."""
    c2ws = np.array([f["c2w"] for f in cameras["frames"]])
    distance, rotation = relative_motion(c2ws)
    return TrajectoryRange(frames=len(c2ws), max_rotation_deg=rotation, max_travel=distance / max(focus, 1e-6))


def record_range(settings, cam_obj, frame_start: int, frame_end: int, rng: TrajectoryRange) -> None:
    """Keep a range check on scene.wonderland for the panel (drawing must not step through frames)."""
    settings.checked_camera = cam_obj.name
    settings.checked_frame_start, settings.checked_frame_end = frame_start, frame_end
    settings.checked_rotation_deg, settings.checked_travel = rng.max_rotation_deg, rng.max_travel


def recorded_range(settings, cam_obj, frame_start: int, frame_end: int) -> TrajectoryRange | None:
    """The recorded check when it is for this camera and range, else None (check again)."""
    if cam_obj is None or settings.checked_camera != cam_obj.name or \
            (settings.checked_frame_start, settings.checked_frame_end) != (frame_start, frame_end):
        return None
    return TrajectoryRange(frames=frame_end - frame_start + 1, max_rotation_deg=settings.checked_rotation_deg,
                           max_travel=settings.checked_travel)
