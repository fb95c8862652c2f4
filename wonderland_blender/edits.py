"""Non-destructive edits of Gaussian clouds: geometry-nodes modifiers named "Wonderland …".

Each edit is a node group built here (once per .blend) that keeps the geometry a point cloud with the
Gaussian attributes (pointcloud.GAUSSIAN_ATTRIBUTES): culls delete points, adjustments rewrite
`splat_color` / `opacity`. The modifiers sit before the display modifier ("Wonderland Splats", which stays
last), so the viewport, F12 and every exporter (pointcloud.read_splats on the evaluated object) see the
same edited Gaussians. Applying them bakes the result into the point cloud.
"""
from __future__ import annotations

from dataclasses import dataclass

import bpy

from .display import MODIFIER_NAME as DISPLAY_MODIFIER  # the display modifier: always last, never an edit
from .node_graph import NodeGraph

PREFIX = "Wonderland "
LUMINANCE = (0.2126, 0.7152, 0.0722)  # Rec. 709 weights of linear RGB, as Blender's own colour nodes


@dataclass(frozen=True)
class Input:
    name: str
    socket: str
    default: object = None
    min: float | None = None
    max: float | None = None
    description: str = ""


class _Graph(NodeGraph):
    """An edit's node group: its Group Input and Output nodes, and the steps the edits share."""

    def __init__(self, group):
        super().__init__(group)
        self.input = self.tree.nodes.new("NodeGroupInput")
        self.output = self.tree.nodes.new("NodeGroupOutput")

    def local_position(self, obj_socket):
        """Each point's position in the frame of the object plugged into `obj_socket`."""
        info = self.node("GeometryNodeObjectInfo", obj_socket, transform_space='RELATIVE')
        inverse = self.out("FunctionNodeInvertMatrix", info.outputs["Transform"])
        return self.out("FunctionNodeTransformPoint", self.out("GeometryNodeInputPosition"), inverse)

    def delete(self, selection) -> None:
        kept = self.out("GeometryNodeDeleteGeometry", self.input.outputs["Geometry"], selection, domain='POINT')
        self.link(kept, self.output, "Geometry")


def _crop_box(g: _Graph) -> None:
    """Keep the Gaussians inside the box object's ±1 cube (an empty drawn as a cube of size 1)."""
    p = g.out("ShaderNodeSeparateXYZ", g.vmath('ABSOLUTE', g.local_position(g.input.outputs["Box"])))
    inside = g.compare('LESS_EQUAL', g.math('MAXIMUM', g.math('MAXIMUM', p, p.node.outputs["Y"]),
                                            p.node.outputs["Z"]), 1.0)
    g.delete(g.logic('XNOR', inside, g.input.outputs["Invert"]))  # delete outside, or inside when inverted


def _camera_cull(g: _Graph) -> None:
    """Keep the Gaussians in front of the camera and within its frame widened by the margin."""
    p = g.out("ShaderNodeSeparateXYZ", g.local_position(g.input.outputs["Camera"]))
    depth = g.math('MULTIPLY', p.node.outputs["Z"], -1.0)  # cameras look down their −Z
    widen = g.math('ADD', g.input.outputs["Margin"], 1.0)
    outside = [g.compare('GREATER_THAN', g.math('ABSOLUTE', axis),
                         g.math('MULTIPLY', depth, g.math('MULTIPLY', g.input.outputs[tan], widen)))
               for axis, tan in ((p, "Tan X"), (p.node.outputs["Y"], "Tan Y"))]
    behind = g.compare('LESS_EQUAL', depth, g.input.outputs["Near"])
    g.delete(g.logic('OR', g.logic('OR', *outside), behind))


def _filter(g: _Graph) -> None:
    """Remove faint Gaussians (opacity below the minimum) and, when Max Size > 0, large ones."""
    faint = g.compare('LESS_THAN', g.attribute("opacity", 'FLOAT'), g.input.outputs["Min Opacity"])
    s = g.out("ShaderNodeSeparateXYZ", g.attribute("scale", 'FLOAT_VECTOR'))
    size = g.math('MAXIMUM', g.math('MAXIMUM', s, s.node.outputs["Y"]), s.node.outputs["Z"])
    limit = g.input.outputs["Max Size"]
    large = g.logic('AND', g.compare('GREATER_THAN', limit, 0.0), g.compare('GREATER_THAN', size, limit))
    g.delete(g.logic('OR', faint, large))


