"""Import/export of 3DGS PLYs as PointCloud objects in the real bpy: exact values, edits respected, no leftovers."""
from __future__ import annotations

import math

import bpy
import numpy as np
import pytest
from mathutils import Euler, Quaternion

from wonderland_blender import ops_io
from wonderland_blender.plyio import SH_C0, Splats, read_ply, write_ply
from wonderland_blender.display import MODIFIER_NAME, QUAD_OBJECT
from wonderland_blender.pointcloud import COLLECTION_NAME, read_splats

N, K = 64, 8  # SH degree 2


@pytest.fixture
def io_ops():
    ops_io.register()
    yield
    ops_io.unregister()


@pytest.fixture
def gsplat_ply(tmp_path):
    """A PLY written by gsplat's exporter, and the arrays it was made from."""
    import torch
    from gsplat.exporter import export_splats
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    src = Splats(f(N, 3), f(N, 3), f(N, K, 3), f(N), f(N, 3) - 2, f(N, 4))
    t = torch.from_numpy
    export_splats(t(src.means), t(src.log_scales), t(src.quats), t(src.opacity_logits), t(src.f_dc)[:, None],
                  t(src.f_rest), format="ply", save_to=str(tmp_path / "gsplat.ply"))
    return tmp_path / "gsplat.ply", src


def attribute(obj, name, prop, width):
    out = np.empty(len(obj.data.points) * width, np.float32)
    obj.data.attributes[name].data.foreach_get(prop, out)
    return out.reshape(-1, width) if width > 1 else out


def srgb_to_linear(c):
    """The sRGB curve inverted, extended beyond 0..1 (linear below, power above), written independently."""
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4)


def import_file(path, **kw):
    assert bpy.ops.wonderland.import_gaussians(filepath=str(path), **kw) == {'FINISHED'}
    return bpy.context.active_object


def assert_round_trip(out, src):
    """An export equals its import within the schema's stated tolerance (pointcloud.read_splats)."""
    assert out.means.tobytes() == src.means.tobytes() and out.f_rest.tobytes() == src.f_rest.tobytes()
    np.testing.assert_allclose(out.f_dc, src.f_dc, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.log_scales, src.log_scales, rtol=0, atol=1e-6)
    sigmoid = lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))  # noqa: E731
    np.testing.assert_allclose(sigmoid(out.opacity_logits), sigmoid(src.opacity_logits), rtol=0, atol=6e-8)
    np.testing.assert_allclose(out.quats, src.quats / np.linalg.norm(src.quats, axis=1, keepdims=True),
                               atol=2e-7)


def test_import_holds_one_attribute_per_quantity_and_leaves_no_helpers(io_ops, gsplat_ply):
    path, src = gsplat_ply
    meshes_before = len(bpy.data.meshes)
    obj = import_file(path)
    assert obj.type == 'POINTCLOUD' and len(obj.data.points) == N
    assert [c.name for c in obj.users_collection] == [COLLECTION_NAME]
    assert obj.select_get() and bpy.context.view_layer.objects.active == obj
    assert {a.name: a.data_type for a in obj.data.attributes} == {
        "position": 'FLOAT_VECTOR', "splat_color": 'FLOAT_COLOR', "opacity": 'FLOAT', "scale": 'FLOAT_VECTOR',
        "rotation": 'QUATERNION', "radius": 'FLOAT', **{f"sh_rest_{k:02d}": 'FLOAT_VECTOR' for k in range(K)}}
    assert np.array_equal(attribute(obj, "position", "vector", 3), src.means)
    for k in range(K):
        assert np.array_equal(attribute(obj, f"sh_rest_{k:02d}", "vector", 3), src.f_rest[:, k])
    opacity = 1 / (1 + np.exp(-src.opacity_logits.astype(np.float64)))
    np.testing.assert_allclose(attribute(obj, "opacity", "value", 1), opacity, rtol=1e-6)
    np.testing.assert_allclose(attribute(obj, "scale", "vector", 3), np.exp(src.log_scales), rtol=1e-6)
    unit = src.quats / np.linalg.norm(src.quats, axis=1, keepdims=True)
    np.testing.assert_allclose(attribute(obj, "rotation", "value", 4), unit, atol=1e-6)
    color = attribute(obj, "splat_color", "color", 4)  # linear, not clamped: f_dc ~ N(0, 1) leaves 0..1
    np.testing.assert_allclose(color[:, :3], srgb_to_linear(0.5 + SH_C0 * src.f_dc.astype(np.float64)),
                               rtol=1e-6, atol=1e-7)
    assert (color[:, :3] > 1).any() and (color[:, :3] < 0).any() and (color[:, 3] == 1).all()
    radius = attribute(obj, "radius", "value", 1)
    np.testing.assert_allclose(radius, np.exp(src.log_scales).mean(axis=1), rtol=1e-5)
    # No leftovers: the converted mesh is gone, no helper attributes (the display's quad is no leftover).
    assert len([m for m in bpy.data.meshes if m.name != QUAD_OBJECT]) == meshes_before
    assert [m.name for m in obj.modifiers] == [MODIFIER_NAME]  # the display (tests/blender/test_display.py)


