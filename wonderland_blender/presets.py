"""Preset camera moves (orbit, dolly, pan, truck, crane), keyed on a camera for artists to edit afterwards."""
from __future__ import annotations

import math

import bpy
import numpy as np
from bpy_extras import anim_utils
from mathutils import Matrix

from .camera_moves import PRESETS, preset_poses  # noqa: F401  PRESETS: the panel and operator list them from here

# Straight moves and pans are exact with a key at each end (linear); an orbit needs a key on every frame.
KEY_EVERY_FRAME = {'orbit'}
TRANSFORM_PATHS = {"location", "rotation_euler", "rotation_quaternion", "rotation_axis_angle"}
NEW_CAMERA_LOCATION = (0.0, -6.0, 1.5)
NEW_CAMERA_ROTATION = (math.radians(90.0), 0.0, 0.0)  # looking along +Y, level


def new_camera(context):
    """A new perspective camera, level and looking along +Y, linked to the scene."""
    data = bpy.data.cameras.new("Wonderland Camera")
    obj = bpy.data.objects.new("Wonderland Camera", data)
    obj.location, obj.rotation_euler = NEW_CAMERA_LOCATION, NEW_CAMERA_ROTATION
    context.scene.collection.objects.link(obj)
    if context.scene.camera is None:
        context.scene.camera = obj
    return obj


def channelbag(id_data):
    """The channel bag holding the animation curves of id_data (an object, a camera's data ...), or None when it
    has none. Through `action_get_channelbag_for_slot`, which Blender 4.5 has (not its 5.0 shorthand)."""
    anim = id_data.animation_data
    if anim is None or anim.action is None or anim.action_slot is None:
        return None
    return anim_utils.action_get_channelbag_for_slot(anim.action, anim.action_slot)


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
        bag = channelbag(obj)
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
        bag = channelbag(obj)
        for fc in bag.fcurves:
            if fc.data_path in TRANSFORM_PATHS:
                for point in fc.keyframe_points:
                    point.interpolation = 'LINEAR'
    finally:
        scene.frame_set(frame_before, subframe=subframe_before)