def _decimate(g: _Graph) -> None:
    """Keep a random share of the Gaussians (the same ones for the same seed)."""
    share = g.math('DIVIDE', g.input.outputs["Keep"], 100.0)
    keep = g.out("FunctionNodeRandomValue", share, None, g.input.outputs["Seed"], data_type='BOOLEAN')
    g.delete(g.logic('NOT', keep))


def _color(g: _Graph) -> None:
    """Saturation around the Rec. 709 luminance, then tint and brightness, on the linear `splat_color`;
    opacity multiplied and clamped to 0..1. View-dependent SH terms (sh_rest_*) are left as they are."""
    color = g.attribute("splat_color", 'FLOAT_COLOR')
    luma = g.vmath('DOT_PRODUCT', color, LUMINANCE)
    saturated = g.vmath('ADD', g.vmath('SCALE', g.vmath('SUBTRACT', color, luma), g.input.outputs["Saturation"]),
                        luma)
    tinted = g.vmath('SCALE', g.vmath('MULTIPLY', saturated, g.input.outputs["Tint"]),
                     g.input.outputs["Brightness"])
    stored = g.out("GeometryNodeStoreNamedAttribute", g.input.outputs["Geometry"], None, "splat_color",
                   g.vmath('MAXIMUM', tinted, (0.0, 0.0, 0.0)), data_type='FLOAT_COLOR', domain='POINT')
    opacity = g.math('MULTIPLY', g.attribute("opacity", 'FLOAT'), g.input.outputs["Opacity"], use_clamp=True)
    result = g.out("GeometryNodeStoreNamedAttribute", stored, None, "opacity", opacity,
                   data_type='FLOAT', domain='POINT')
    g.link(result, g.output, "Geometry")


@dataclass(frozen=True)
class Edit:
    key: str
    label: str
    description: str
    inputs: tuple[Input, ...]
    build: object

    @property
    def name(self) -> str:
        return PREFIX + self.label


EDITS = {e.key: e for e in (
    Edit("CROP_BOX", "Crop Box", "Keep the Gaussians inside a box (an empty you move and scale)",
         (Input("Box", "NodeSocketObject", description="Empty drawn as a cube of size 1: its ±1 cube is kept"),
          Input("Invert", "NodeSocketBool", False, description="Remove the inside instead")), _crop_box),
    Edit("CAMERA_CULL", "Camera Cull", "Remove the Gaussians outside the camera's view",
         (Input("Camera", "NodeSocketObject", description="The camera whose view is kept"),
          Input("Tan X", "NodeSocketFloat", 0.5, 0.0, description="tan(half horizontal angle of view)"),
          Input("Tan Y", "NodeSocketFloat", 0.3, 0.0, description="tan(half vertical angle of view)"),
          Input("Margin", "NodeSocketFloat", 0.1, 0.0, description="Keep this fraction beyond the frame edges"),
          Input("Near", "NodeSocketFloat", 0.0, 0.0, description="Remove Gaussians closer than this")),
         _camera_cull),
    Edit("FILTER", "Filter", "Remove faint or oversized Gaussians",
         (Input("Min Opacity", "NodeSocketFloat", 0.02, 0.0, 1.0, "Remove Gaussians less opaque than this"),
          Input("Max Size", "NodeSocketFloat", 0.0, 0.0,
                description="Remove Gaussians whose largest std-dev (object space) exceeds this; 0: no limit")),
         _filter),
    Edit("DECIMATE", "Decimate", "Keep a random percentage of the Gaussians",
         (Input("Keep", "NodeSocketFloat", 50.0, 0.0, 100.0, "Percentage of Gaussians kept"),
          Input("Seed", "NodeSocketInt", 0, description="Which random subset")), _decimate),
    Edit("COLOR", "Color", "Adjust brightness, saturation, tint and opacity",
         (Input("Brightness", "NodeSocketFloat", 1.0, 0.0, description="Multiplies the colour"),
          Input("Saturation", "NodeSocketFloat", 1.0, 0.0, description="0 grey, 1 unchanged, above 1 vivid"),
          Input("Tint", "NodeSocketColor", (1.0, 1.0, 1.0, 1.0), description="Multiplies the colour per channel"),
          Input("Opacity", "NodeSocketFloat", 1.0, 0.0, description="Multiplies the opacity (clamped to 1)")),
         _color),
)}