def test_export_gives_the_file_back_within_float_tolerance(io_ops, gsplat_ply, tmp_path):
    path, src = gsplat_ply
    import_file(path)
    assert bpy.ops.wonderland.export_gaussians(filepath=str(tmp_path / "out.ply")) == {'FINISHED'}
    assert_round_trip(read_ply(tmp_path / "out.ply").splats, src)


def test_edited_attributes_are_what_exports(io_ops, gsplat_ply, tmp_path):
    """No raw twin wins over an edit: colour, opacity, scale and rotation set by the artist are exported."""
    path, src = gsplat_ply
    obj = import_file(path)
    attrs = obj.data.attributes
    attrs["splat_color"].data.foreach_set("color", np.tile([1.0, 0.0, 0.0, 1.0], N).astype(np.float32))
    attrs["opacity"].data.foreach_set("value", np.full(N, 0.5, np.float32))
    attrs["scale"].data.foreach_set("vector", np.full(3 * N, 0.25, np.float32))
    attrs["rotation"].data.foreach_set("value", np.tile([0.0, 0.0, 0.0, 2.0], N).astype(np.float32))
    bpy.ops.wonderland.export_gaussians(filepath=str(tmp_path / "out.ply"))
    out = read_ply(tmp_path / "out.ply").splats
    np.testing.assert_allclose(0.5 + SH_C0 * out.f_dc, np.tile([1.0, 0.0, 0.0], (N, 1)), atol=1e-6)
    np.testing.assert_allclose(out.opacity_logits, 0.0, atol=1e-7)
    np.testing.assert_allclose(out.log_scales, np.log(0.25), atol=1e-6)
    np.testing.assert_allclose(out.quats, np.tile([0.0, 0.0, 0.0, 1.0], (N, 1)))  # normalized on export


def test_deleted_points_are_left_out(io_ops, gsplat_ply, tmp_path):
    path, src = gsplat_ply
    obj = import_file(path)
    deleted = [0, 5, 17, 63]
    selection = np.zeros(N, bool)
    selection[deleted] = True
    obj.data.attributes.new(".selection", 'BOOLEAN', 'POINT').data.foreach_set("value", selection)
    bpy.ops.object.mode_set(mode='EDIT')
    assert bpy.ops.pointcloud.delete() == {'FINISHED'}
    bpy.ops.object.mode_set(mode='OBJECT')
    bpy.ops.wonderland.export_gaussians(filepath=str(tmp_path / "out.ply"))
    out = read_ply(tmp_path / "out.ply").splats
    assert len(out) == N - len(deleted)
    assert_round_trip(out, src.select(np.setdiff1d(np.arange(N), deleted)))


