"""Meshes among Gaussians: the Wonderland engine's depth compositing with an EEVEE mesh scene, pixels checked."""
from __future__ import annotations

import math

import bpy
import numpy as np
import pytest
from test_engine_scene import f12, wonderland_scene

from wonderland_blender import mixing, ops_io, render_engine
from wonderland_blender.plyio import Splats

W, H = 72, 48
SH_C0 = 0.28209479177387814


@pytest.fixture(scope="module", autouse=True)
def registered():
    ops_io.register()
    render_engine.register()
    mixing.register()
    yield
    mixing.unregister()
    render_engine.unregister()
    ops_io.unregister()


def wall_of_green_gaussians(n_x: int = 30, n_z: int = 18) -> Splats:
    """Opaque pure-green Gaussians filling x ∈ [-1, 1], z ∈ [-0.6, 0.6] on the plane y = 0."""
    x, z = np.meshgrid(np.linspace(-1, 1, n_x), np.linspace(-0.6, 0.6, n_z))
    n = x.size
    means = np.stack([x.ravel(), np.zeros(n), z.ravel()], 1).astype(np.float32)
    green = np.array([0.0, 1.0, 0.0], np.float32)
    return Splats(means, np.tile((green - 0.5) / SH_C0, (n, 1)).astype(np.float32), np.zeros((n, 0, 3), np.float32),
                  np.full(n, 8.0, np.float32), np.full((n, 3), math.log(0.05), np.float32),
                  np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)))


def emissive_box(name: str, location, size, colour) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    sx, sy, sz = (s / 2 for s in size)
    verts = [(x * sx, y * sy, z * sz) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(verts, [], faces)
    material = bpy.data.materials.new(name)
    tree = material.node_tree
    tree.nodes.clear()
    emission = tree.nodes.new("ShaderNodeEmission")
    emission.inputs["Color"].default_value = (*colour, 1.0)
    tree.links.new(emission.outputs["Emission"], tree.nodes.new("ShaderNodeOutputMaterial").inputs["Surface"])
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    bpy.context.scene.collection.objects.link(obj)
    return obj


def pixel(image: np.ndarray, x: float, z: float, depth: float) -> np.ndarray:
    """The pixel showing the world point (x, y, z) with y = depth - 6 (camera at y = -6, 50 mm, 36 mm sensor)."""
    f = 50 / 36 * W
    return image[int(H / 2 - f * z / depth), int(W / 2 + f * x / depth)]


def test_a_mesh_in_front_hides_the_gaussians_and_one_behind_is_hidden(tmp_path):
    wonderland_scene(tmp_path / "wall.ply", wall_of_green_gaussians(), W, H, 6.0)
    scene = bpy.context.scene
    scene.view_settings.view_transform = 'Standard'
    emissive_box("Front", (-0.5, -3.0, 0.0), (0.5, 0.2, 0.5), (1.0, 0.0, 0.0))  # between camera and wall
    emissive_box("Back", (1.0, 2.0, 0.0), (3.0, 0.2, 0.6), (0.0, 0.0, 1.0))  # behind it, wider on the right

    assert bpy.ops.wonderland.setup_mesh_mixing() == {'FINISHED'}
    meshes = bpy.data.scenes[scene.name + mixing.MESH_SCENE_SUFFIX]
    assert {o.name for o in meshes.collection.objects} == {"Cam", "Front", "Back"}  # no Gaussians there
    mix = f12(tmp_path / "mix.exr")

    np.testing.assert_allclose(pixel(mix, -0.5, 0.0, 3.0), (1, 0, 0, 1), atol=0.05)  # the front box hides the wall
    np.testing.assert_allclose(pixel(mix, 0.5, 0.0, 6.0), (0, 1, 0, 1), atol=0.05)  # the wall hides the back box
    np.testing.assert_allclose(pixel(mix, 2.1, 0.0, 8.0), (0, 0, 1, 1), atol=0.05)  # the back box beside the wall
    np.testing.assert_allclose(mix[2, 2], 0.0, atol=1e-4)  # nothing at the top corner


def test_the_world_goes_behind_the_mix_when_the_scene_was_not_transparent(tmp_path):
    wonderland_scene(tmp_path / "wall.ply", wall_of_green_gaussians(), W, H, 6.0)
    scene = bpy.context.scene
    scene.render.film_transparent = False
    scene.world = bpy.data.worlds.new("Grey")
    scene.world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.3, 0.3, 0.3, 1.0)
    for _ in range(2):  # a second set-up (after adding objects) keeps the World behind the mix
        assert bpy.ops.wonderland.setup_mesh_mixing() == {'FINISHED'}
    assert scene.render.film_transparent
    over = next(n for n in scene.compositing_node_group.nodes if n.bl_idname == 'CompositorNodeAlphaOver')
    assert tuple(over.inputs["Background"].default_value) == pytest.approx((0.3, 0.3, 0.3, 1.0))
    scene.render.engine = 'BLENDER_EEVEE'
    with pytest.raises(RuntimeError, match="does not render with Wonderland Gaussians"):
        bpy.ops.wonderland.setup_mesh_mixing()