def node_group(edit: Edit):
    """The edit's node group, built on first use (and again if someone deleted it)."""
    group = bpy.data.node_groups.get(edit.name)
    if group is not None and group.bl_idname == "GeometryNodeTree":
        return group
    group = bpy.data.node_groups.new(edit.name, "GeometryNodeTree")
    group.interface.new_socket("Geometry", in_out='INPUT', socket_type="NodeSocketGeometry")
    for spec in edit.inputs:
        item = group.interface.new_socket(spec.name, in_out='INPUT', socket_type=spec.socket)
        item.description = spec.description
        if spec.default is not None:
            item.default_value = spec.default
        if spec.min is not None:
            item.min_value = spec.min
        if spec.max is not None:
            item.max_value = spec.max
    group.interface.new_socket("Geometry", in_out='OUTPUT', socket_type="NodeSocketGeometry")
    edit.build(_Graph(group))
    return group


def edit_of(modifier) -> Edit | None:
    """The edit a modifier is, by its node group (names may get .001 suffixes)."""
    if modifier.type != 'NODES' or modifier.node_group is None:
        return None
    return next((e for e in EDITS.values() if modifier.node_group.name.split(".")[0] == e.name), None)


def edit_modifiers(obj) -> list:
    return [m for m in obj.modifiers if edit_of(m) is not None]


def input_identifier(modifier, name: str) -> str:
    """The modifier's ID-property key ("Socket_N") of the node-group input called `name`."""
    return next(i.identifier for i in modifier.node_group.interface.items_tree
                if i.item_type == 'SOCKET' and i.in_out == 'INPUT' and i.name == name)


def input_path(modifier, name: str) -> str:
    """The property path of a node-group input on the modifier, for layout.prop and drivers."""
    return f'["{input_identifier(modifier, name)}"]'


def set_input(modifier, name: str, value) -> None:
    """Set a node-group input on the modifier and re-evaluate its object (ID properties do not tag it)."""
    modifier[input_identifier(modifier, name)] = value
    modifier.id_data.update_tag()


def add_edit(obj, key: str):
    """Add an edit modifier to a Gaussian object, before the display modifier if there is one."""
    edit = EDITS[key]
    modifier = obj.modifiers.new(edit.name, 'NODES')
    modifier.node_group = node_group(edit)
    display = obj.modifiers.find(DISPLAY_MODIFIER)
    if display >= 0:
        with bpy.context.temp_override(object=obj, active_object=obj):
            bpy.ops.object.modifier_move_to_index(modifier=modifier.name, index=display)
    return modifier


# tan(half angle of view) per axis from the sensor fit (AUTO 0, HORIZONTAL 1, VERTICAL 2): the fitted sensor
# size spans the width, the height, or (AUTO) the longer side of the frame.
_TAN_EXPRESSIONS = {
    "Tan X": "sw / (2 * lens) * min(1, rx / ry) if fit == 0 else (sw / (2 * lens) if fit == 1 "
             "else sh / (2 * lens) * rx / ry)",
    "Tan Y": "sw / (2 * lens) * min(1, ry / rx) if fit == 0 else (sw / (2 * lens) * ry / rx if fit == 1 "
             "else sh / (2 * lens))",
}


def drive_camera_frustum(modifier, scene, camera) -> None:
    """Tan X / Tan Y follow the camera's lens, sensor and sensor fit and the scene's resolution (pixel
    aspect and lens shift are not followed: the Margin absorbs small shifts)."""
    for name, expression in _TAN_EXPRESSIONS.items():
        path = input_path(modifier, name)
        modifier.driver_remove(path)
        driver = modifier.driver_add(path).driver
        driver.type = 'SCRIPTED'
        for var_name, id_type, target, data_path in (
                ("lens", 'CAMERA', camera.data, "lens"), ("sw", 'CAMERA', camera.data, "sensor_width"),
                ("sh", 'CAMERA', camera.data, "sensor_height"), ("fit", 'CAMERA', camera.data, "sensor_fit"),
                ("rx", 'SCENE', scene, "render.resolution_x"), ("ry", 'SCENE', scene, "render.resolution_y")):
            var = driver.variables.new()
            var.name, var.type = var_name, 'SINGLE_PROP'
            var.targets[0].id_type = id_type
            var.targets[0].id = target
            var.targets[0].data_path = data_path
        driver.expression = expression  # a simple expression: no Python auto-run needed


def apply_edits(obj) -> int:
    """Bake the object's edit modifiers into its point cloud, first to last; returns how many."""
    names = [m.name for m in edit_modifiers(obj)]
    with bpy.context.temp_override(object=obj, active_object=obj):
        for name in names:
            bpy.ops.object.modifier_apply(modifier=name)
    return len(names)
