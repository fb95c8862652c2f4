"""Preset camera moves (orbit, dolly, pan, truck, crane), keyed on a camera for artists to edit afterwards."""
from __future__ import annotations

import math

import bpy
import numpy as np
from bpy_extras import anim_utils
from mathutils import Matrix

PRESETS = (
    ('orbit', "Orbit", "Circle around a point in front of the camera, keeping it in view"),
    ('dolly_in', "Dolly In", "Move forward along the view axis"),
    ('dolly_out', "Dolly Out", "Move backward along the view axis"),
    ('pan', "Pan", "Turn left or right in place"),
    ('truck', "Truck", "Slide sideways, looking the same way"),
    ('crane', "Crane", "Rise straight up, looking the same way"),
)
PRESET_IDS = tuple(p[0] for p in PRESETS)
# Straight moves and pans are exact with a key at each end (linear); an orbit needs a key on every frame.
KEY_EVERY_FRAME = {'orbit'}
TRANSFORM_PATHS = {"location", "rotation_euler", "rotation_quaternion", "rotation_axis_angle"}
NEW_CAMERA_LOCATION = (0.0, -6.0, 1.5)
NEW_CAMERA_ROTATION = (math.radians(90.0), 0.0, 0.0)  # looking along +Y, level


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def preset_poses(preset: str, start, count: int, *, distance: float = 4.0, angle: float = math.radians(30.0),
                 amount: float = 1.0) -> list[np.ndarray]:
    """`count` rigid world matrices (Blender camera axes) of a preset move starting at `start` (4×4, no scale).

    orbit: around the world Z axis through the point `distance` ahead of the camera, by `angle` radians;
    pan: about the world Z axis in place, by `angle`; dolly_in / dolly_out: `amount` along / against the
    view axis; truck: `amount` to the camera's right; crane: `amount` up the world Z axis.
    """
    if preset not in PRESET_IDS:
        raise ValueError(f"unknown preset {preset!r}: pick one of {', '.join(PRESET_IDS)}")
    if count < 1:
        raise ValueError(f"a preset needs at least one frame, got {count}")
    m0 = np.asarray(start, dtype=np.float64)
    R0, p0 = m0[:3, :3], m0[:3, 3]
    right, forward = R0[:, 0], -R0[:, 2]
    target = p0 + forward * distance
    poses = []
    for i in range(count):
        t = i / (count - 1) if count > 1 else 0.0
        R, p = R0, p0
        if preset == 'orbit':
            Rz = _rot_z(angle * t)
            R, p = Rz @ R0, target + Rz @ (p0 - target)
        elif preset == 'pan':
            R = _rot_z(angle * t) @ R0
        elif preset in ('dolly_in', 'dolly_out'):
            p = p0 + forward * amount * t * (1.0 if preset == 'dolly_in' else -1.0)
        elif preset == 'truck':
            p = p0 + right * amount * t
        else:  # crane
            p = p0 + np.array([0.0, 0.0, amount * t])
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = R, p
        poses.append(pose)
    return poses


def new_camera(context):
    """A new perspective camera, level and looking along +Y, linked to the scene."""
    data = bpy.data.cameras.new("Wonderland Camera")
    obj = bpy.data.objects.new("Wonderland Camera", data)
    obj.location, obj.rotation_euler = NEW_CAMERA_LOCATION, NEW_CAMERA_ROTATION
    context.scene.collection.objects.link(obj)
    if context.scene.camera is None:
        context.scene.camera = obj
    return obj


def _transform_fcurves(obj):
    """The channel bag holding obj's own animation curves, or None when it has none."""
    if obj.animation_data is None or obj.animation_data.action is None:
        return None
    return anim_utils.animdata_get_channelbag_for_assigned_slot(obj.animation_data)


def apply_preset(scene, obj, preset: str, frame_start: int, frame_end: int, **params) -> None:
    """Replace obj's location/rotation animation with the preset move over [frame_start, frame_end].

    The move starts from the camera's pose at frame_start. Keys are set in the object's own (parent)
    space at each keyed frame's evaluation, so parented cameras follow the move in world space there.
    The current frame is restored.
    """
    if frame_end < frame_start:
        raise ValueError(f"the frame range {frame_start}–{frame_end} is empty: the end must not be before the start")
    frame_before, subframe_before = scene.frame_current, scene.frame_subframe
    try:
        bag = _transform_fcurves(obj)
        if bag is not None:
            for fc in [fc for fc in bag.fcurves if fc.data_path in TRANSFORM_PATHS]:
                bag.fcurves.remove(fc)
        if obj.rotation_mode in ('QUATERNION', 'AXIS_ANGLE'):
            obj.rotation_mode = 'XYZ'
        scene.frame_set(frame_start)
        world = np.array(obj.matrix_world)
        scale = np.linalg.norm(world[:3, :3], axis=0)
        rigid = world.copy()
        rigid[:3, :3] /= scale
        count = frame_end - frame_start + 1
        poses = preset_poses(preset, rigid, count, **params)
        keyed = range(count) if preset in KEY_EVERY_FRAME or count == 1 else (0, count - 1)
        euler = obj.rotation_euler.copy()
        for i in keyed:
            frame = frame_start + i
            scene.frame_set(frame)
            pose = poses[i].copy()
            pose[:3, :3] *= scale
            obj.matrix_world = Matrix(pose.tolist())
            euler = obj.matrix_basis.to_euler(obj.rotation_mode, euler)  # no flips between keys
            obj.rotation_euler = euler
            obj.keyframe_insert("location", frame=frame)
            obj.keyframe_insert("rotation_euler", frame=frame)
        bag = _transform_fcurves(obj)
        for fc in bag.fcurves:
            if fc.data_path in TRANSFORM_PATHS:
                for point in fc.keyframe_points:
                    point.interpolation = 'LINEAR'
    finally:
        scene.frame_set(frame_before, subframe=subframe_before)
