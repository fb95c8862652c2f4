"""Mesh mixing on Blender 4.5 (blender_version_min): the compositor set-up differs from 5.0's, so it is
rendered there too, in the bpy 4.5 venv of test_bpy45.py."""
from __future__ import annotations

import numpy as np
import pytest
from test_bpy45 import bpy45_python, run_check  # noqa: F401 - the venv fixture

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def test_mixing_renders_on_blender_4_5(bpy45_python, tmp_path):  # noqa: F811
    report = run_check(bpy45_python, "check_mixing.py", tmp_path / "mixing.json")
    assert "error" not in report, report["error"]
    assert report["blender_version"][:2] == [4, 5]
    assert report["setup"] == ["FINISHED"] and report["mesh_engine"] == "BLENDER_EEVEE_NEXT"
    for pixel in report["pixels"]:
        np.testing.assert_allclose(pixel["got"], pixel["expected"], atol=0.05)
