"""The add-on's numpy code under numpy 2, as Blender 5.1+ bundles it (the test venv holds numpy 1.26.4, as
Blender 4.5 and 5.0 do, and tests/blender45 covers the Blender 4.5 wheel).

One Python process holds one numpy, so numpy 2 lives in its own venv, .venv/numpy2 (inside the git-ignored
.venv), made once with this interpreter's base Python and reused: numpy, pytest and plyfile at the versions
pyproject.toml pins for Python 3.12+, nothing else (no torch, no bpy). The bpy-free modules' tests listed in
NUMPY2_TESTS run there as a child pytest, with DeprecationWarnings as errors so that numpy 2's deprecations
show up before they become removals. Without network the install fails and the test is skipped.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv" / "numpy2"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / "installed.txt"   # written last: a venv without it is half-made and is rebuilt
# bpy-free, torch-free tests of the add-on
NUMPY2_TESTS = ("tests/test_intrinsics.py", "tests/test_plyio.py", "tests/test_camera_moves.py",
                "tests/test_formats.py", "tests/test_depthmesh.py")
PACKAGES = ("numpy", "pytest", "plyfile")
INSTALL_TIMEOUT_S = 600
RUN_TIMEOUT_S = 300


def pins(python: str = "3.13") -> list[str]:
    """PACKAGES as pyproject.toml pins them for `python` (numpy's marker picks its 2.x there)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = {}
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        req = Requirement(text)
        if req.name.lower() in PACKAGES and (req.marker is None or req.marker.evaluate({"python_version": python})):
            found[req.name.lower()] = f"{req.name}{req.specifier}"
    assert sorted(found) == sorted(PACKAGES), f"pyproject.toml pins no {set(PACKAGES) - set(found)}"
    return [found[name] for name in PACKAGES]


def _make_venv(wanted: str) -> None:
    """Create VENV and pip-install the pins; skip (removing the half-made venv) when pip cannot."""
    if VENV.exists():
        shutil.rmtree(VENV)
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base_python, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=300)
    pip = subprocess.run([str(PYTHON), "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                          "--only-binary=:all:", *pins()], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if pip.returncode != 0:
        shutil.rmtree(VENV)
        tail = "\n".join((pip.stderr or pip.stdout).strip().splitlines()[-10:])
        pytest.skip(f"pip install {' '.join(pins())} failed (no network?):\n{tail}")
    STAMP.write_text(wanted)


@pytest.fixture(scope="module")
def numpy2_python() -> Path:
    """The python of the numpy 2 venv, made on first use; a lock keeps parallel runs off a half-made one."""
    wanted = "\n".join(pins()) + "\n"
    VENV.parent.mkdir(exist_ok=True)
    with open(VENV.parent / "numpy2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (STAMP.exists() and STAMP.read_text() == wanted):
            _make_venv(wanted)
    return PYTHON


def test_the_environment_has_numpy_2_and_no_torch_or_bpy(numpy2_python):
    probe = ("import importlib.util, numpy; print(numpy.__version__, "
             "*(importlib.util.find_spec(m) is not None for m in ('torch', 'bpy')))")
    out = subprocess.run([str(numpy2_python), "-c", probe], capture_output=True, text=True, check=True).stdout
    version, has_torch, has_bpy = out.split()
    assert version.startswith("2.") and (has_torch, has_bpy) == ("False", "False")


def test_the_addon_numpy_tests_pass_under_numpy_2(numpy2_python, tmp_path):
    report = tmp_path / "junit.xml"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1"}
    run = subprocess.run([str(numpy2_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
                          "error::DeprecationWarning", f"--junitxml={report}", *NUMPY2_TESTS], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    tail = "\n".join(run.stdout.strip().splitlines()[-40:])
    assert run.returncode == 0, f"under numpy 2 (exit {run.returncode}):\n{tail}\n{run.stderr[-2000:]}"
    suite = ET.parse(report).getroot().find("testsuite")
    counts = {key: int(suite.get(key)) for key in ("tests", "failures", "errors", "skipped")}
    assert counts["failures"] == counts["errors"] == 0
    ran = counts["tests"] - counts["skipped"]
    assert ran >= 20, f"only {ran} tests ran under numpy 2: {counts}\n{tail}"
