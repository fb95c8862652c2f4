"""Input View as Mesh in the real bpy: a hand-made job folder with a known detail grid (a flat wall at
camera depth 2 and a box at 1.2 in front of it), the mesh it gives, its texture, and a Cycles render from
camera 0 that shows the photo's colours."""
from __future__ import annotations

import json
from pathlib import Path

import bpy
import numpy as np
import pytest
from depthmesh_scene import (BOX, BOX_COLS, BOX_ROWS, F, H, OFFSET, W, camera0_c2w, depth, detail_splats,
                             make_mesh, make_result, model_splats, photo, photo_pixels, shoot_from_camera_0,
                             write_job)
from mathutils import Matrix
from PIL import Image

from test_generate import FAST_PREVIEWS, generate_ops, job_scene  # noqa: F401 - fixtures
from wonderland_blender.display import QUAD_OBJECT
from wonderland_blender.housekeeping import RESULT_KEY
from wonderland_blender.plyio import Splats, write_ply
from wonderland_blender.pointcloud import srgb_to_linear

PICTURES = Path("/tmp/wonderland-depthmesh")


@pytest.fixture
def result(scene, tmp_path):
    return make_result(tmp_path)


def test_the_mesh_is_the_detail_grid_cut_at_the_box(result):
    mesh_obj = make_mesh(result)
    mesh = mesh_obj.data
    assert bpy.context.view_layer.objects.active == mesh_obj
    assert set(mesh_obj.users_collection) == set(result.users_collection)
    co = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.vertices.foreach_get("co", co)
    n = (W + 2) * (H + 2)                                       # the pixel grid and a ring around it
    grid = co.reshape(-1, 3)[:n].reshape(H + 2, W + 2, 3)
    np.testing.assert_allclose(grid[1:-1, 1:-1].reshape(-1, 3), detail_splats().means + OFFSET, atol=1e-5)
    in_box = np.concatenate([np.pad(depth() == BOX, 1).ravel(), np.zeros(len(mesh.vertices) - n, bool)])
    sides = [set(in_box[list(p.vertices)]) for p in mesh.polygons]
    assert all(len(s) == 1 for s in sides), "a face joins the box to the wall"
    assert {True} in sides and {False} in sides
    # the wall is closed behind the box's rim: twins of the rim vertices, on their rays at the wall's distance
    rim = len(mesh.vertices) - n
    assert rim == 2 * (7 + 7) - 4
    centre = camera0_c2w()[:3, 3] + OFFSET
    twins = co.reshape(-1, 3)[n:] - centre
    assert np.all(np.linalg.norm(twins, axis=1) > 1.5 * BOX)
    # faces face camera 0
    for p in list(mesh.polygons)[:20]:
        assert np.dot(np.array(p.normal), centre - np.array(p.center)) > 0


def test_the_texture_is_the_photo_packed_with_pixel_centre_uvs(result):
    mesh = make_mesh(result).data
    (mat,) = mesh.materials
    (tex,) = [n for n in mat.node_tree.nodes if n.type == 'TEX_IMAGE']
    image = tex.image
    assert tuple(image.size) == (W, H) and image.packed_file is not None
    pixels = np.empty(W * H * 4, np.float32)
    image.pixels.foreach_get(pixels)
    top_first = pixels.reshape(H, W, 4)[::-1, :, :3]
    np.testing.assert_allclose(top_first, photo(), atol=0.5 / 255 + 1e-6)
    uv = np.empty(2 * len(mesh.loops), np.float32)
    mesh.uv_layers["UVMap"].data.foreach_get("uv", uv)
    first = mesh.polygons[0].loop_start
    vertex = mesh.loops[first].vertex_index
    row, col = divmod(vertex, W + 2)                    # in the grid padded by a ring on the image's edges
    expected = np.clip([(col - 0.5) / W, 1 - (row - 0.5) / H], 0, 1)
    np.testing.assert_allclose(uv.reshape(-1, 2)[first], expected, atol=1e-6)


