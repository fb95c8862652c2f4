"""The extension zip: built by tools/build_zip.py, accepted by Blender's validator, installed and enabled."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import bpy
import pytest

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = Path(bpy.utils.system_resource('SCRIPTS')) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"

# Runs in a fresh interpreter: BLENDER_USER_RESOURCES must be set before bpy starts.
INSTALL_SCRIPT = r"""
import json, os, sys
import bpy
zip_path, out = sys.argv[1], sys.argv[2]
result = {"install": sorted(bpy.ops.extensions.package_install_files(
    filepath=zip_path, repo="user_default", enable_on_install=True))}
pkg = "bl_ext.user_default.wonderland"
result["enabled"] = pkg in bpy.context.preferences.addons
result["module_file"] = sys.modules[pkg].__file__
result["user_path"] = bpy.utils.extension_path_user(pkg, path="probe", create=True)
result["user_path_exists"] = os.path.isdir(result["user_path"])
prefs_mod = sys.modules[pkg + ".preferences"]
prefs = prefs_mod.get_preferences()
result["is_extension"] = prefs_mod.is_extension()
result["output_root"] = prefs_mod.output_root(prefs)
venv_python = prefs_mod.venv_python(bpy.utils.extension_path_user(pkg, path=prefs_mod.INSTALLER_VENV))
os.makedirs(venv_python.parent)
venv_python.write_text("")
result["backend_python"] = prefs_mod.resolve_backend_python(prefs)
result["backend_python_expected"] = str(venv_python)
result["operators"] = [hasattr(bpy.types, n) for n in
                       ("WONDERLAND_OT_export_trajectory", "WONDERLAND_OT_add_trajectory", "WONDERLAND_PT_main")]
scene = bpy.context.scene
scene.frame_start, scene.frame_end = 1, 3
bpy.ops.wonderland.add_trajectory(preset="dolly_in")
result["export"] = sorted(bpy.ops.wonderland.export_trajectory(filepath=os.path.join(out, "cameras.json")))
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_zip.py"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path == out / "wonderland_blender-0.1.0.zip" and path.is_file()
    return path


def test_zip_layout(built_zip):
    names = zipfile.ZipFile(built_zip).namelist()
    for required in ("blender_manifest.toml", "__init__.py", "intrinsics.py", "trajectory.py", "panel.py",
                     "backend_src/backend/__init__.py", "backend_src/backend/cameras.py",
                     "backend_src/pyproject.toml"):
        assert required in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("tests/", "tools/", "wonderland_blender/", ".venv"))]


def test_blender_validator_accepts_the_zip(built_zip):
    done = subprocess.run([sys.executable, str(VALIDATOR), "validate", str(built_zip)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout


def test_install_and_enable_as_extension(built_zip, tmp_path):
    user = tmp_path / "user"
    env = {k: v for k, v in os.environ.items() if k not in ("WONDERLAND_BACKEND_PYTHON", "PYTHONPATH")}
    env["BLENDER_USER_RESOURCES"] = str(user)
    done = subprocess.run([sys.executable, "-c", INSTALL_SCRIPT, str(built_zip), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    result = json.loads(lines[-1][len("RESULT "):])
    installed = user / "extensions" / "user_default" / "wonderland"
    assert result["install"] == ["FINISHED"] and result["enabled"]
    assert Path(result["module_file"]) == installed / "__init__.py"
    assert (installed / "backend_src" / "backend" / "__init__.py").is_file()
    assert result["user_path"] == str(user / "extensions" / ".user" / "user_default" / "wonderland" / "probe")
    assert result["user_path_exists"] and result["is_extension"]
    assert result["output_root"] == str(user / "extensions" / ".user" / "user_default" / "wonderland" / "jobs")
    assert result["backend_python"] == [result["backend_python_expected"], "the backend installed by the add-on"]
    assert result["operators"] == [True, True, True]
    assert result["export"] == ["FINISHED"]
    cameras = json.loads((tmp_path / "cameras.json").read_text())
    assert [f["frame"] for f in cameras["frames"]] == [1, 2, 3]
