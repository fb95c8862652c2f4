"""The View3D ▸ Sidebar ▸ Wonderland panel, and the pure helpers that decide what it shows."""
from __future__ import annotations

import functools
import os
import struct

import bpy

from .intrinsics import model_crop, render_size
from .model_info import ModelSpec, find_model_config, ground_text, read_model_spec, scale_text, weights_dirs
from .preferences import DEFAULT_MODEL, SOURCE_ROOT, get_preferences, resolve_backend_python
from .presets import PRESETS
from .properties import effective_camera, effective_frame_range
from .render_engine import ENGINE_ID
from .trajectory import TrajectoryError, check_camera, recorded_range

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


@functools.lru_cache(maxsize=8)
def _cached_spec(config: str, _mtime_ns: int) -> ModelSpec:
    return read_model_spec(config)


def chosen_model(context) -> tuple[ModelSpec | None, str]:
    """(size and frames of the model the next job uses, or None; what to say when it is unknown)."""
    prefs = get_preferences(context)
    name = context.scene.wonderland.model or (prefs.default_model if prefs is not None else DEFAULT_MODEL)
    python, _ = resolve_backend_python(prefs)
    config = find_model_config(bpy.path.abspath(name), weights_dirs(SOURCE_ROOT, python))
    if config is None:
        return None, f"Model '{name}': no wonderland.json found, its size and frames are unknown here"
    try:
        return _cached_spec(str(config), config.stat().st_mtime_ns), ""
    except (OSError, ValueError) as e:
        return None, str(e)


def framing_lines(image_w: int, image_h: int, camera_w: int, camera_h: int, spec: ModelSpec) -> list[str]:
    """What the model sees of the picture, as the backend crops it, e.g.
    ['Image 720×477 → crop 607×405 → model 96×64', 'The image (1.51:1) is cropped to the camera's 1.78:1']."""
    box, differs = model_crop(image_w, image_h, camera_w, camera_h, spec.width, spec.height)
    crop_w, crop_h = int(box[2]), int(box[3])
    model = f"model {spec.width}×{spec.height}"
    if (crop_w, crop_h) == (image_w, image_h):
        lines = [f"Image {image_w}×{image_h} → {model}"]
    else:
        lines = [f"Image {image_w}×{image_h} → crop {crop_w}×{crop_h} → {model}"]
    if differs:
        lines.append(f"The image ({image_w / image_h:.2f}:1) is cropped to the camera's "
                     f"{camera_w / camera_h:.2f}:1 (Output Properties ▸ Resolution)")
    return lines


def frames_text(start: int, end: int, model_frames: int | None) -> str:
    count = end - start + 1
    if count < 1:
        return f"Frames {start}–{end}: empty, the end must not be before the start"
    if model_frames is None or count == model_frames:
        return f"Frames {start}–{end} ({count})"
    return f"Frames {start}–{end} ({count}, resampled to the model's {model_frames})"


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
        spec, unknown = chosen_model(context)
        size = input_image_size(s)
        if size is not None and spec is not None:
            render = context.scene.render
            camera_size = render_size(render.resolution_x, render.resolution_y, render.resolution_percentage)
            for n, line in enumerate(framing_lines(*size, *camera_size, spec)):
                layout.label(text=line, icon='IMAGE_DATA' if n == 0 else 'INFO')
        elif size is None and (s.image is not None or s.image_path):
            layout.label(text="Image size unknown (PNG and JPEG headers are read)", icon='INFO')

        layout.prop(s, "camera")
        cam_obj = effective_camera(context)
        if s.camera is None and cam_obj is not None:
            layout.label(text=f"Using the scene camera '{cam_obj.name}'", icon='CAMERA_DATA')
        problem = camera_problem(context)
        if problem:
            layout.label(text=problem, icon='ERROR')
        elif size is not None and operator_available("WONDERLAND_OT_match_photo_camera"):
            layout.operator("wonderland.match_photo_camera", icon='CAMERA_DATA')

        row = layout.row(align=True)
        row.prop(s, "frame_start")
        row.prop(s, "frame_end")
        start, end = effective_frame_range(context)
        layout.label(text=frames_text(start, end, spec.frames if spec is not None else None))
        if unknown:
            layout.label(text=unknown, icon='INFO')

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
        col.prop(s, "subject_distance")
        row = col.row(align=True)
        row.prop(s, "use_ground")
        sub = row.row(align=True)
        sub.active = s.use_ground
        sub.prop(s, "ground_z")
        if s.use_ground and cam_obj is not None:   # at the current frame: drawing cannot step to the first
            text, icon = ground_text(cam_obj.matrix_world.translation.z, s.ground_z)
            col.label(text=text, icon=icon)
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
            for warning in filter(None, s.last_warnings.split("\n")):
                box.label(text=f"Backend: {warning}", icon='ERROR')
            box.label(text=scale_text(s.last_move_length, s.last_scene_scale, s.last_subject_distance,
                                      s.last_camera_height), icon='INFO')
            if operator_available("WONDERLAND_OT_open_preview"):
                box.operator("wonderland.open_preview", icon='IMAGE_DATA')
            if operator_available("WONDERLAND_OT_input_view_mesh"):
                box.operator("wonderland.input_view_mesh", icon='MESH_GRID')
        if context.scene.render.engine == ENGINE_ID and operator_available("WONDERLAND_OT_setup_mesh_mixing"):
            layout.operator("wonderland.setup_mesh_mixing", icon='NODE_COMPOSITING')


def register():
    bpy.utils.register_class(WONDERLAND_PT_main)


def unregister():
    bpy.utils.unregister_class(WONDERLAND_PT_main)
