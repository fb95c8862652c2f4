"""The "Wonderland Splats" display in the real bpy: what the modifier leaves for read_splats, the viewport cap,
and EEVEE and Cycles renders against the Wonderland engine (the backend's splat renderer)."""
from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np
import pytest
from PIL import Image

from wonderland_blender import display, render_engine
from wonderland_blender.plyio import Splats
from wonderland_blender.pointcloud import create_object, read_splats

W, H = 96, 72
PICTURES = Path("/tmp/wonderland-display")  # the renders, kept to be looked at


def random_splats(n: int, seed: int = 0) -> Splats:
    rng = np.random.default_rng(seed)
    return Splats(rng.uniform(-1, 1, (n, 3)).astype(np.float32),
                  ((rng.uniform(0, 1, (n, 3)) - 0.5) / 0.2820948).astype(np.float32), np.zeros((n, 0, 3), np.float32),
                  rng.uniform(-1, 3, n).astype(np.float32), np.log(rng.uniform(0.02, 0.15, (n, 3))).astype(np.float32),
                  rng.normal(size=(n, 4)).astype(np.float32))


def evaluated(obj):
    return obj.evaluated_get(bpy.context.evaluated_depsgraph_get())


def quad_mesh(obj):
    """The display's realized quads: the evaluated object's mesh component, an instance in the depsgraph."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    (mesh,) = [i.object.data for i in depsgraph.object_instances
               if i.is_instance and i.object.type == 'MESH' and i.parent and i.parent.original == obj]
    return mesh


def test_display_is_last_and_edits_before_it_are_what_read_splats_sees(scene):
    obj = create_object(bpy.context, "G", random_splats(50))
    assert [m.name for m in obj.modifiers] == [display.MODIFIER_NAME]
    edit = obj.modifiers.new("Wonderland Opaque", 'NODES')  # an edit modifier, as h8's tools make them
    group = bpy.data.node_groups.new("opaque", 'GeometryNodeTree')
    group.interface.new_socket("Geometry", in_out='INPUT', socket_type='NodeSocketGeometry')
    group.interface.new_socket("Geometry", in_out='OUTPUT', socket_type='NodeSocketGeometry')
    store = group.nodes.new("GeometryNodeStoreNamedAttribute")
    store.data_type, store.inputs["Name"].default_value, store.inputs["Value"].default_value = 'FLOAT', "opacity", 1.0
    group.links.new(group.nodes.new("NodeGroupInput").outputs[0], store.inputs["Geometry"])
    group.links.new(store.outputs[0], group.nodes.new("NodeGroupOutput").inputs[0])
    edit.node_group = group
    display.add_display(obj)
    assert [m.name for m in obj.modifiers] == ["Wonderland Opaque", display.MODIFIER_NAME]
    out = read_splats(evaluated(obj))
    assert len(out) == 50 and evaluated(obj).type == 'POINTCLOUD'
    np.testing.assert_allclose(out.opacity_logits, 16.6, atol=0.05)  # opacity 1, as edited
    mesh = quad_mesh(obj)
    assert len(mesh.polygons) == 50 and len(mesh.vertices) == 200
    assert [m.name for m in mesh.materials if m] == [display.SPLAT_MATERIAL]
    assert scene.cycles.transparent_max_bounces == display.CYCLES_TRANSPARENT_BOUNCES


def test_quads_span_three_sigma_of_the_projected_gaussian(scene, make_camera):
    """An isotropic Gaussian's quad is a 6σ square facing the camera; a stretched one's long side lies along
    its long axis as the camera sees it."""
    s = Splats(np.float32([[0, 0, 0], [0, 0, 1]]), np.zeros((2, 3), np.float32), np.zeros((2, 0, 3), np.float32),
               np.zeros(2, np.float32), np.log(np.float32([[0.1, 0.1, 0.1], [0.3, 0.02, 0.02]])),
               np.float32([[1, 0, 0, 0], [1, 0, 0, 0]]))
    make_camera(location=(0.0, -5.0, 0.0), rotation=(math.pi / 2, 0.0, 0.0))
    obj = create_object(bpy.context, "G", s)
    corners = np.empty(8 * 3, np.float32)
    quad_mesh(obj).attributes["position"].data.foreach_get("vector", corners)
    quads = sorted(corners.reshape(2, 4, 3), key=lambda q: q[:, 2].mean())  # the quads come far first
    for quad, centre, sides in zip(quads, s.means, ([0.6, 0.6], [0.12, 1.8])):  # ±3σ
        np.testing.assert_allclose(quad.mean(axis=0), centre, atol=1e-6)
        np.testing.assert_allclose(sorted(np.linalg.norm(quad[1:] - quad[0], axis=1))[:2], sides, atol=1e-5)
        normal = np.cross(quad[1] - quad[0], quad[2] - quad[0])
        ray = centre - np.array([0.0, -5.0, 0.0])
        assert abs(normal @ ray) == pytest.approx(np.linalg.norm(normal) * np.linalg.norm(ray), rel=1e-5)


def test_viewport_draws_at_most_the_viewport_splats(scene):
    """The background depsgraph is a viewport one: a 2000-Gaussian cloud capped at 200 draws about 200 quads;
    faint Gaussians (opacity < 1/255) get none; the point cloud keeps all."""
    splats = random_splats(2000)
    splats.opacity_logits[:100] = -8.0
    obj = create_object(bpy.context, "G", splats)
    assert len(quad_mesh(obj).polygons) == 1900
    obj.modifiers[display.MODIFIER_NAME]["Socket_1"] = 200
    obj.update_tag()
    assert 150 <= len(quad_mesh(obj).polygons) <= 250
    assert len(evaluated(obj).data.points) == 2000


def render(scene, engine: str, name: str) -> np.ndarray:
    scene.render.engine = engine
    scene.render.filepath = str(PICTURES / f"{name}.png")
    bpy.ops.render.render(write_still=True)
    return np.asarray(Image.open(scene.render.filepath).convert("RGB"), np.float64) / 255


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


@pytest.fixture
def splat_shot(scene, make_camera):
    """300 Gaussians in front of a camera, black World, Standard view transform, W×H (the add-on enabled, so
    its render engine is registered)."""
    PICTURES.mkdir(exist_ok=True)
    create_object(bpy.context, "G", random_splats(300))
    make_camera(location=(0.0, -4.0, 0.0), rotation=(math.pi / 2, 0.0, 0.0))
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.view_settings.view_transform = 'Standard'
    scene.world = bpy.data.worlds.new("Black")
    scene.world.color = (0.0, 0.0, 0.0)
    for node in scene.world.node_tree.nodes if scene.world.node_tree else []:
        if node.type == 'BACKGROUND':
            node.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
    scene.eevee.taa_render_samples = 8
    scene.cycles.samples, scene.cycles.device = 16, 'CPU'
    yield scene
    render_engine.shutdown()


def test_eevee_and_cycles_render_the_splats_as_the_wonderland_engine_does(splat_shot):
    """EEVEE and Cycles draw the display quads; the engine splats the same Gaussians in the backend. They
    differ where EEVEE/Cycles blend in linear light and the splatting renderer in display values (brighter
    halos in EEVEE/Cycles), so the bar is 20 dB (24 dB measured at 256²), and colours are never black."""
    reference = render(splat_shot, render_engine.ENGINE_ID, "engine")
    eevee = render(splat_shot, 'BLENDER_EEVEE', "eevee")
    cycles = render(splat_shot, 'CYCLES', "cycles")
    assert reference.mean() > 0.1
    assert psnr(eevee, reference) > 20.0, psnr(eevee, reference)
    assert psnr(cycles, reference) > 20.0, psnr(cycles, reference)
    assert psnr(cycles, eevee) > 30.0, psnr(cycles, eevee)
    lit = reference.max(axis=2) > 0.2  # colours where the Gaussians are dense match within a few %
    for image in (eevee, cycles):
        np.testing.assert_allclose(image[lit].mean(axis=0), reference[lit].mean(axis=0), atol=0.08)
