"""Editing Gaussians from the Wonderland sidebar: add, remove and apply the edit modifiers of edits.py."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty
from mathutils import Vector

from . import edits
from .pointcloud import is_gaussian_object

_EDIT_ITEMS = [(e.key, e.label, e.description) for e in edits.EDITS.values()]


def _active_gaussians(context):
    obj = context.active_object
    return obj if is_gaussian_object(obj) else None


def _crop_box_for(context, obj):
    """An empty drawn as a unit cube around the object's bounds (world space), in the object's collections."""
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    lo = Vector(min(c[i] for c in corners) for i in range(3))
    hi = Vector(max(c[i] for c in corners) for i in range(3))
    box = bpy.data.objects.new(f"{obj.name} Crop Box", None)
    box.empty_display_type = 'CUBE'
    box.empty_display_size = 1.0
    box.location = (lo + hi) / 2
    box.scale = [max((h - l) / 2, 1e-3) for l, h in zip(lo, hi)]
    for collection in obj.users_collection:
        collection.objects.link(box)
    return box


class WONDERLAND_OT_edit_add(bpy.types.Operator):
    """Add a non-destructive edit to the active Gaussian cloud (it counts in the viewport, F12 and export)"""
    bl_idname = "wonderland.edit_add"
    bl_label = "Add Gaussian Edit"
    bl_options = {'REGISTER', 'UNDO'}

    kind: EnumProperty(name="Edit", items=_EDIT_ITEMS)

    @classmethod
    def poll(cls, context):
        if _active_gaussians(context) is None:
            cls.poll_message_set("Select a Wonderland Gaussian point cloud first")
            return False
        return True

    def execute(self, context):
        obj = _active_gaussians(context)
        if self.kind == 'CAMERA_CULL' and context.scene.camera is None:
            self.report({'ERROR'}, "The scene has no camera: add one (or set Scene ▸ Camera), then add the cull.")
            return {'CANCELLED'}
        modifier = edits.add_edit(obj, self.kind)
        if self.kind == 'CROP_BOX':
            edits.set_input(modifier, "Box", _crop_box_for(context, obj))
        elif self.kind == 'CAMERA_CULL':
            edits.set_input(modifier, "Camera", context.scene.camera)
            edits.drive_camera_frustum(modifier, context.scene, context.scene.camera)
        obj.update_tag()
        self.report({'INFO'}, f"Added '{modifier.name}' to '{obj.name}'")
        return {'FINISHED'}


class WONDERLAND_OT_edit_remove(bpy.types.Operator):
    """Remove this edit (its crop box empty, if any, stays)"""
    bl_idname = "wonderland.edit_remove"
    bl_label = "Remove Gaussian Edit"
    bl_options = {'REGISTER', 'UNDO'}

    modifier: StringProperty(name="Modifier")

    @classmethod
    def poll(cls, context):
        return _active_gaussians(context) is not None

    def execute(self, context):
        obj = _active_gaussians(context)
        modifier = obj.modifiers.get(self.modifier)
        if modifier is None or edits.edit_of(modifier) is None:
            self.report({'ERROR'}, f"'{obj.name}' has no Wonderland edit named '{self.modifier}'.")
            return {'CANCELLED'}
        obj.modifiers.remove(modifier)
        return {'FINISHED'}


class WONDERLAND_OT_edit_apply(bpy.types.Operator):
    """Bake all Wonderland edits of the active Gaussian cloud into its points (removed Gaussians are gone)"""
    bl_idname = "wonderland.edit_apply"
    bl_label = "Apply Gaussian Edits"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        obj = _active_gaussians(context)
        return obj is not None and bool(edits.edit_modifiers(obj))

    def execute(self, context):
        obj = _active_gaussians(context)
        if context.mode != 'OBJECT':
            bpy.ops.object.mode_set(mode='OBJECT')
        before = len(obj.data.points)
        count = edits.apply_edits(obj)
        self.report({'INFO'}, f"Applied {count} edit(s) to '{obj.name}': {before:,} → {len(obj.data.points):,} "
                              "Gaussians")
        return {'FINISHED'}


class WONDERLAND_PT_edit(bpy.types.Panel):
    """View3D ▸ Sidebar ▸ Wonderland ▸ Edit Gaussians: the active cloud's edits, in stack order."""
    bl_idname = "WONDERLAND_PT_edit"
    bl_label = "Edit Gaussians"
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Wonderland"
    bl_options = {'DEFAULT_CLOSED'}
    bl_order = 50

    @classmethod
    def poll(cls, context):
        return _active_gaussians(context) is not None

    def draw(self, context):
        layout = self.layout
        obj = _active_gaussians(context)
        space = context.space_data
        if space is not None and space.type == 'VIEW_3D' and space.shading.type == 'SOLID':
            # Attribute shows each Gaussian's colour (display.py); Material draws them grey
            layout.prop(space.shading, "color_type", text="Solid Color")
        layout.operator_menu_enum(WONDERLAND_OT_edit_add.bl_idname, "kind", text="Add Edit", icon='ADD')
        for modifier in edits.edit_modifiers(obj):
            edit = edits.edit_of(modifier)
            box = layout.box()
            row = box.row()
            row.prop(modifier, "show_viewport", text="")
            row.prop(modifier, "show_render", text="")
            row.label(text=modifier.name)
            row.operator(WONDERLAND_OT_edit_remove.bl_idname, text="", icon='X').modifier = modifier.name
            for spec in edit.inputs:
                box.prop(modifier, edits.input_path(modifier, spec.name), text=spec.name)
            if edit.key == 'CROP_BOX' and modifier.get(edits.input_identifier(modifier, "Box")) is None:
                box.label(text="No box object: every Gaussian is tested against the unit cube", icon='ERROR')
        layout.operator(WONDERLAND_OT_edit_apply.bl_idname, icon='CHECKMARK')


_CLASSES = (WONDERLAND_OT_edit_add, WONDERLAND_OT_edit_remove, WONDERLAND_OT_edit_apply, WONDERLAND_PT_edit)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
