"""Splat formats and Gaussian edits on Blender 4.5, the add-on's minimum (check_edits_formats.py runs in
the bpy 4.5 venv that test_bpy45.py makes)."""
from __future__ import annotations

import pytest
from test_bpy45 import bpy45_python, run_check  # noqa: F401  (the fixture that makes the bpy 4.5 venv)

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def test_formats_and_edits_work_on_blender_4_5(bpy45_python, tmp_path):  # noqa: F811
    report = run_check(bpy45_python, "check_edits_formats.py", tmp_path / "report.json")
    assert report["version"].startswith("4.5") and not report["errors"], report["errors"]
    assert report["imported"] == {"source.spz": 40, "source.compressed.ply": 40, "source.splat": 40}
    edited = report["edited"]
    for key in ("CROP_BOX", "CAMERA_CULL", "FILTER", "COLOR"):
        assert edited[key]["got"] == edited[key]["want"] > 0, key
    assert 150 < edited["DECIMATE"]["got"] < 350
    assert edited["COLOR"]["max_f_dc"] < -1.7  # brightness 0: black, f_dc = −0.5 / C0
    crop_box_kept = edited["CROP_BOX"]["want"]
    assert report["applied"] == 2 and report["after_apply"] == crop_box_kept
    assert report["modifiers_left"] == ["Wonderland Splats"]  # the display modifier stays
    assert report["spz_matches_reference"]