def test_the_mesh_and_its_texture_survive_save_and_reopen(result, tmp_path):
    name = make_mesh(result).name
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    (Path(result[RESULT_KEY]) / "scene.ply").unlink()     # the .blend needs nothing of the job folder
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "scene.blend"))
    (mat,) = bpy.data.objects[name].data.materials
    (image,) = [n.image for n in mat.node_tree.nodes if n.type == 'TEX_IMAGE']
    pixels = np.empty(W * H * 4, np.float32)
    image.pixels.foreach_get(pixels)
    np.testing.assert_allclose(pixels.reshape(H, W, 4)[::-1, :, :3], photo(), atol=0.5 / 255 + 1e-6)


def render(scene, engine: str, name: str) -> np.ndarray:
    PICTURES.mkdir(exist_ok=True)
    scene.render.engine = engine
    scene.render.filepath = str(PICTURES / f"{name}.png")
    bpy.ops.render.render(write_still=True)
    return np.asarray(Image.open(scene.render.filepath).convert("RGB"), np.float64) / 255


def test_cycles_from_camera_0_shows_the_photo(result):
    """Under a white World of strength 1 the diffuse surface's radiance is its albedo, so with the Standard
    view transform camera 0 sees the photo (away from the box's edges, where it shades the wall)."""
    make_mesh(result)
    rendered = render(shoot_from_camera_0(result, 1.0), 'CYCLES', "cycles")
    expected, keep = photo_pixels()
    error = np.abs(rendered - expected)[keep]
    assert keep.sum() > 200 and error.mean() < 0.02 and error.max() < 0.06, (error.mean(), error.max())
    # no slit of World (white) between the box and the wall: the rim pixels are between box and wall colours
    rim_rows = 2 * BOX_ROWS.start - 1, 2 * BOX_ROWS.stop - 1
    for r in rim_rows:
        assert rendered[r, 2 * BOX_COLS.start + 2:2 * BOX_COLS.stop - 2].min(axis=0)[2] < 0.9, rendered[r]
        assert np.all(rendered[r, 2 * BOX_COLS.start + 2:2 * BOX_COLS.stop - 2].sum(axis=1) < 2.4)
    # the box itself is lit too (it is a surface, not a decal): blue there, the ramp elsewhere
    assert np.allclose(rendered[2 * 7, 2 * 8], (0.15, 0.3, 0.85), atol=0.04)
    assert srgb_to_linear(rendered[keep]).min() > 0.01  # nothing black