def test_object_transform_is_applied_on_export(io_ops, gsplat_ply, tmp_path):
    path, src = gsplat_ply
    obj = import_file(path)
    obj.location = (1.0, -2.0, 0.5)
    obj.rotation_euler = Euler((0.3, -0.7, 1.1))
    obj.scale = (2.0, 2.0, 2.0)
    bpy.context.view_layer.update()
    bpy.ops.wonderland.export_gaussians(filepath=str(tmp_path / "out.ply"))
    out = read_ply(tmp_path / "out.ply").splats
    R = np.array(Euler((0.3, -0.7, 1.1)).to_matrix())
    np.testing.assert_allclose(out.means, 2.0 * src.means @ R.T + [1.0, -2.0, 0.5], atol=1e-5)
    np.testing.assert_allclose(out.log_scales, src.log_scales + math.log(2.0), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out.quats, axis=1), 1.0, rtol=1e-6)
    for i in (0, 9, 40):  # each exported rotation is the object rotation after the Gaussian's own
        expect = R @ np.array(Quaternion(src.quats[i]).normalized().to_matrix())
        np.testing.assert_allclose(np.array(Quaternion(out.quats[i]).normalized().to_matrix()), expect, atol=1e-5)
    np.testing.assert_allclose(out.f_dc, src.f_dc, rtol=1e-6, atol=1e-6)


def test_axis_conversion_for_other_tools(io_ops, tmp_path):
    """A Y-up file (forward -Z) becomes Z-up: its +Y axis maps to Blender's +Z, its -Z to Blender's +Y."""
    src = Splats(np.array([[0, 1, 0], [0, 0, -1]], np.float32), np.zeros((2, 3), np.float32),
                 np.zeros((2, 0, 3), np.float32), np.zeros(2, np.float32), np.zeros((2, 3), np.float32),
                 np.array([[1, 0, 0, 0]] * 2, np.float32))
    write_ply(tmp_path / "yup.ply", src)
    obj = import_file(tmp_path / "yup.ply", axis_forward='-Z', axis_up='Y')
    np.testing.assert_allclose(read_splats(obj).means, [[0, 0, 1], [0, 1, 0]], atol=1e-7)
    q = read_splats(obj).quats[0]
    np.testing.assert_allclose(np.array(Quaternion(q).to_matrix()) @ [0, 1, 0], [0, 0, 1], atol=1e-6)
    # Exporting with the same axes gives the file's frame back.
    bpy.ops.wonderland.export_gaussians(filepath=str(tmp_path / "back.ply"), axis_forward='-Z', axis_up='Y')
    np.testing.assert_allclose(read_ply(tmp_path / "back.ply").splats.means, src.means, atol=1e-7)


def test_unreadable_ply_gives_a_clear_message(io_ops, tmp_path):
    (tmp_path / "mesh.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
                                       "property float y\nproperty float z\nend_header\n0 0 0\n")
    objects_before = len(bpy.data.objects)
    with pytest.raises(RuntimeError, match="missing the Gaussian properties f_dc_0.*not 3D Gaussians"):
        bpy.ops.wonderland.import_gaussians(filepath=str(tmp_path / "mesh.ply"))
    assert len(bpy.data.objects) == objects_before and COLLECTION_NAME not in bpy.data.collections


def test_export_without_gaussians_says_what_to_do(io_ops, tmp_path):
    with pytest.raises(RuntimeError, match="No Wonderland Gaussian point cloud selected"):
        bpy.ops.wonderland.export_gaussians(filepath=str(tmp_path / "x.ply"))
    assert not (tmp_path / "x.ply").exists()


def test_menu_entries_are_registered(io_ops):
    assert ops_io._menu_import in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
    assert ops_io._menu_export in bpy.types.TOPBAR_MT_file_export._dyn_ui_initialize()


