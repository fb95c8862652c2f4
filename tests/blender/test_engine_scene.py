"""The Wonderland engine in a real scene: Render Region and Crop to Border, instances and linked duplicates,
the World behind the Gaussians, visible errors, render threads and the idle worker (bpy 5.0.1)."""
from __future__ import annotations

import math

import bpy
import numpy as np
import pytest
from mixing_scene import render as f12
from test_render_engine import engine_registered  # noqa: F401 - module fixture: ops_io and the engine

from wonderland_blender import render_engine
from wonderland_blender.intrinsics import border_region
from wonderland_blender.plyio import Splats, write_ply

W, H = 64, 48


def make_splats(n: int = 300, seed: int = 5) -> Splats:
    rng = np.random.default_rng(seed)
    return Splats(rng.uniform(-0.8, 0.8, (n, 3)).astype(np.float32), rng.normal(0, 1, (n, 3)).astype(np.float32),
                  np.zeros((n, 0, 3), np.float32), np.full(n, 3.0, np.float32),
                  np.log(rng.uniform(0.05, 0.15, (n, 3))).astype(np.float32),
                  rng.normal(size=(n, 4)).astype(np.float32))


def wonderland_scene(ply, splats: Splats, width: int, height: int, distance: float):
    """`splats` imported from `ply`, rendered by the Wonderland engine at width × height into transparent
    32-bit EXRs, seen by a 50 mm camera `distance` units away on -y looking at +y. The Gaussian object."""
    write_ply(ply, splats)
    assert bpy.ops.wonderland.import_gaussians(filepath=str(ply)) == {'FINISHED'}
    scene = bpy.context.scene
    scene.render.engine = render_engine.ENGINE_ID
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = width, height, 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = 'OPEN_EXR'
    scene.render.image_settings.color_depth = '32'
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    cam.location, cam.rotation_euler = (0.0, -distance, 0.0), (math.radians(90), 0.0, 0.0)
    scene.collection.objects.link(cam)
    scene.camera = cam
    return bpy.context.active_object


@pytest.fixture
def gaussian_scene(tmp_path):
    """A cube of opaque Gaussians at the origin, a camera 5 units in front of it on -y, W × H, transparent."""
    return wonderland_scene(tmp_path / "g.ply", make_splats(), W, H, 5.0)


def test_border_region_matches_blender_truncation():
    assert border_region(160, 120, None) == (0, 0, 160, 120)
    assert border_region(160, 120, (0.25, 0.25, 0.75, 0.75)) == (40, 30, 80, 60)
    assert border_region(64, 48, (0.1, 0.0, 0.5, 0.3)) == (6, 34, 26, 14)  # y0 counted from the top
    with pytest.raises(ValueError, match="Render Region is empty"):
        border_region(64, 48, (0.5, 0.5, 0.51, 0.51))


@pytest.mark.parametrize("crop", [False, True])
def test_render_region_renders_the_region(gaussian_scene, tmp_path, crop):
    full = f12(tmp_path / "full.exr")
    assert full[..., 3].mean() > 0.1
    render = bpy.context.scene.render
    render.use_border, render.use_crop_to_border = True, crop
    render.border_min_x, render.border_max_x, render.border_min_y, render.border_max_y = 0.25, 0.75, 0.1, 0.6
    x0, y0, w, h = border_region(W, H, (0.25, 0.1, 0.75, 0.6))
    region = f12(tmp_path / "region.exr")
    inside = full[y0:y0 + h, x0:x0 + w]
    if crop:
        assert region.shape == (h, w, 4)
        got = region
    else:
        assert region.shape == (H, W, 4)
        got = region[y0:y0 + h, x0:x0 + w]
        outside = region.copy()
        outside[y0:y0 + h, x0:x0 + w] = 0
        assert not outside.any()  # nothing is drawn outside the region
    assert inside[..., 3].mean() > 0.1
    np.testing.assert_allclose(got, inside, atol=2e-3)