def test_eevee_the_mesh_receives_shadows(result):
    """A sun shining along camera 0's axis and a cube the camera does not see (it only casts shadows): EEVEE
    draws the cube's shadow on the wall, half-way from where the cube stands in the view to the image centre
    (the wall is twice as far), and nothing changes elsewhere."""
    make_mesh(result)
    scene = shoot_from_camera_0(result, 0.0)
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", 'SUN'))
    sun.data.energy = 3.0
    sun.matrix_world = Matrix((camera0_c2w() @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist())
    scene.collection.objects.link(sun)
    lit = render(scene, 'BLENDER_EEVEE', "eevee_lit")
    row, col = 8, 18                                          # a wall pixel; the cube goes on its ray at depth 1
    ray = np.array([(col + 0.5 - W / 2) / F, (row + 0.5 - H / 2) / F, 1.0])
    c2w = camera0_c2w()
    cube = bpy.data.objects.new("Cube", bpy.data.meshes.new("Cube"))
    cube.data.from_pydata([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], [],
                          [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
    cube.location, cube.scale = c2w[:3, :3] @ ray + c2w[:3, 3] + OFFSET, (0.15, 0.15, 0.15)
    cube.visible_camera = False
    scene.collection.objects.link(cube)
    shadowed = render(scene, 'BLENDER_EEVEE', "eevee_shadow")
    shadow = 2 * row + 1, 2 * round((col + 0.5 - W / 2) / 2 + W / 2) + 1
    assert lit[shadow].mean() > 0.2
    assert shadowed[shadow].mean() < 0.3 * lit[shadow].mean(), (shadowed[shadow], lit[shadow])
    np.testing.assert_allclose(shadowed[2 * row, 2 * col], lit[2 * row, 2 * col], atol=0.03)  # no cube seen
    np.testing.assert_allclose(shadowed[20:, :8], lit[20:, :8], atol=0.03)   # bottom left: far from the cube


def test_a_result_without_detail_layer_is_refused(result):
    folder = Path(result[RESULT_KEY])
    write_job(folder, {"size": None, "count": 0, "culled": 0})
    bpy.context.view_layer.objects.active = result
    with pytest.raises(RuntimeError, match="no detail layer"):
        bpy.ops.wonderland.input_view_mesh()
    assert [m.name for m in bpy.data.meshes] == [QUAD_OBJECT] and not bpy.data.images  # only the display's quad


def test_a_scene_ply_with_non_finite_rows_is_refused(result):
    """Dropping a NaN row would shift the detail grid by one Gaussian: the mesh would be silently wrong."""
    splats = Splats.concatenate([model_splats(), detail_splats()])
    splats.means[7 + W * H // 2, 0] = np.nan  # in the detail layer
    write_ply(Path(result[RESULT_KEY]) / "scene.ply", splats)
    bpy.context.view_layer.objects.active = result
    with pytest.raises(RuntimeError, match="1 Gaussian.*NaN or infinite.*generate again"):
        bpy.ops.wonderland.input_view_mesh()
    assert [m.name for m in bpy.data.meshes] == [QUAD_OBJECT] and not bpy.data.images  # only the display's quad


def test_an_imported_ply_is_refused(result):
    del result[RESULT_KEY]
    bpy.context.view_layer.objects.active = result
    with pytest.raises(RuntimeError, match="not generated here.*imported PLY"):
        bpy.ops.wonderland.input_view_mesh()


def test_a_generated_result_becomes_its_input_view(job_scene, tmp_path):
    """End to end with the real backend (tiny model): the mesh has one vertex per detail Gaussian, and they
    project into camera 0 as a regular pixel grid, row-major with the top row first."""
    assert bpy.ops.wonderland.generate(extra_args=f"{FAST_PREVIEWS} --detail-size 24") == {'FINISHED'}
    obj = bpy.context.view_layer.objects.active
    folder = Path(obj[RESULT_KEY])
    w, h = json.loads((folder / "meta.json").read_text())["detail"]["size"]
    mesh = make_mesh(obj).data
    assert len(mesh.vertices) >= (w + 2) * (h + 2) and len(mesh.polygons) > (w + 1) * (h + 1) // 2
    co = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.vertices.foreach_get("co", co)
    frame = json.loads((folder / "cameras.json").read_text())["frames"][0]
    c2w, K = np.array(frame["c2w"]), np.array(frame["K"])
    padded = co.reshape(-1, 3)[:(w + 2) * (h + 2)].reshape(h + 2, w + 2, 3)
    cam = (padded[1:-1, 1:-1].reshape(-1, 3) - c2w[:3, 3]) @ c2w[:3, :3]
    assert (cam[:, 2] > 0).all()
    uv = (cam @ K.T)[:, :2] / cam[:, 2:]
    u, v = uv[:, 0].reshape(h, w), uv[:, 1].reshape(h, w)
    step_u, step_v = np.diff(u, axis=1), np.diff(v, axis=0)
    assert step_u.min() > 0 and step_v.min() > 0              # left to right, top to bottom
    np.testing.assert_allclose(step_u, step_u.mean(), rtol=1e-3)
    np.testing.assert_allclose(step_v, step_v.mean(), rtol=1e-3)
    np.testing.assert_allclose(u, np.broadcast_to(u[:1], u.shape), atol=1e-3)   # columns are vertical
