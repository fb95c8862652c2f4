"""Operators: export the camera trajectory as cameras.json, key a preset move, check the trained range."""
from __future__ import annotations

import math

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from . import presets
from .properties import effective_camera, effective_frame_range
from .trajectory import (TrajectoryError, camera_trajectory, check_camera, focus_distance, record_range,
                         trajectory_range, write_cameras_json)


def _trajectory_and_check(context, cam_obj, start: int, end: int) -> dict:
    cameras = camera_trajectory(context.scene, cam_obj, start, end)
    record_range(context.scene.wonderland, cam_obj, start, end,
                 trajectory_range(cameras, focus_distance(context.scene, cam_obj)))
    return cameras


class WONDERLAND_OT_export_trajectory(bpy.types.Operator, ExportHelper):
    """Write the camera's motion over the frame range as cameras.json (OpenCV poses and pixel intrinsics)"""
    bl_idname = "wonderland.export_trajectory"
    bl_label = "Export Camera Trajectory"
    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={'HIDDEN'})

    def execute(self, context):
        if not self.filepath:
            self.report({'ERROR'}, "no file path: pass filepath=... (a .json file to write)")
            return {'CANCELLED'}
        cam_obj = effective_camera(context)
        start, end = effective_frame_range(context)
        try:
            cameras = _trajectory_and_check(context, cam_obj, start, end)
            write_cameras_json(cameras, bpy.path.abspath(self.filepath))
        except (TrajectoryError, OSError) as e:
            self.report({'ERROR'}, str(e))
            return {'CANCELLED'}
        self.report({'INFO'}, f"wrote {len(cameras['frames'])} cameras to {self.filepath}")
        return {'FINISHED'}


class WONDERLAND_OT_check_trajectory(bpy.types.Operator):
    """Measure how far the trajectory turns and travels from the first camera, against what the model was trained on"""
    bl_idname = "wonderland.check_trajectory"
    bl_label = "Check Trajectory"
    bl_options = {'INTERNAL'}

    def execute(self, context):
        start, end = effective_frame_range(context)
        try:
            _trajectory_and_check(context, effective_camera(context), start, end)
        except TrajectoryError as e:
            self.report({'ERROR'}, str(e))
            return {'CANCELLED'}
        return {'FINISHED'}


class WONDERLAND_OT_add_trajectory(bpy.types.Operator):
    """Key a preset camera move over the frame range on the Wonderland camera (a new one if there is none)"""
    bl_idname = "wonderland.add_trajectory"
    bl_label = "Add Camera Move"
    bl_options = {'REGISTER', 'UNDO'}

    preset: EnumProperty(name="Move", items=presets.PRESETS, default='orbit')
    distance: FloatProperty(name="Target Distance", unit='LENGTH', min=0.01, default=4.0,
                            description="Orbit: how far ahead of the camera the orbited point is")
    angle: FloatProperty(name="Angle", subtype='ANGLE', default=math.radians(30.0),
                         soft_min=-math.pi, soft_max=math.pi,
                         description="Orbit and pan: how far to turn (positive: counter-clockwise from above)")
    amount: FloatProperty(name="Distance", unit='LENGTH', default=1.0,
                          description="Dolly, truck and crane: how far to move")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "preset")
        if self.preset == 'orbit':
            layout.prop(self, "distance")
        if self.preset in ('orbit', 'pan'):
            layout.prop(self, "angle")
        else:
            layout.prop(self, "amount")

    def execute(self, context):
        cam_obj = effective_camera(context) or presets.new_camera(context)
        start, end = effective_frame_range(context)
        try:
            check_camera(cam_obj)
            presets.apply_preset(context.scene, cam_obj, self.preset, start, end,
                                 distance=self.distance, angle=self.angle, amount=self.amount)
            context.scene.wonderland.camera = cam_obj
            _trajectory_and_check(context, cam_obj, start, end)
        except ValueError as e:  # TrajectoryError too
            self.report({'ERROR'}, str(e))
            return {'CANCELLED'}
        return {'FINISHED'}


CLASSES = (WONDERLAND_OT_export_trajectory, WONDERLAND_OT_check_trajectory, WONDERLAND_OT_add_trajectory)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
