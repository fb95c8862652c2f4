"""The "Wonderland Splats" display in the real bpy: what the modifier leaves for read_splats, the viewport cap,
EEVEE and Cycles renders against the Wonderland engine (the backend's splat renderer), and Solid view
(Workbench renders)."""
from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np
import pytest
from PIL import Image

from wonderland_blender import display, render_engine
from wonderland_blender.plyio import SH_C0, Splats, write_ply
from wonderland_blender.pointcloud import create_object, linear_to_srgb, read_splats

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


def vectors(mesh, name: str) -> np.ndarray:
    values = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.attributes[name].data.foreach_get("vector", values)
    return values.reshape(-1, 3)


def quad_corners(obj) -> np.ndarray:
    """[n, 4, 3]: the quads' corners where EEVEE and Cycles draw them. The mesh holds each quad at the size Solid
    view shows and its material's displacement moves each corner (UV u, v) on by (2u − 1)·splat_grow_u +
    (2v − 1)·splat_grow_v."""
    mesh = quad_mesh(obj)
    loops = np.array([p.loop_indices[:] for p in mesh.polygons]).reshape(-1, 4)
    corner_vertex = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", corner_vertex)
    uv = np.empty(2 * len(mesh.loops), np.float32)
    mesh.attributes[display.UV_NAME].data.foreach_get("vector", uv)
    vertex, signs = corner_vertex[loops], 2 * uv.reshape(-1, 2)[loops] - 1
    u, v = (vectors(mesh, name)[vertex] for name in display.GROWTH_NAMES)
    return vectors(mesh, "position")[vertex] + signs[..., :1] * u + signs[..., 1:] * v


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
    assert quad_corners(obj).shape == (50, 4, 3) and len(mesh.vertices) == 200
    assert [m.name for m in mesh.materials if m] == [display.SPLAT_MATERIAL]
    assert mesh.color_attributes.active_color_name == "splat_color"  # what Solid view's Attribute mode shows
    assert scene.cycles.transparent_max_bounces == display.CYCLES_TRANSPARENT_BOUNCES


def test_quads_span_three_sigma_of_the_projected_gaussian(scene, make_camera):
    """An isotropic Gaussian's quad is a 6σ square facing the camera; a stretched one's long side lies along
    its long axis as the camera sees it."""
    s = Splats(np.float32([[0, 0, 0], [0, 0, 1]]), np.zeros((2, 3), np.float32), np.zeros((2, 0, 3), np.float32),
               np.zeros(2, np.float32), np.log(np.float32([[0.1, 0.1, 0.1], [0.3, 0.02, 0.02]])),
               np.float32([[1, 0, 0, 0], [1, 0, 0, 0]]))
    make_camera(location=(0.0, -5.0, 0.0), rotation=(math.pi / 2, 0.0, 0.0))
    obj = create_object(bpy.context, "G", s)
    quads = sorted(quad_corners(obj), key=lambda q: q[:, 2].mean())  # the quads come far first
    for quad, centre, sides in zip(quads, s.means, ([0.6, 0.6], [0.12, 1.8])):  # ±3σ
        np.testing.assert_allclose(quad.mean(axis=0), centre, atol=1e-6)
        np.testing.assert_allclose(sorted(np.linalg.norm(quad[1:] - quad[0], axis=1))[:2], sides, atol=1e-5)
        normal = np.cross(quad[1] - quad[0], quad[2] - quad[0])
        ray = centre - np.array([0.0, -5.0, 0.0])
        assert abs(normal @ ray) == pytest.approx(np.linalg.norm(normal) * np.linalg.norm(ray), rel=1e-5)


def quad_centres(obj) -> np.ndarray:
    return np.sort(quad_corners(obj).mean(axis=1).round(5), axis=0)


