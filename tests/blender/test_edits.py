"""Gaussian edit modifiers in the real bpy: what the evaluated cloud holds is what export writes."""
from __future__ import annotations

import math

import bpy
import numpy as np
import pytest

from wonderland_blender import edits
from wonderland_blender.plyio import Splats, read_ply
from wonderland_blender.pointcloud import create_object, is_gaussian_object, linear_to_f_dc, read_splats

N = 1000


@pytest.fixture
def cloud(scene):
    """1000 Gaussians on a 10³ grid over [-0.9, 0.9]³ with varied opacity, size and colour."""
    rng = np.random.default_rng(3)
    axis = np.linspace(-0.9, 0.9, 10, dtype=np.float32)
    means = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    splats = Splats(means, rng.normal(0, 0.8, (N, 3)).astype(np.float32), np.zeros((N, 0, 3), np.float32),
                    rng.normal(0, 2, N).astype(np.float32), rng.uniform(-5, -1, (N, 3)).astype(np.float32),
                    rng.normal(size=(N, 4)).astype(np.float32))
    return create_object(bpy.context, "Cloud", splats)


def evaluated(obj) -> Splats:
    return read_splats(obj.evaluated_get(bpy.context.evaluated_depsgraph_get()))


def attribute(obj, name, prop, width):
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    out = np.empty(len(ev.data.points) * width, np.float32)
    ev.data.attributes[name].data.foreach_get(prop, out)
    return out.reshape(-1, width) if width > 1 else out


def exported(tmp_path, obj) -> Splats:
    path = tmp_path / "out.ply"
    obj.select_set(True)
    assert bpy.ops.wonderland.export_gaussians(filepath=str(path)) == {'FINISHED'}
    return read_ply(path).splats


def add(obj, kind):
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.wonderland.edit_add(kind=kind) == {'FINISHED'}
    return obj.modifiers[-1] if obj.modifiers.find(edits.DISPLAY_MODIFIER) < 0 else \
        obj.modifiers[obj.modifiers.find(edits.DISPLAY_MODIFIER) - 1]


def test_crop_box_keeps_the_inside_and_export_agrees(cloud, tmp_path):
    original = read_splats(cloud)
    modifier = add(cloud, 'CROP_BOX')
    box = bpy.data.objects[f"{cloud.name} Crop Box"]
    assert box.empty_display_type == 'CUBE'
    box.location, box.scale = (0.5, 0.0, 0.0), (0.5, 1.0, 1.0)
    inside = (np.abs(original.means[:, 0] - 0.5) <= 0.5) & (np.abs(original.means[:, 1:]) <= 1).all(axis=1)
    got = evaluated(cloud)
    assert len(got) == inside.sum() == 500
    np.testing.assert_array_equal(np.sort(got.means, axis=0), np.sort(original.means[inside], axis=0))
    out = exported(tmp_path, cloud)
    assert len(out) == 500 and (out.means[:, 0] >= 0).all()
    edits.set_input(modifier, "Invert", True)
    cloud.update_tag()
    assert len(evaluated(cloud)) == N - 500


def test_camera_cull_follows_the_camera_its_lens_and_sensor_fit(cloud, make_camera):
    camera = make_camera("Cam", (0.0, -3.0, 0.0), (math.pi / 2, 0.0, math.pi / 8))  # looks along +Y, turned left
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    modifier = add(cloud, 'CAMERA_CULL')
    assert all(fcurve.driver.is_simple_expression for fcurve in cloud.animation_data.drivers)
    edits.set_input(modifier, "Margin", 0.0)
    original = read_splats(cloud)

    def expected():
        bpy.context.view_layer.update()
        local = (np.c_[original.means, np.ones(N)] @ np.array(camera.matrix_world.inverted()).T)[:, :3]
        cam = camera.data
        if cam.sensor_fit == 'VERTICAL':
            tan_y = cam.sensor_height / (2 * cam.lens)
            tan_x = tan_y * 1920 / 1080
        else:  # AUTO and HORIZONTAL agree for a landscape frame
            tan_x = cam.sensor_width / (2 * cam.lens)
            tan_y = tan_x * 1080 / 1920
        depth = -local[:, 2]
        return ((depth > 0) & (np.abs(local[:, 0]) <= depth * tan_x) & (np.abs(local[:, 1]) <= depth * tan_y)).sum()

    kept = len(evaluated(cloud))
    assert 0 < kept == expected() < N
    camera.data.lens = 20.0  # wider: the driver widens the cull
    assert len(evaluated(cloud)) == expected() > kept
    camera.data.sensor_fit, camera.data.sensor_height = 'VERTICAL', 8.0  # narrower again, set by the height
    assert len(evaluated(cloud)) == expected() < kept