def test_instances_and_linked_duplicates_render(gaussian_scene, tmp_path):
    obj = gaussian_scene
    scene = bpy.context.scene
    depsgraph = bpy.context.evaluated_depsgraph_get()
    alone = render_engine.gather_splats(depsgraph)
    n = len(alone)
    duplicate = obj.copy()  # Alt+D: shares the point cloud
    duplicate.location = (2.0, 0.0, 0.0)
    scene.collection.objects.link(duplicate)
    empty = bpy.data.objects.new("Instance", None)
    empty.instance_type, empty.instance_collection = 'COLLECTION', obj.users_collection[0]
    empty.location = (-2.0, 0.0, 1.0)
    scene.collection.objects.link(empty)
    bpy.context.view_layer.update()
    gathered = render_engine.gather_splats(bpy.context.evaluated_depsgraph_get())
    assert len(gathered) == 3 * n
    centres = sorted(tuple(np.round(gathered.means[i * n:(i + 1) * n].mean(0) - alone.means.mean(0), 4))
                     for i in range(3))
    assert centres == [(-2.0, 0.0, 1.0), (0.0, 0.0, 0.0), (2.0, 0.0, 0.0)]
    image = f12(tmp_path / "instances.exr")
    left, right = image[:, : W // 4, 3], image[:, -W // 4:, 3]  # the copies at x = ±2 fill the sides
    assert left.mean() > 0.05 and right.mean() > 0.05


def test_world_colour_is_the_background(gaussian_scene, tmp_path):
    scene = bpy.context.scene
    scene.render.film_transparent = False
    world = bpy.data.worlds.new("Sky")
    scene.world = world
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.2, 0.4, 0.6, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.5
    world.color = (1.0, 0.0, 0.0)
    image = f12(tmp_path / "world.exr")
    np.testing.assert_allclose(image[0, 0], (0.1, 0.2, 0.3, 1.0), atol=1e-5)  # a corner: no Gaussians there
    # A textured World cannot be evaluated: its Viewport Display colour is used, and the engine says so.
    tree = world.node_tree
    tree.links.new(tree.nodes.new("ShaderNodeTexNoise").outputs["Color"],
                   tree.nodes["Background"].inputs["Color"])
    _, note = render_engine.world_background(world)
    assert "Viewport Display colour" in note
    np.testing.assert_allclose(f12(tmp_path / "textured.exr")[0, 0], (1.0, 0.0, 0.0, 1.0), atol=1e-5)


def test_a_failing_frame_is_an_error_not_an_empty_image(gaussian_scene, tmp_path):
    gaussian_scene.scale = (1.0, 1.0, 0.0)  # flattened Gaussians cannot be rendered
    with pytest.raises(RuntimeError, match="flattens the Gaussians"):
        f12(tmp_path / "flat.exr")
    assert not (tmp_path / "flat.exr").exists()


def test_threads_follow_the_render_settings_and_an_idle_worker_is_closed(gaussian_scene):
    render = bpy.context.scene.render
    render.threads_mode, render.threads = 'FIXED', 3
    assert render_engine.render_threads(render) == 3
    render.threads_mode = 'AUTO'
    assert render_engine.render_threads(render) >= 1
    render_engine.render_arrays(bpy.context.evaluated_depsgraph_get(), 8, 6)
    worker = render_engine._worker
    assert worker.alive()
    assert not render_engine.close_idle_worker(max_idle=60.0)  # just used: kept
    assert bpy.app.timers.is_registered(render_engine._idle_timer)  # checks every IDLE_CHECK_SECONDS
    worker.busy = True  # a frame in flight (renders wait on another thread) is never cut off
    assert not render_engine.close_idle_worker(max_idle=0.0)
    worker.busy = False
    assert render_engine.close_idle_worker(max_idle=0.0)
    assert render_engine._worker is None and worker.proc.returncode is not None


def test_display_instances_of_a_gaussian_cloud_are_not_gathered(gaussian_scene):
    """A cloud's own geometry-nodes instances (how the splat display draws) are not more Gaussians."""
    obj = gaussian_scene
    depsgraph = bpy.context.evaluated_depsgraph_get()
    n = len(render_engine.gather_splats(depsgraph))
    before = sum(1 for i in depsgraph.object_instances if i.is_instance and i.parent.name == obj.name)
    tree = bpy.data.node_groups.new("Display-like", 'GeometryNodeTree')
    tree.interface.new_socket("Geometry", in_out='INPUT', socket_type='NodeSocketGeometry')
    tree.interface.new_socket("Geometry", in_out='OUTPUT', socket_type='NodeSocketGeometry')
    group_in, group_out = tree.nodes.new('NodeGroupInput'), tree.nodes.new('NodeGroupOutput')
    instance = tree.nodes.new('GeometryNodeInstanceOnPoints')
    join = tree.nodes.new('GeometryNodeJoinGeometry')
    tree.links.new(group_in.outputs[0], instance.inputs["Points"])
    tree.links.new(group_in.outputs[0], instance.inputs["Instance"])  # copies of the cloud itself
    tree.links.new(group_in.outputs[0], join.inputs[0])
    tree.links.new(instance.outputs[0], join.inputs[0])
    tree.links.new(join.outputs[0], group_out.inputs[0])
    obj.modifiers.new("Display-like", 'NODES').node_group = tree
    depsgraph = bpy.context.evaluated_depsgraph_get()
    copies = sum(1 for i in depsgraph.object_instances if i.is_instance and i.parent.name == obj.name)
    assert copies - before >= n  # the modifier did make an instance per point
    assert len(render_engine.gather_splats(depsgraph)) == n
