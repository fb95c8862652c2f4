"""Meshes among Gaussians: the Wonderland engine's depth compositing with an EEVEE mesh scene, pixels checked."""
from __future__ import annotations

import bpy
import mixing_scene
import numpy as np
import pytest

from wonderland_blender import mixing, ops_io, render_engine


@pytest.fixture(scope="module", autouse=True)
def registered():
    ops_io.register()
    render_engine.register()
    mixing.register()
    yield
    mixing.unregister()
    render_engine.unregister()
    ops_io.unregister()


def test_a_mesh_in_front_hides_the_gaussians_and_one_behind_is_hidden(tmp_path):
    scene = mixing_scene.build(tmp_path)
    assert bpy.ops.wonderland.setup_mesh_mixing() == {'FINISHED'}
    meshes = bpy.data.scenes[scene.name + mixing.MESH_SCENE_SUFFIX]
    assert {o.name for o in meshes.collection.objects} == {"Cam", "Front", "Back"}  # no Gaussians there
    mix = mixing_scene.render(tmp_path / "mix.exr")
    for (x, z, depth), rgba in mixing_scene.EXPECTED:
        np.testing.assert_allclose(mixing_scene.pixel(mix, x, z, depth), rgba, atol=0.05)
    np.testing.assert_allclose(mix[2, 2], 0.0, atol=1e-4)  # nothing at the top corner


def test_the_world_goes_behind_the_mix_when_the_scene_was_not_transparent(tmp_path):
    scene = mixing_scene.build(tmp_path)
    scene.render.film_transparent = False
    scene.world = bpy.data.worlds.new("Grey")
    scene.world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.3, 0.3, 0.3, 1.0)
    for _ in range(2):  # a second set-up (after adding objects) keeps the World behind the mix
        assert bpy.ops.wonderland.setup_mesh_mixing() == {'FINISHED'}
    assert scene.render.film_transparent
    over = next(n for n in bpy.data.node_groups[mixing.NODE_GROUP_NAME].nodes
                if n.bl_idname == 'CompositorNodeAlphaOver')
    assert tuple(over.inputs["Background"].default_value) == pytest.approx((0.3, 0.3, 0.3, 1.0))
    scene.render.engine = 'BLENDER_EEVEE'
    with pytest.raises(RuntimeError, match="does not render with Wonderland Gaussians"):
        bpy.ops.wonderland.setup_mesh_mixing()