def test_filter_removes_faint_and_large(cloud, tmp_path):
    original = read_splats(cloud)
    opacity = 1 / (1 + np.exp(-original.opacity_logits.astype(np.float64)))
    size = np.exp(original.log_scales).max(axis=1)
    modifier = add(cloud, 'FILTER')
    edits.set_input(modifier, "Min Opacity", 0.5)
    cloud.update_tag()
    assert len(evaluated(cloud)) == (opacity >= 0.5).sum()
    edits.set_input(modifier, "Max Size", 0.1)
    cloud.update_tag()
    keep = (opacity >= 0.5) & (size <= 0.1)
    assert len(exported(tmp_path, cloud)) == len(evaluated(cloud)) == keep.sum() > 0


def test_decimate_keeps_the_percentage_reproducibly(cloud):
    modifier = add(cloud, 'DECIMATE')
    edits.set_input(modifier, "Keep", 30.0)
    cloud.update_tag()
    first = evaluated(cloud).means
    assert abs(len(first) - 300) < 60  # binomial(1000, 0.3): σ ≈ 14.5
    cloud.update_tag()
    np.testing.assert_array_equal(evaluated(cloud).means, first)
    edits.set_input(modifier, "Seed", 7)
    cloud.update_tag()
    assert not np.array_equal(evaluated(cloud).means[:50], first[:50])


def test_color_adjustment_is_what_export_writes(cloud, tmp_path):
    color = attribute(cloud, "splat_color", "color", 4)[:, :3].astype(np.float64)
    opacity = attribute(cloud, "opacity", "value", 1).astype(np.float64)
    modifier = add(cloud, 'COLOR')
    for name, value in (("Brightness", 1.5), ("Saturation", 0.5), ("Tint", (1.0, 0.8, 0.6, 1.0)), ("Opacity", 2.0)):
        edits.set_input(modifier, name, value)
    cloud.update_tag()
    luma = color @ np.array(edits.LUMINANCE)
    want = np.maximum((luma[:, None] + (color - luma[:, None]) * 0.5) * (1.0, 0.8, 0.6) * 1.5, 0)
    np.testing.assert_allclose(attribute(cloud, "splat_color", "color", 4)[:, :3], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(attribute(cloud, "opacity", "value", 1), np.minimum(opacity * 2, 1), atol=1e-6)
    out = exported(tmp_path, cloud)
    np.testing.assert_allclose(out.f_dc, linear_to_f_dc(want.astype(np.float32)), atol=1e-4)


def test_edits_go_before_the_display_modifier_and_apply_bakes_them(cloud):
    assert [m.name for m in cloud.modifiers] == [edits.DISPLAY_MODIFIER]  # create_object adds the display
    add(cloud, 'FILTER')
    modifier = add(cloud, 'DECIMATE')
    edits.set_input(modifier, "Keep", 40.0)
    assert [m.name for m in cloud.modifiers] == ["Wonderland Filter", "Wonderland Decimate", edits.DISPLAY_MODIFIER]
    edited = evaluated(cloud)
    assert bpy.ops.wonderland.edit_apply() == {'FINISHED'}
    assert [m.name for m in cloud.modifiers] == [edits.DISPLAY_MODIFIER]
    assert is_gaussian_object(cloud) and len(cloud.data.points) == len(edited) < N
    np.testing.assert_array_equal(read_splats(cloud).means, edited.means)


def test_add_refuses_a_camera_cull_without_a_camera(cloud):
    bpy.context.view_layer.objects.active = cloud
    with pytest.raises(RuntimeError, match="no camera"):
        bpy.ops.wonderland.edit_add(kind='CAMERA_CULL')
    assert not edits.edit_modifiers(cloud)


def test_f12_with_the_wonderland_engine_shows_a_crop(cloud, make_camera, tmp_path):
    """The render engine reads the evaluated cloud: cropping away x > 0 empties the right of the frame."""
    from wonderland_blender import render_engine
    scene = bpy.context.scene
    scene.render.engine = render_engine.ENGINE_ID
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 48, 100
    scene.render.film_transparent = True
    make_camera("Cam", (0.0, -6.0, 0.0), (math.pi / 2, 0.0, 0.0))  # looks along +Y: image right is +x
    cloud.data.attributes["scale"].data.foreach_set("vector", np.full(3 * N, 0.04, np.float32))  # no bleeding
    cloud.update_tag()

    def f12_alpha(name):
        scene.render.filepath = str(tmp_path / name)
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(str(tmp_path / name))
        pixels = np.empty(64 * 48 * 4, np.float32)
        image.pixels.foreach_get(pixels)
        return pixels.reshape(48, 64, 4)[..., 3]

    before = f12_alpha("before.png")
    add(cloud, 'CROP_BOX')
    box = bpy.data.objects[f"{cloud.name} Crop Box"]
    box.location, box.scale = (-1.0, 0.0, 0.0), (1.0, 2.0, 2.0)  # keeps x ≤ 0
    after = f12_alpha("after.png")
    left, right = slice(8, 28), slice(36, 56)  # columns clear of the cut at x = 0
    assert before[:, right].mean() > 0.3 and before[:, left].mean() > 0.3
    assert after[:, right].max() < 0.02 and abs(after[:, left].mean() - before[:, left].mean()) < 0.02