def test_faint_gaussians_get_quads_only_as_wide_as_they_show(scene, make_camera):
    """Opacity 0.025 falls below 1/255 at r = √(2 ln(255·0.025)) = 1.93σ: the quad stops there, and its
    material reads the same extent (an opaque one reaches 3σ)."""
    s = Splats(np.float32([[0, 0, 0]]), np.zeros((1, 3), np.float32), np.zeros((1, 0, 3), np.float32),
               np.float32([np.log(0.025 / 0.975)]), np.log(np.float32([[0.1, 0.1, 0.1]])), np.float32([[1, 0, 0, 0]]))
    make_camera(location=(0.0, -5.0, 0.0), rotation=(math.pi / 2, 0.0, 0.0))
    obj = create_object(bpy.context, "G", s)
    mesh = quad_mesh(obj)
    extent = math.sqrt(2 * math.log(255 * 0.025))
    np.testing.assert_allclose(np.ptp(quad_corners(obj)[0], axis=0), [0.2 * extent, 0, 0.2 * extent], atol=1e-5)
    stored = np.empty(len(mesh.vertices), np.float32)
    mesh.attributes[display.EXTENT_NAME].data.foreach_get("value", stored)
    np.testing.assert_allclose(stored, extent, rtol=1e-5)


def test_viewport_draws_at_most_the_viewport_splats(scene, make_camera):
    """The background depsgraph is a viewport one: a 2000-Gaussian cloud capped at 200 draws about 200 quads,
    the same ones wherever the camera goes; faint Gaussians (opacity < 1/255) get none; the point cloud
    keeps all."""
    splats = random_splats(2000)
    splats.opacity_logits[:100] = -8.0
    cam = make_camera(location=(0.0, -4.0, 0.0), rotation=(math.pi / 2, 0.0, 0.0))
    obj = create_object(bpy.context, "G", splats)
    assert len(quad_corners(obj)) == 1900
    obj.modifiers[display.MODIFIER_NAME]["Socket_1"] = 200
    obj.update_tag()
    assert 150 <= len(quad_corners(obj)) <= 250
    before = quad_centres(obj)
    cam.location = (3.0, 1.0, 2.0)
    bpy.context.view_layer.update()
    np.testing.assert_allclose(quad_centres(obj), before, atol=1e-4)
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


def cloud(centre, srgb, opacity: float, sigma: float, n: int, spread: float = 0.12, seed: int = 0) -> Splats:
    """n isotropic Gaussians of one display colour (sRGB) and opacity around `centre`."""
    rng = np.random.default_rng(seed)
    return Splats((np.float32(centre) + rng.normal(0, spread, (n, 3))).astype(np.float32),
                  np.tile(((np.float32(srgb) - 0.5) / SH_C0).astype(np.float32), (n, 1)),
                  np.zeros((n, 0, 3), np.float32), np.full(n, math.log(opacity / (1 - opacity)), np.float32),
                  np.full((n, 3), math.log(sigma), np.float32), np.tile(np.float32([1, 0, 0, 0]), (n, 1)))


