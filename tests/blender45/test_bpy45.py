"""The add-on on Blender 4.5 (blender_version_min): register, trajectory export, PLY import/export, a preset
move and Match Camera to Photo in the real bpy 4.5 wheel.

The test venv holds bpy 5.0, and one Python process holds one bpy, so the 4.5 wheel lives in its own venv,
.venv/bpy45 (inside the git-ignored .venv), made once with the same Python and reused; check_addon.py runs
in it as a child process and reports JSON. Without network the install fails and the test is skipped.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BPY_REQUIREMENT = "bpy==4.5.15"
VENV = ROOT / ".venv" / "bpy45"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / "installed.txt"  # written last: a venv without it is half-made and is rebuilt
INSTALL_TIMEOUT_S = 1800  # a 372 MB wheel on a slow line
CHECK_TIMEOUT_S = 600

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _make_venv() -> None:
    """Create VENV with this interpreter's base Python and pip-install the bpy 4.5 wheel; skip on failure."""
    if VENV.exists():
        shutil.rmtree(VENV)
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base_python, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=300)
    try:
        pip = subprocess.run([str(PYTHON), "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                              BPY_REQUIREMENT], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        shutil.rmtree(VENV)
        pytest.skip(f"pip install {BPY_REQUIREMENT} took over {INSTALL_TIMEOUT_S} s")
    if pip.returncode != 0:
        shutil.rmtree(VENV)
        pytest.skip(f"pip install {BPY_REQUIREMENT} failed (no network?):\n{_tail(pip.stderr or pip.stdout)}")
    STAMP.write_text(BPY_REQUIREMENT + "\n")


@pytest.fixture(scope="session")
def bpy45_python() -> Path:
    """The python of a venv with the bpy 4.5 wheel, made on first use; a lock keeps parallel runs from
    using or building a half-made one."""
    VENV.parent.mkdir(exist_ok=True)
    with open(VENV.parent / "bpy45.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (STAMP.exists() and STAMP.read_text().strip() == BPY_REQUIREMENT):
            _make_venv()
    return PYTHON


def run_check(python: Path, script: str, report_path: Path) -> dict:
    """Run tests/blender45/`script` REPORT.json in the bpy 4.5 venv and return its JSON report (with its exit
    status); fails with its stderr when it wrote none."""
    run = subprocess.run([str(python), str(Path(__file__).with_name(script)), str(report_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
                         env=dict(os.environ, PYTHONNOUSERSITE="1"))
    assert report_path.exists(), f"{script} wrote no report (exit {run.returncode}):\n{_tail(run.stderr, 40)}"
    return {**json.loads(report_path.read_text()), "returncode": run.returncode}


@pytest.fixture(scope="session")
def report(bpy45_python, tmp_path_factory) -> dict:
    """check_addon.py's JSON report from inside bpy 4.5; fails with its output if it crashed."""
    return run_check(bpy45_python, "check_addon.py", tmp_path_factory.mktemp("bpy45") / "report.json")


def test_runs_on_blender_4_5_without_errors(report):
    assert report["blender_version"][:2] == [4, 5]
    assert report["errors"] == {}, "\n".join(f"{k}:\n{v}" for k, v in report["errors"].items())
    assert report["returncode"] == 0


def test_register_and_unregister_twice(report):
    expected = report["register"]["expected_classes"]
    cycles = report["register"]["cycles"]
    assert len(cycles) == 4
    for cycle in cycles:
        assert cycle["enabled"] == {"module": "wonderland_blender", "classes": expected, "scene_settings": True}
        assert cycle["left_after_disable"] == [] and cycle["scene_settings_after_disable"] is False


@pytest.mark.parametrize("fit", ["AUTO", "HORIZONTAL", "VERTICAL"])
def test_trajectory_matches_blender_projection(report, fit):
    result = report["trajectory"][fit]
    assert result["status"] == ["FINISHED"]
    assert result["frames"] == [1, 2, 3] and result["frame_after"] == 2
    assert result["size"] == [240, 320]
    assert result["worst_px"] < 0.01
    # Portrait frame: AUTO fits the sensor width to the longer (vertical) side, like VERTICAL with 36 mm.
    fx = {"AUTO": 35 / 36 * 320, "HORIZONTAL": 35 / 36 * 240, "VERTICAL": 35 / 20 * 320}[fit]
    assert result["fx"] == pytest.approx([fx] * 3)


def test_ply_import_makes_a_point_cloud_and_exports_within_float_tolerance(report):
    result = report["ply"]
    assert result["import_status"] == result["export_status"] == ["FINISHED"]
    assert result["object_type"] == "POINTCLOUD" and result["points"] == result["expected_points"] == 64
    attributes = result["attributes"]
    expected = {"position": "FLOAT_VECTOR", "splat_color": "FLOAT_COLOR", "opacity": "FLOAT",
                "scale": "FLOAT_VECTOR", "rotation": "QUATERNION", "radius": "FLOAT",
                **{f"sh_rest_{k:02d}": "FLOAT_VECTOR" for k in range(8)}}
    assert attributes == expected
    assert result["meshes_left"] == 0
    assert result["modifiers"] == ["Wonderland Splats"]  # the splat display evaluates on 4.5 too
    assert result["display_quads"] == [result["expected_quads"]] and result["expected_quads"] > 50
    assert result["max_difference"] == pytest.approx({"means": 0, "f_dc": 0, "f_rest": 0, "opacity_logits": 0,
                                                      "log_scales": 0, "quats": 0}, abs=1e-6)


def test_match_camera_to_photo_reads_the_exif_and_leaves_a_keyed_lens(report):
    result = report["photo_camera"]
    assert result["plain"]["status"] == ["FINISHED"] and result["plain"]["resolution"] == [1920, 1440]
    assert result["plain"]["sensor_fit"] == "AUTO"
    # the lens on a 36 mm long side that sees a 26 mm (35 mm terms) photo's diagonal: 26 * 36 * 5/4 / 43.27
    assert result["plain"]["lens"] == pytest.approx(26 * 36 * 5 / (4 * math.hypot(36, 24)), rel=1e-6)
    assert result["keyed"] == {"status": ["FINISHED"], "lens": 50.0}


def test_a_preset_move_is_keyed_linear(report):
    result = report["preset_move"]
    assert result["status"] == ["FINISHED"]
    assert result["y"] == pytest.approx([-6.0, -5.0, -4.0], abs=1e-5)   # 2 m along the view over frames 1-9
    assert result["keys"] == [[1, "LINEAR"], [9, "LINEAR"]]
