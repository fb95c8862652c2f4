"""Operator: give the camera the photo's aspect and, where its EXIF says, its lens (photo_lens holds the maths)."""
from __future__ import annotations

import bpy

from .intrinsics import opencv_c2w, pitch_deg
from .panel import input_image_size
from .photo_lens import BLENDER_SENSOR_MM, blender_lens, focal_length_35mm, photo_resolution, read_head
from .presets import channelbag
from .properties import effective_camera


def photo_head(settings) -> bytes:
    """The first bytes of the input picture's file, or of its packed data: where EXIF is. b"" for a generated
    image, which has none. OSError when its file cannot be read."""
    image = settings.image
    if image is None:
        return read_head(bpy.path.abspath(settings.image_path))
    if image.packed_file is not None:
        return image.packed_file.data
    if image.source != 'FILE' or not image.filepath:
        return b""
    return read_head(bpy.path.abspath(image.filepath, library=image.library))


def lens_is_keyed(camera_data) -> bool:
    """Whether the camera's lens is animated (its keys, not the value set here, decide each frame's lens)."""
    bag = channelbag(camera_data)
    return bag is not None and any(fc.data_path == "lens" for fc in bag.fcurves)


def tilt_text(cam_obj) -> str:
    """What the report says of the camera's pitch, which the operator leaves to the artist (EXIF has none)."""
    try:
        pitch = pitch_deg(opencv_c2w(cam_obj.matrix_world))
    except ValueError:          # a mirrored or sheared camera: the panel says what is wrong with it
        return ""
    if abs(pitch) < 1.0:
        return "; the camera is level: tilt it as the photo was taken, if it was not"
    return (f"; the camera looks {abs(pitch):.0f}° {'down' if pitch < 0 else 'up'} here: give it the photo's tilt "
            f"(the default model reads the scene's size from it)")


class WONDERLAND_OT_match_photo_camera(bpy.types.Operator):
    """Give the camera the photo's aspect (the render resolution) and, where its EXIF says, the photo's lens: the
    default model reads the scene's size partly from the field of view"""
    bl_idname = "wonderland.match_photo_camera"
    bl_label = "Match Camera to Photo"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        s = context.scene.wonderland
        cam_obj = effective_camera(context)
        if cam_obj is None or cam_obj.type != 'CAMERA' or cam_obj.data.type != 'PERSP':
            self.report({'ERROR'}, "no perspective camera: pick one in the Wonderland panel or set the scene's camera")
            return {'CANCELLED'}
        if s.image is None and not s.image_path:
            self.report({'ERROR'}, "no image: pick an image datablock or an image file in the Wonderland panel")
            return {'CANCELLED'}
        size = input_image_size(s)
        if size is None:
            self.report({'ERROR'}, "the image's size is unknown: pick a PNG or JPEG file, or an image datablock "
                                   "that is loaded (open it in the Image Editor)")
            return {'CANCELLED'}
        try:
            focal = focal_length_35mm(photo_head(s))
        except OSError as e:
            self.report({'ERROR'}, f"cannot read the image file: {e}")
            return {'CANCELLED'}

        render = context.scene.render
        render.resolution_x, render.resolution_y = photo_resolution(*size, max(render.resolution_x,
                                                                                render.resolution_y))
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
        said = f"resolution {render.resolution_x}×{render.resolution_y} (the photo's {size[0]}×{size[1]})"
        tilt = tilt_text(cam_obj)
        if focal is None:
            self.report({'WARNING'}, f"{said}; the photo's EXIF gives no 35 mm-equivalent focal length, so the "
                                     f"lens stays {cam_obj.data.lens:.1f} mm: set it to the photo's if you know it "
                                     f"(on a 3:2 photo the 35 mm-equivalent focal length is the lens){tilt}")
            return {'FINISHED'}
        lens = blender_lens(focal, *size)
        if lens_is_keyed(cam_obj.data):
            self.report({'WARNING'}, f"{said}; the lens is keyed, so its keys decide: key it at {lens:.1f} mm "
                                     f"(the photo's {focal:.0f} mm in 35 mm terms){tilt}")
            return {'FINISHED'}
        cam = cam_obj.data
        cam.sensor_fit, cam.sensor_width, cam.lens = 'AUTO', BLENDER_SENSOR_MM, lens
        self.report({'INFO'}, f"{said}; lens {lens:.1f} mm on a {BLENDER_SENSOR_MM:.0f} mm sensor (the photo's "
                              f"{focal:.0f} mm in 35 mm terms){tilt}")
        return {'FINISHED'}


def register():
    bpy.utils.register_class(WONDERLAND_OT_match_photo_camera)


def unregister():
    bpy.utils.unregister_class(WONDERLAND_OT_match_photo_camera)
