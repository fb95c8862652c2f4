"""The depth mesh's grid maths (wonderland_blender/depthmesh.py, no bpy): faces, silhouette cuts, UVs, texture."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wonderland_blender.depthmesh import (DepthMeshError, detail_size, grid_faces, grid_uvs, read_job,
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


def test_a_depth_jump_cuts_the_faces_across_it():
    """Left half at distance 1, right half at 3: no face joins the halves, each half stays whole."""
    h, w = 6, 8
    distance = np.ones((h, w))
    distance[:, 4:] = 3.0
    grid = grid_faces(distance, 0.1)
    side = (np.arange(h * w) % w) >= 4
    for face in [*grid.quads, *grid.triangles]:
        assert len(set(side[face])) == 1, face
    assert len(grid.quads) == (h - 1) * (w - 2) and len(grid.triangles) == 0
    # a looser threshold joins them again
    assert len(grid_faces(distance, 3.0).quads) == (h - 1) * (w - 1)


def test_a_diagonal_silhouette_keeps_the_triangle_on_each_side():
    """A cell with one corner on the far surface keeps the triangle of its three near corners."""
    distance = np.ones((2, 2))
    distance[1, 1] = 5.0
    grid = grid_faces(distance)
    assert len(grid.quads) == 0
    assert [sorted(t) for t in grid.triangles] == [[0, 1, 2]]


def test_small_relative_changes_stay_joined():
    """A slanted floor whose distance grows 5 % per row is one surface at the default threshold."""
    distance = np.repeat(1.05 ** np.arange(6), 4).reshape(6, 4)
    assert len(grid_faces(distance).quads) == 5 * 3


def test_loops_list_quads_then_triangles():
    distance = np.ones((3, 3))
    distance[2, 2] = 9.0
    grid = grid_faces(distance)
    vertices, starts = grid.loops()
    assert len(grid.quads) == 3 and len(grid.triangles) == 1
    assert list(starts) == [0, 4, 8, 12] and len(vertices) == 15


def test_uvs_are_pixel_centres_with_v_up():
    uv = grid_uvs(4, 2)
    np.testing.assert_allclose(uv[0], [0.125, 0.75])    # top-left pixel
    np.testing.assert_allclose(uv[7], [0.875, 0.25])    # bottom-right pixel


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