def test_import_into_an_existing_hidden_collection_and_export_all(io_ops, gsplat_ply, tmp_path):
    path, src = gsplat_ply
    parent = bpy.data.collections.new("Props")
    bpy.context.scene.collection.children.link(parent)
    parent.children.link(bpy.data.collections.new(COLLECTION_NAME))
    layer = bpy.context.view_layer.layer_collection.children["Props"].children[COLLECTION_NAME]
    layer.exclude = True
    a, b = import_file(path), import_file(path)
    assert a.type == b.type == 'POINTCLOUD' and a.name != b.name
    assert set(bpy.data.collections[COLLECTION_NAME].objects) == {a, b}
    assert COLLECTION_NAME not in bpy.context.scene.collection.children  # not linked a second time
    assert not layer.exclude
    b.location.x = 10.0
    bpy.context.view_layer.update()
    bpy.ops.wonderland.export_gaussians(filepath=str(tmp_path / "all.ply"), use_selection=False)
    out = read_ply(tmp_path / "all.ply").splats
    assert len(out) == 2 * N
    np.testing.assert_array_equal(np.sort(out.means[:, 0]), np.sort(np.r_[src.means[:, 0], src.means[:, 0] + 10.0]))


def covariances(splats):
    q = splats.quats / np.linalg.norm(splats.quats, axis=1, keepdims=True)
    rot = np.array([np.array(Quaternion(v).to_matrix()) for v in q])
    axes = rot * np.exp(splats.log_scales.astype(np.float64))[:, None, :]
    return axes @ axes.transpose(0, 2, 1)


@pytest.mark.parametrize("scale", [(2.0, 1.0, 0.5), (-1.0, 1.5, 1.0)], ids=["stretched", "mirrored"])
def test_non_uniform_scale_is_exact_on_shapes_and_warns_about_sh(io_ops, gsplat_ply, tmp_path, capsys, scale):
    """Each exported covariance is A·Σ·Aᵀ (exact for any rotation); SH only follow the nearest rotation or
    mirror, which the operator reports as a warning."""
    path, src = gsplat_ply
    obj = import_file(path)
    obj.scale, obj.rotation_euler = scale, Euler((0.3, -0.7, 1.1))
    bpy.context.view_layer.update()
    assert bpy.ops.wonderland.export_gaussians(filepath=str(tmp_path / "out.ply")) == {'FINISHED'}
    assert "Warning: Exported 64 Gaussians from 1 object(s); 'gsplat': its non-uniform scale" in capsys.readouterr().out
    out = read_ply(tmp_path / "out.ply").splats
    a = np.array(obj.matrix_world)[:3, :3]
    expect = a @ covariances(src) @ a.T
    np.testing.assert_allclose(covariances(out), expect, rtol=1e-5, atol=1e-6 * np.abs(expect).max())
    np.testing.assert_allclose(out.means, src.means @ a.T, atol=1e-5)


def test_axis_aligned_gaussians_under_a_non_uniform_scale_without_sh_export_without_warning(io_ops, tmp_path, capsys):
    n = 16
    rng = np.random.default_rng(2)
    src = Splats(rng.normal(size=(n, 3)).astype(np.float32), np.zeros((n, 3), np.float32),
                 np.zeros((n, 0, 3), np.float32), np.zeros(n, np.float32),
                 rng.normal(-2, 0.5, (n, 3)).astype(np.float32), np.tile(np.float32([1, 0, 0, 0]), (n, 1)))
    write_ply(tmp_path / "aligned.ply", src)
    obj = import_file(tmp_path / "aligned.ply")
    obj.scale = (2.0, 1.0, 0.5)
    bpy.context.view_layer.update()
    bpy.ops.wonderland.export_gaussians(filepath=str(tmp_path / "out.ply"))
    assert "Info: Exported 16 Gaussians" in capsys.readouterr().out
    out = read_ply(tmp_path / "out.ply").splats
    expect = covariances(src) * np.outer([2, 1, 0.5], [2, 1, 0.5])
    np.testing.assert_allclose(covariances(out), expect, rtol=1e-5, atol=1e-6 * np.abs(expect).max())
