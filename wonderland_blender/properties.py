"""`scene.wonderland`: what the user picked for a job, and the job runner's live state and last result."""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, FloatProperty, IntProperty, PointerProperty, StringProperty)


def _is_camera(_self, obj) -> bool:
    return obj.type == 'CAMERA'


class WonderlandSceneSettings(bpy.types.PropertyGroup):
    # Inputs ----------------------------------------------------------------------------------------
    image_path: StringProperty(name="Image File", subtype='FILE_PATH',
                               description="The input picture (used when no image datablock is picked)")
    image: PointerProperty(name="Image", type=bpy.types.Image,
                           description="An image datablock to use as input (wins over the file path)")
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=_is_camera,
                            description="The camera whose motion is the trajectory (empty: the scene camera)")
    frame_start: IntProperty(name="Start", min=0, default=0,
                             description="First frame of the trajectory (0: the scene's start frame)")
    frame_end: IntProperty(name="End", min=0, default=0,
                           description="Last frame of the trajectory (0: the scene's end frame)")
    model: StringProperty(name="Model", description="Model name or folder (empty: the preferences' default)")
    steps: IntProperty(name="Steps", min=0, soft_max=100, default=0,
                       description="Denoising steps (0: the preferences' default)")
    seed: IntProperty(name="Seed", min=0, default=0, description="Random seed (0: the preferences' default)")
    subject_distance: FloatProperty(name="Subject Distance", min=0.0, soft_max=1000.0, default=0.0,
                                    subtype='DISTANCE',
                                    description="How far the picture's subject is from the camera: the result is "
                                                "scaled about the camera so that the picture's median depth is "
                                                "this (0: the model's own guess, a room's 2-9 m)")
    use_ground: BoolProperty(name="Ground", default=True,
                             description="The camera stands over a ground plane at Ground Z (Blender's floor grid "
                                         "by default): a model that reads the ground sizes the scene by the "
                                         "camera's height over it. Off: the size comes from the picture alone")
    ground_z: FloatProperty(name="Ground Z", default=0.0, soft_min=-100.0, soft_max=100.0, subtype='DISTANCE',
                            description="The world Z of the ground under the camera (0: Blender's floor grid)")
    video_preview: BoolProperty(name="Video Preview", default=False,
                                description="Also decode the generated video into an image sequence: a look at "
                                            "what the video model made (the 3D scene does not need it)")

    # The last trajectory range check (trajectory.record_range): the panel cannot step frames while drawing
    checked_camera: StringProperty(name="Checked Camera", options={'SKIP_SAVE'})
    checked_frame_start: IntProperty(name="Checked Start", options={'SKIP_SAVE'})
    checked_frame_end: IntProperty(name="Checked End", options={'SKIP_SAVE'})
    checked_rotation_deg: FloatProperty(name="Largest Rotation", options={'SKIP_SAVE'})
    checked_travel: FloatProperty(name="Largest Travel", description="Over the focus distance",
                                  options={'SKIP_SAVE'})

    # Job runner state ------------------------------------------------------------------------------
    is_running: BoolProperty(name="Running", default=False, options={'SKIP_SAVE'})
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, default=0.0, subtype='FACTOR',
                            options={'SKIP_SAVE'})
    stage: StringProperty(name="Stage", options={'SKIP_SAVE'})
    step: IntProperty(name="Step", min=0, default=0, options={'SKIP_SAVE'})
    total: IntProperty(name="Total", min=0, default=0, options={'SKIP_SAVE'})
    status: StringProperty(name="Status", description="A one-line status message")

    # Last result -----------------------------------------------------------------------------------
    last_result_path: StringProperty(name="Last Result", subtype='FILE_PATH')
    last_count: IntProperty(name="Gaussians", min=0, default=0)
    last_seconds: FloatProperty(name="Seconds", min=0.0, default=0.0)
    last_error: StringProperty(name="Last Error")
    last_move_length: FloatProperty(name="Camera Move", min=0.0, default=0.0,
                                    description="How far the last result's camera moved: it sets the scene's size "
                                                "unless the model is metric")
    last_scene_scale: StringProperty(name="Scene Scale", default="path",
                                     description="How the last result's model sized the scene: path (by the camera "
                                                 "move) or metric (metres it learned)")
    last_subject_distance: FloatProperty(name="Subject Distance Used", min=0.0, default=0.0, subtype='DISTANCE',
                                         description="The Subject Distance the last result was sized to (0: none)")
    last_camera_height: FloatProperty(name="Camera Height Used", min=0.0, default=0.0, subtype='DISTANCE',
                                      description="The camera's height over the ground the last result was sized "
                                                  "by (0: none)")
    last_warnings: StringProperty(name="Backend Warnings", description="The last job's warnings, one a line")


def settings(context) -> WonderlandSceneSettings:
    return context.scene.wonderland


def effective_camera(context):
    """The picked camera, else the scene camera, else None. Not necessarily a camera: the scene's camera
    may be any object, so users of it check it (trajectory.check_camera says what is wrong)."""
    return context.scene.wonderland.camera or context.scene.camera


def effective_frame_range(context) -> tuple[int, int]:
    """(start, end), inclusive: the picked range where set (non-zero), else the scene's."""
    scene, s = context.scene, context.scene.wonderland
    start = s.frame_start or scene.frame_start
    end = s.frame_end or scene.frame_end
    return start, end


def register():
    bpy.utils.register_class(WonderlandSceneSettings)
    bpy.types.Scene.wonderland = PointerProperty(type=WonderlandSceneSettings)


def unregister():
    del bpy.types.Scene.wonderland
    bpy.utils.unregister_class(WonderlandSceneSettings)
