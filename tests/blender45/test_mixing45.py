"""Mesh mixing on Blender 4.5 (blender_version_min): the compositor set-up differs from 5.0's, so it is
rendered there too, in the bpy 4.5 venv of test_bpy45.py."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_bpy45 import ROOT, _tail, bpy45_python  # noqa: F401 - the venv fixture

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def test_mixing_renders_on_blender_4_5(bpy45_python, tmp_path):
    path = tmp_path / "mixing.json"
    run = subprocess.run([str(bpy45_python), str(Path(__file__).with_name("check_mixing.py")), str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONNOUSERSITE="1"))
    assert path.exists(), f"check_mixing.py wrote no report (exit {run.returncode}):\n{_tail(run.stderr, 40)}"
    report = json.loads(path.read_text())
    assert "error" not in report, report["error"]
    assert report["blender_version"][:2] == [4, 5]
    assert report["setup"] == ["FINISHED"] and report["mesh_engine"] == "BLENDER_EEVEE_NEXT"
    for pixel in report["pixels"]:
        np.testing.assert_allclose(pixel["got"], pixel["expected"], atol=0.05)
