"""Input View as Mesh and Solid-view colours on Blender 4.5, the add-on's minimum (check_viewport.py runs in
the bpy 4.5 venv that test_bpy45.py makes)."""
from __future__ import annotations

import pytest
from test_bpy45 import bpy45_python, run_check  # noqa: F401 - the venv fixture

pytestmark = [pytest.mark.blender, pytest.mark.slow]


@pytest.fixture(scope="module")
def report(bpy45_python, tmp_path_factory) -> dict:  # noqa: F811
    result = run_check(bpy45_python, "check_viewport.py", tmp_path_factory.mktemp("viewport45") / "report.json")
    assert "error" not in result, result["error"]
    assert result["blender_version"][:2] == [4, 5]
    return result


def test_input_view_mesh_on_blender_4_5(report):
    """The same mesh as in bpy 5.0 (tests/blender/test_input_view_mesh.py): one vertex per detail pixel plus a
    ring and the rim's twins, cut at the box, the photo packed as its texture (kept through save and reopen),
    and Cycles from camera 0 shows the photo."""
    mesh = report["depth_mesh"]
    assert mesh["vertices"] == (24 + 2) * (16 + 2) + mesh["twins"] and mesh["twins"] == 2 * (7 + 7) - 4
    assert mesh["grid_error"] < 1e-5 and mesh["faces_across_the_cut"] == 0 and mesh["faces"] > 300
    assert mesh["texture_error"] < 0.5 / 255 + 1e-6 and mesh["texture_error_after_reopen"] < 0.5 / 255 + 1e-6
    assert mesh["compared"] > 200 and mesh["render_mean_error"] < 0.02 and mesh["render_max_error"] < 0.06


def test_solid_view_colours_on_blender_4_5(report):
    """Workbench's Attribute colour mode shows each Gaussian's colour, and a faint one covers the area of its
    alpha, not a 1σ ball."""
    solid = report["solid_view"]
    assert solid["red"] == pytest.approx([0.9, 0.2, 0.1, 1.0], abs=0.03)
    assert solid["blue"] == pytest.approx([0.1, 0.3, 0.95, 1.0], abs=0.03)
    assert 0.5 * solid["faint_alpha_area"] < solid["faint_coverage"] < 0.1 * solid["faint_ball"]
