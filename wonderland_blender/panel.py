"""The View3D ▸ Sidebar ▸ Wonderland panel, and the pure helpers that decide what it shows."""
from __future__ import annotations

import os
import struct

import bpy

from .intrinsics import center_crop_size
from .presets import PRESETS
from .properties import effective_camera, effective_frame_range
from .trajectory import MODEL_FRAMES, TrajectoryError, check_camera, recorded_range

MODEL_INPUT_SIZE = (720, 480)  # width, height the paper model consumes (480×720 in the paper's H×W)
JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_file_size(path: str) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without loading the image (drawing may not add datablocks)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                return struct.unpack(">II", head[16:24])
            if head[:2] != b"\xff\xd8":
                return None
            fh.seek(2)
            while True:
                marker = fh.read(4)
                if len(marker) < 4 or marker[0] != 0xFF:
                    return None
                length = struct.unpack(">H", marker[2:4])[0]
                if marker[1] in JPEG_SOF_MARKERS:
                    height, width = struct.unpack(">xHH", fh.read(5))
                    return width, height
                fh.seek(length - 2, os.SEEK_CUR)
    except (OSError, struct.error):
        return None


def input_image_size(settings) -> tuple[int, int] | None:
    """The input image's size: the image datablock's, else the file's header (None when unknown)."""
    if settings.image is not None:
        w, h = settings.image.size
        return (w, h) if w > 0 and h > 0 else None
    path = bpy.path.abspath(settings.image_path) if settings.image_path else ""
    return image_file_size(path) if path else None


def framing_text(image_w: int, image_h: int, model_w: int = MODEL_INPUT_SIZE[0],
                 model_h: int = MODEL_INPUT_SIZE[1]) -> str:
    """What the model sees of the picture, e.g. 'Image 1024×1024 → center crop 1024×683 → 720×480'."""
    crop_w, crop_h = center_crop_size(image_w, image_h, model_w, model_h)
    crop_w, crop_h = round(crop_w), round(crop_h)
    if (crop_w, crop_h) == (image_w, image_h):
        return f"Image {image_w}×{image_h} → {model_w}×{model_h}"
    return f"Image {image_w}×{image_h} → center crop {crop_w}×{crop_h} → {model_w}×{model_h}"


def frames_text(start: int, end: int) -> str:
    count = end - start + 1
    if count < 1:
        return f"Frames {start}–{end}: empty, the end must not be before the start"
    note = "" if count == MODEL_FRAMES else f", resampled to the model's {MODEL_FRAMES}"
    return f"Frames {start}–{end} ({count}{note})"


def progress_text(settings) -> str:
    """'denoise 12/50' style text for the progress bar."""
    stage = settings.stage or "starting"
    return f"{stage} {settings.step}/{settings.total}" if settings.total else stage


def camera_problem(context) -> str | None:
    """Why the effective camera cannot be used, or None when it can."""
    try:
        check_camera(effective_camera(context))
    except TrajectoryError as e:
        return str(e)
    return None


def operator_available(bl_idname_class: str) -> bool:
    """Whether an operator class (e.g. 'WONDERLAND_OT_generate', added by a later module) is registered."""
    return hasattr(bpy.types, bl_idname_class)


class WONDERLAND_PT_main(bpy.types.Panel):
    bl_idname = "WONDERLAND_PT_main"
    bl_label = "Wonderland"
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Wonderland"

    def draw(self, context):
        try:
            self._draw(context)
        except Exception as e:  # a panel that raises goes blank; say what broke instead
            self.layout.label(text=f"Panel error: {e}", icon='ERROR')

    def _draw(self, context):
        layout, s = self.layout, context.scene.wonderland

        col = layout.column(align=True)
        col.prop(s, "image")
        if s.image is None:
            col.prop(s, "image_path", text="")
        size = input_image_size(s)
        if size is not None:
            layout.label(text=framing_text(*size), icon='IMAGE_DATA')
        elif s.image is not None or s.image_path:
            layout.label(text="Image size unknown (PNG and JPEG headers are read)", icon='INFO')

        layout.prop(s, "camera")
        cam_obj = effective_camera(context)
        if s.camera is None and cam_obj is not None:
            layout.label(text=f"Using the scene camera '{cam_obj.name}'", icon='CAMERA_DATA')
        problem = camera_problem(context)
        if problem:
            layout.label(text=problem, icon='ERROR')

        row = layout.row(align=True)
        row.prop(s, "frame_start")
        row.prop(s, "frame_end")
        start, end = effective_frame_range(context)
        layout.label(text=frames_text(start, end))

        if not problem:
            checked = recorded_range(s, cam_obj, start, end)
            if checked is None:
                layout.operator("wonderland.check_trajectory", icon='VIEWZOOM')
            else:
                warnings = checked.warnings()
                for warning in warnings:
                    layout.label(text=f"Out of the trained range: {warning}", icon='ERROR')
                if not warnings:
                    layout.label(text=f"Within the trained range (≤ {checked.max_rotation_deg:.0f}°, "
                                      f"{checked.max_travel:.2f}× focus distance)", icon='CHECKMARK')

        box = layout.box()
        box.label(text="Camera Moves")
        grid = box.grid_flow(columns=3, align=True)
        for preset, label, _ in PRESETS:
            grid.operator("wonderland.add_trajectory", text=label).preset = preset
        box.operator("wonderland.export_trajectory", icon='EXPORT')

        col = layout.column(align=True)
        col.prop(s, "model")
        row = col.row(align=True)
        row.prop(s, "steps")
        row.prop(s, "seed")
        col.prop(s, "video_preview")

        if s.is_running:
            layout.progress(factor=s.progress, text=progress_text(s))
            if operator_available("WONDERLAND_OT_cancel"):
                layout.operator("wonderland.cancel", icon='CANCEL')
        elif operator_available("WONDERLAND_OT_generate"):
            layout.operator("wonderland.generate", icon='PLAY')
        if s.status:
            layout.label(text=s.status)

        if s.last_error:
            layout.label(text=s.last_error, icon='ERROR')
        if s.last_result_path:
            box = layout.box()
            box.label(text=f"Last: {s.last_count:,} Gaussians in {s.last_seconds:.1f} s", icon='CHECKMARK')
            box.label(text=s.last_result_path)
            if operator_available("WONDERLAND_OT_open_preview"):
                box.operator("wonderland.open_preview", icon='IMAGE_DATA')


def register():
    bpy.utils.register_class(WONDERLAND_PT_main)


def unregister():
    bpy.utils.unregister_class(WONDERLAND_PT_main)
