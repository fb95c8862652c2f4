"""File ▸ Import / Export of Gaussian splat files as Wonderland point clouds.

Import reads a 3DGS PLY, SuperSplat's compressed PLY, Niantic's SPZ or antimatter15's .splat (picked by
content, formats/); export writes a standard PLY or an SPZ.

Our backend writes PLYs in Blender's own world frame (Z up), so the default axes (Y forward, Z up) are
the identity; files from tools with another up axis (most 3DGS trainers: OpenCV/COLMAP worlds, Y down)
can be turned upright with the Forward/Up options, as Blender's other importers do.
"""
from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper, axis_conversion, orientation_helper

from .display import solid_view_note
from .formats import FormatError, read_gaussians
from .formats.spz import write_spz
from .plyio import PlyError, Splats, write_ply
from .pointcloud import create_object, is_gaussian_object, read_splats, transform_splats, transform_warning


@orientation_helper(axis_forward='Y', axis_up='Z')
class WONDERLAND_OT_import_gaussians(bpy.types.Operator, ImportHelper):
    """Import 3D Gaussian splats (3DGS or compressed PLY, SPZ, .splat) as a point cloud"""
    bl_idname = "wonderland.import_gaussians"
    bl_label = "Import Gaussians"
    bl_options = {'REGISTER', 'UNDO'}

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply;*.spz;*.splat", options={'HIDDEN'})

    def execute(self, context):
        try:
            result = read_gaussians(self.filepath)
        except (PlyError, FormatError) as e:
            self.report({'ERROR'}, str(e))
            return {'CANCELLED'}
        if len(result.splats) == 0:
            extra = f" ({result.dropped} rows with NaN/inf values were dropped)" if result.dropped else ""
            self.report({'ERROR'}, f"{Path(self.filepath).name} holds no Gaussians{extra}.")
            return {'CANCELLED'}
        to_blender = axis_conversion(from_forward=self.axis_forward, from_up=self.axis_up).to_4x4()
        splats = transform_splats(result.splats, to_blender)
        if context.view_layer.objects.active is not None and context.mode != 'OBJECT':
            bpy.ops.object.mode_set(mode='OBJECT')
        obj = create_object(context, Path(self.filepath).stem, splats)
        message = f"Imported {len(splats):,} Gaussians into '{obj.name}'"
        if result.dropped:
            message += f"; dropped {result.dropped:,} rows with NaN/inf values"
        message += solid_view_note()
        self.report({'WARNING'} if result.dropped else {'INFO'}, message)
        return {'FINISHED'}


class _ExportGaussians(ExportHelper):
    """What the PLY and SPZ exporters share: which objects, their evaluated Gaussians, the axes; each
    exporter adds write(path, splats)."""
    # Exporting changes nothing in the .blend, so it pushes no undo step (as Blender's exporters).
    bl_options = {'REGISTER'}

    use_selection: BoolProperty(name="Selected Only", default=True,
                                description="Export only the selected Gaussian objects, else all in the scene")

    def execute(self, context):
        candidates = context.selected_objects if self.use_selection else context.scene.objects
        objects = [o for o in candidates if is_gaussian_object(o)]
        if not objects:
            where = "selected" if self.use_selection else "in the scene"
            self.report({'ERROR'}, f"No Wonderland Gaussian point cloud {where}: import a 3DGS PLY or "
                                   "select one (or untick Selected Only).")
            return {'CANCELLED'}
        depsgraph = context.evaluated_depsgraph_get()
        from_blender = axis_conversion(to_forward=self.axis_forward, to_up=self.axis_up).to_4x4()
        try:
            parts = [read_splats(o.evaluated_get(depsgraph)) for o in objects]
            inexact = [f"'{o.name}': {w}" for o, p in zip(objects, parts)
                       if (w := transform_warning(o.matrix_world, p))]
            splats = transform_splats(Splats.concatenate(parts), from_blender)
            self.write(self.filepath, splats)
        except (ValueError, OSError) as e:
            self.report({'ERROR'}, f"Cannot export {Path(self.filepath).name}: {e}")
            return {'CANCELLED'}
        message = f"Exported {len(splats):,} Gaussians from {len(objects)} object(s)"
        self.report({'WARNING'} if inexact else {'INFO'}, "; ".join([message, *inexact]))
        return {'FINISHED'}


@orientation_helper(axis_forward='Y', axis_up='Z')
class WONDERLAND_OT_export_gaussians(bpy.types.Operator, _ExportGaussians):
    """Export Wonderland Gaussian point clouds as a standard 3DGS PLY (world transform and edit modifiers applied)"""
    bl_idname = "wonderland.export_gaussians"
    bl_label = "Export Gaussians"

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply", options={'HIDDEN'})

    def write(self, path: str, splats: Splats) -> None:
        write_ply(path, splats)


@orientation_helper(axis_forward='Y', axis_up='Z')
class WONDERLAND_OT_export_spz(bpy.types.Operator, _ExportGaussians):
    """Export Wonderland Gaussian point clouds as a Niantic SPZ (version 3: a fraction of the PLY, quantized)"""
    bl_idname = "wonderland.export_spz"
    bl_label = "Export Gaussians (SPZ)"

    filename_ext = ".spz"
    filter_glob: StringProperty(default="*.spz", options={'HIDDEN'})

    def write(self, path: str, splats: Splats) -> None:
        write_spz(path, splats)


def _menu_import(self, context):
    self.layout.operator(WONDERLAND_OT_import_gaussians.bl_idname, text="Gaussian Splats (.ply, .spz, .splat)")


def _menu_export(self, context):
    self.layout.operator(WONDERLAND_OT_export_gaussians.bl_idname, text="Gaussian Splats (.ply)")
    self.layout.operator(WONDERLAND_OT_export_spz.bl_idname, text="Gaussian Splats (.spz)")


_CLASSES = (WONDERLAND_OT_import_gaussians, WONDERLAND_OT_export_gaussians, WONDERLAND_OT_export_spz)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)
    bpy.types.TOPBAR_MT_file_export.append(_menu_export)


def unregister():
    bpy.types.TOPBAR_MT_file_export.remove(_menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
