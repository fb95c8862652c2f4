"""The depth mesh's grid maths (wonderland_blender/depthmesh.py, no bpy): faces, silhouette cuts, UVs, texture."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wonderland_blender.depthmesh import (DepthMeshError, detail_size, grid_faces, grid_uvs, pad_grid, read_job,
                                          texture_pixels)


def test_a_smooth_grid_is_all_quads_facing_the_camera():
    h, w = 4, 5
    grid = grid_faces(np.full((h, w), 2.0))
    assert grid.quads.shape == ((h - 1) * (w - 1), 4) and len(grid.triangles) == 0
    assert list(grid.quads[0]) == [0, w, w + 1, 1]   # top-left, below it, below-right, right
    # counter-clockwise seen from a camera looking along +z with image y down: a normal towards the camera
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    points = np.stack([u.ravel(), v.ravel(), np.full(h * w, 2.0)], 1)[grid.quads[0]]
    normal = np.cross(points[1] - points[0], points[2] - points[0])
    assert normal[2] < 0   # (y down, z forward) : pointing back at the camera


def sides(grid, near: np.ndarray) -> list[set]:
    """For each face, the set of surfaces its vertices lie on (twins lie on the far one)."""
    side = np.concatenate([near.ravel(), np.zeros(len(grid.twins), bool)])
    return [set(side[face]) for face in [*grid.quads, *grid.triangles]]


def test_a_depth_jump_cuts_the_faces_across_it():
    """Left half at distance 1, right half at 3: no face joins the halves; the far half is closed up to the
    silhouette by the near edge's twins, pushed back to distance 3."""
    h, w = 6, 8
    distance = np.ones((h, w))
    distance[:, 4:] = 3.0
    grid = grid_faces(distance, 0.1)
    assert all(len(s) == 1 for s in sides(grid, distance == 1.0))
    assert list(grid.twins) == [r * w + 3 for r in range(h)]       # the near column beside the far one
    np.testing.assert_allclose(grid.twin_scale, 3.0)
    assert len(grid.quads) == (h - 1) * (w - 1) and len(grid.triangles) == 0   # near, far and closing quads
    closing = [q for q in grid.quads if (q >= h * w).any()]
    assert len(closing) == h - 1
    # a looser threshold joins the halves directly, with no twins
    loose = grid_faces(distance, 3.0)
    assert len(loose.quads) == (h - 1) * (w - 1) and len(loose.twins) == 0


def test_a_diagonal_silhouette_keeps_the_near_triangle_and_closes_the_far_surface():
    """A cell with one corner on the far surface: the triangle of its three near corners, and a quad of the
    far corner with the near corners' twins behind it."""
    distance = np.ones((2, 2))
    distance[1, 1] = 5.0
    grid = grid_faces(distance)
    assert [sorted(t) for t in grid.triangles] == [[0, 1, 2]]
    assert list(grid.twins) == [0, 1, 2] and list(grid.quads[0]) == [4, 6, 3, 5]  # TL, BL, BR, TR


def test_twins_pushed_past_the_far_surface_do_not_close_it():
    """Columns at 16, 1, 4: the middle column's twins go back to 16 (their farthest neighbour), which is not the
    surface at 4, so the cell between 1 and 4 stays open rather than slanting to 16."""
    distance = np.array([[16.0, 1.0, 4.0], [16.0, 1.0, 4.0]])
    grid = grid_faces(distance)
    np.testing.assert_allclose(grid.twin_scale, 16.0)
    assert [list(q) for q in grid.quads] == [[0, 3, 7, 6]]   # only the 16 surface closed behind the middle
    assert len(grid.triangles) == 0


def test_small_relative_changes_stay_joined():
    """A slanted floor whose distance grows 5 % per row is one surface at the default threshold."""
    distance = np.repeat(1.05 ** np.arange(6), 4).reshape(6, 4)
    grid = grid_faces(distance)
    assert len(grid.quads) == 5 * 3 and len(grid.twins) == 0


def test_loops_list_quads_then_triangles():
    distance = np.ones((3, 3))
    distance[2, 2] = 9.0
    grid = grid_faces(distance)
    vertices, starts = grid.loops()
    assert len(grid.quads) == 4 and len(grid.triangles) == 1   # 3 near quads, the closing one; 1 near triangle
    assert list(starts) == [0, 4, 8, 12, 16] and len(vertices) == 19


def test_uvs_are_pixel_centres_with_v_up_and_the_ring_on_the_edges():
    uv = grid_uvs(4, 2, np.array([5]))
    assert uv.shape == (6 * 4 + 1, 2)
    np.testing.assert_allclose(uv[1 * 6 + 1], [0.125, 0.75])    # top-left pixel
    np.testing.assert_allclose(uv[2 * 6 + 4], [0.875, 0.25])    # bottom-right pixel
    np.testing.assert_allclose(uv[0], [0.0, 1.0])               # the ring's top-left corner
    np.testing.assert_allclose(uv[2 * 6 + 5], [1.0, 0.25])      # the ring right of the bottom-right pixel
    np.testing.assert_allclose(uv[-1], uv[5])                   # a twin maps like its vertex


def test_the_ring_is_half_a_pixel_outside_the_grid():
    """Positions linear in the pixel index (a plane) are extended exactly to the pixel edges."""
    v, u = np.meshgrid(np.arange(3.0), np.arange(4.0), indexing="ij")
    padded = pad_grid(np.stack([u, v, 2 * u + v + 1], axis=-1))
    assert padded.shape == (5, 6, 3)
    np.testing.assert_allclose(padded[0, 0], [-0.5, -0.5, -0.5])
    np.testing.assert_allclose(padded[-1, -1], [3.5, 2.5, 10.5])
    np.testing.assert_allclose(padded[1:-1, 1:-1, 0], u)
    with pytest.raises(DepthMeshError, match="1x3 pixels has no faces"):
        pad_grid(np.ones((3, 1, 3)))


def test_texture_pixels_put_the_top_row_last():
    rgb = np.zeros((2 * 3, 3))
    rgb[:3] = (1.0, 0.0, 0.0)  # top row red
    pixels = texture_pixels(rgb, 3, 2).reshape(2, 3, 4)
    assert (pixels[1, :, 0] == 1).all() and (pixels[0, :, 0] == 0).all() and (pixels[..., 3] == 1).all()


@pytest.mark.parametrize("detail", [{"size": None, "count": 0, "culled": 0}, {}, None])
def test_no_detail_layer_is_refused_clearly(detail):
    with pytest.raises(DepthMeshError, match="no detail layer.*detail size above 0"):
        detail_size({"detail": detail} if detail is not None else {}, "meta.json")


def test_read_job_gives_the_grid_and_camera_centre(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"detail": {"size": [4, 3], "count": 12}}))
    c2w = np.eye(4)
    c2w[:3, 3] = (1.0, 2.0, 3.0)
    (tmp_path / "cameras.json").write_text(json.dumps({"width": 4, "height": 3, "frames": [
        {"frame": 1, "K": [[4, 0, 2], [0, 4, 1.5], [0, 0, 1]], "c2w": c2w.tolist()}]}))
    size, centre = read_job(tmp_path)
    assert size == (4, 3) and list(centre) == [1.0, 2.0, 3.0]
    (tmp_path / "meta.json").write_text(json.dumps({"detail": {"size": [4, 3], "count": 11}}))
    with pytest.raises(DepthMeshError, match="does not match its count"):
        read_job(tmp_path)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(DepthMeshError, match="meta.json is missing"):
        read_job(tmp_path)