def test_solid_view_shows_each_gaussians_colour_over_the_area_its_opacity_covers(scene, make_camera):
    """Workbench (what Solid view draws) with Color ▸ Attribute: a red and a blue cloud in their colours (the
    quads, 3σ wide, are not drawn there), an isolated Gaussian of opacity 0.5 covers the area of its alpha,
    2πσ²·0.5, and a faint, wide one (opacity 0.02, σ 0.3) is a dot, not a ball. In Material mode the quads are
    the grey of the viewport colour."""
    PICTURES.mkdir(exist_ok=True)
    make_camera(location=(0.0, -4.0, 0.0), rotation=(math.pi / 2, 0.0, 0.0))
    red, blue = (0.9, 0.2, 0.1), (0.1, 0.3, 0.95)
    create_object(bpy.context, "Red", cloud((-0.8, 0, -0.6), red, 0.95, 0.08, 60))
    create_object(bpy.context, "Blue", cloud((0.8, 0, -0.6), blue, 0.95, 0.08, 60, seed=1))
    create_object(bpy.context, "Half", cloud((-0.8, 0, 0.6), (0.2, 0.9, 0.2), 0.5, 0.15, 1, spread=0.0))
    create_object(bpy.context, "Faint", cloud((0.2, 0, 0.45), (1.0, 1.0, 0.2), 0.02, 0.3, 1, spread=0.0))
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.view_settings.view_transform = 'Standard'
    scene.render.film_transparent = True
    scene.display.shading.light = 'FLAT'
    scene.display.shading.color_type = 'VERTEX'  # the Python name of Color ▸ Attribute
    scene.render.engine = 'BLENDER_WORKBENCH'
    scene.render.filepath = str(PICTURES / "workbench_attribute.png")
    bpy.ops.render.render(write_still=True)
    image = np.asarray(Image.open(scene.render.filepath), np.float64) / 255
    metres_per_pixel = 4.0 * 36.0 / 50.0 / W  # at 4 m, sensor 36 mm, lens 50 mm

    def pixel(x: float, z: float) -> tuple[int, int]:
        return round(H / 2 - z / metres_per_pixel), round(W / 2 + x / metres_per_pixel)

    for x, colour in ((-0.8, red), (0.8, blue)):
        row, col = pixel(x, -0.6)
        patch = image[row - 1:row + 2, col - 1:col + 2]
        assert (patch[..., 3] == 1).all()
        np.testing.assert_allclose(patch[..., :3].reshape(-1, 3).mean(axis=0), colour, atol=0.03)

    def covered(x: float, z: float, sigma: float) -> float:
        """Pixels covered (alpha summed) within 1.5σ of a Gaussian (nothing else is that close)."""
        row, col = pixel(x, z)
        r = math.ceil(1.5 * sigma / metres_per_pixel)
        assert r <= row < H - r and r <= col < W - r
        return image[row - r:row + r + 1, col - r:col + r + 1, 3].sum()

    def alpha_area(sigma: float, opacity: float) -> float:
        return 2 * math.pi * (sigma / metres_per_pixel) ** 2 * opacity

    assert covered(-0.8, 0.6, 0.15) == pytest.approx(alpha_area(0.15, 0.5), rel=0.2)
    row, col = pixel(-0.8, 0.6)
    np.testing.assert_allclose(image[row, col, :3], (0.2, 0.9, 0.2), atol=0.03)
    ball = math.pi * (0.3 / metres_per_pixel) ** 2  # what a 1σ sphere would cover
    assert 0.5 * alpha_area(0.3, 0.02) < covered(0.2, 0.45, 0.3) < 0.1 * ball

    scene.display.shading.color_type = 'MATERIAL'
    scene.render.filepath = str(PICTURES / "workbench_material.png")
    bpy.ops.render.render(write_still=True)
    grey = np.asarray(Image.open(scene.render.filepath), np.float64) / 255
    np.testing.assert_allclose(grey[..., 3], image[..., 3], atol=0.05)  # the same quads, grey
    opaque = grey[..., 3] == 1
    np.testing.assert_allclose(grey[opaque][:, :3], linear_to_srgb(np.array(display.SOLID_GREY[:3])).reshape(1, 3)
                               .repeat(opaque.sum(), axis=0), atol=0.01)


def test_solid_view_colours_survive_save_and_reopen(scene, tmp_path):
    """The quad's active colour is a name without an attribute of its own: the .blend must keep it."""
    create_object(bpy.context, "G", random_splats(20))
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "solid.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "solid.blend"))
    mesh = quad_mesh(bpy.data.objects["G"])
    assert mesh.color_attributes.active_color_name == "splat_color" and len(mesh.polygons) == 20


def test_importing_sets_solid_views_to_attribute_colours(scene, tmp_path):
    """Import sets the 3D views that are in Solid view to Color ▸ Attribute and says so; views in Material
    Preview or Rendered keep their Solid settings."""
    spaces = [s for screen in bpy.data.screens for a in screen.areas for s in a.spaces if s.type == 'VIEW_3D']
    spaces[0].shading.type = 'MATERIAL'
    for space in spaces:
        space.shading.color_type = 'MATERIAL'
    solid = [s.shading.type == 'SOLID' for s in spaces]
    assert 0 < sum(solid) < len(spaces)
    write_ply(tmp_path / "g.ply", random_splats(20))
    assert bpy.ops.wonderland.import_gaussians(filepath=str(tmp_path / "g.ply")) == {'FINISHED'}
    assert [s.shading.color_type == 'VERTEX' for s in spaces] == solid
    assert display.show_colors_in_solid_views() == 0  # nothing left to change
