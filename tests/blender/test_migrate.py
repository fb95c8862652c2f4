"""Files saved with the old attribute layout (raw twins, `color`) are brought to the contract when they load."""
from __future__ import annotations

import addon_utils
import bpy
import numpy as np

from wonderland_blender import display, migrate
from wonderland_blender.plyio import SH_C0, Splats
from wonderland_blender.pointcloud import create_object, read_splats

N = 32


def old_layout_object(src: Splats):
    """A point cloud as the add-on made them before the schema change: activated views that differ from the
    raw twins (an edit the old reader ignored), `color`, and the emission material reading `color`."""
    mesh = bpy.data.meshes.new("old")
    mesh.vertices.add(N)
    mesh.attributes["position"].data.foreach_set("vector", src.means.ravel())

    def put(name, kind, prop, values):
        mesh.attributes.new(name, kind, 'POINT').data.foreach_set(prop, np.asarray(values, np.float32).ravel())

    put("color", 'FLOAT_COLOR', "color", np.full((N, 4), 0.5))
    put("opacity", 'FLOAT', "value", np.full(N, 0.123))
    put("scale", 'FLOAT_VECTOR', "vector", np.full((N, 3), 9.0))
    put("rotation", 'QUATERNION', "value", np.tile([1.0, 0, 0, 0], (N, 1)))
    put("radius", 'FLOAT', "value", np.full(N, 0.1))
    put("f_dc", 'FLOAT_VECTOR', "vector", src.f_dc)
    put("opacity_logit", 'FLOAT', "value", src.opacity_logits)
    put("log_scale", 'FLOAT_VECTOR', "vector", src.log_scales)
    put("rot_raw", 'QUATERNION', "value", src.quats)
    put("sh_rest_00", 'FLOAT_VECTOR', "vector", src.f_rest[:, 0])
    obj = bpy.data.objects.new("old", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    bpy.ops.object.convert(target='POINTCLOUD')
    for helper in [a.name for a in obj.data.attributes if a.name.startswith(".")]:
        obj.data.attributes.remove(obj.data.attributes[helper])
    mat = bpy.data.materials.new("Wonderland Gaussians")
    attr = mat.node_tree.nodes.new("ShaderNodeAttribute")
    attr.attribute_name = "color"
    obj.data.materials.append(mat)
    return obj


def test_old_file_gets_the_new_attributes_from_the_raw_twins(scene, tmp_path):
    rng = np.random.default_rng(1)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    src = Splats(f(N, 3), 2 * f(N, 3), f(N, 1, 3), 3 * f(N), f(N, 3) - 2, f(N, 4))
    old_layout_object(src)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "old.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "old.blend"))

    obj = bpy.data.objects["old"]
    assert {a.name for a in obj.data.attributes} == {"position", "splat_color", "opacity", "scale", "rotation",
                                                     "radius", "sh_rest_00"}
    assert [m.name for m in obj.modifiers] == [display.MODIFIER_NAME]
    assert "Wonderland Gaussians" not in [m.name for m in obj.data.materials if m]
    assert bpy.data.materials[display.SPLAT_MATERIAL].node_tree.nodes.get("Attribute").attribute_name == display.UV_NAME
    out = read_splats(obj.evaluated_get(bpy.context.evaluated_depsgraph_get()))
    np.testing.assert_allclose(out.f_dc, src.f_dc, rtol=1e-6, atol=1e-6)  # colours beyond 0..1 included
    assert (0.5 + SH_C0 * src.f_dc > 1).any()
    np.testing.assert_allclose(out.log_scales, src.log_scales, atol=1e-6)
    sigmoid = lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))  # noqa: E731
    np.testing.assert_allclose(sigmoid(out.opacity_logits), sigmoid(src.opacity_logits), atol=6e-8)
    np.testing.assert_allclose(out.quats, src.quats / np.linalg.norm(src.quats, axis=1, keepdims=True), atol=2e-7)
    assert out.f_rest.tobytes() == src.f_rest.tobytes() and out.means.tobytes() == src.means.tobytes()


def test_current_files_are_left_alone(scene, tmp_path):
    z = np.zeros((N, 3), np.float32)
    identity = np.tile(np.float32([1, 0, 0, 0]), (N, 1))
    src = Splats(z, z, np.zeros((N, 0, 3), np.float32), np.zeros(N, np.float32), z - 2, identity)
    obj = create_object(bpy.context, "new", src)
    obj.data.attributes["opacity"].data.foreach_set("value", np.full(N, 0.25, np.float32))  # an edit
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "new.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "new.blend"))
    opacity = np.empty(N, np.float32)
    bpy.data.objects["new"].data.attributes["opacity"].data.foreach_get("value", opacity)
    assert (opacity == 0.25).all()
    assert [m.name for m in bpy.data.objects["new"].modifiers] == [display.MODIFIER_NAME]


def test_the_load_handler_lives_as_long_as_the_add_on():
    for _ in range(2):
        addon_utils.enable("wonderland_blender", default_set=True, handle_error=None)
        assert list(bpy.app.handlers.load_post).count(migrate._on_load) == 1
        addon_utils.disable("wonderland_blender", default_set=True)
        assert migrate._on_load not in bpy.app.handlers.load_post


def test_an_older_display_group_is_replaced_on_load(scene, tmp_path):
    z = np.zeros((N, 3), np.float32)
    obj = create_object(bpy.context, "G", Splats(z, z, np.zeros((N, 0, 3), np.float32), np.zeros(N, np.float32), z - 2,
                                                 np.tile(np.float32([1, 0, 0, 0]), (N, 1))))
    old = obj.modifiers[display.MODIFIER_NAME].node_group
    del old["wonderland_display_version"]  # as version 1 made it
    old.nodes.new("GeometryNodeFlipFaces")  # a mark to tell it by
    scene.cycles.transparent_max_bounces = 8  # Cycles' default, as version 1 left it
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "v1.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "v1.blend"))
    group = bpy.data.objects["G"].modifiers[display.MODIFIER_NAME].node_group
    assert group.name == display.GROUP_NAME and group["wonderland_display_version"] == display.VERSION
    assert not [n for n in group.nodes if n.bl_idname == "GeometryNodeFlipFaces"]
    assert [g.name for g in bpy.data.node_groups] == [display.GROUP_NAME]
    assert bpy.context.scene.cycles.transparent_max_bounces == display.CYCLES_TRANSPARENT_BOUNCES
