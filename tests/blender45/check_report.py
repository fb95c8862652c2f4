"""The frame of a check script run inside the bpy 4.5 venv (check_mixing.py, check_viewport.py): factory
settings, the add-on enabled, a temporary folder, and the report written as JSON, with the traceback in it
when the check fails, for the test in the bpy 5.0 venv to assert and show."""
from __future__ import annotations

import json
import tempfile
import traceback
from pathlib import Path

import bpy  # first: puts Blender's script modules (addon_utils) on sys.path
import addon_utils


def run(report_path: str, check) -> int:
    """check(folder, report) fills `report`; returns the exit status."""
    report = {"blender_version": list(bpy.app.version)}
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        addon_utils.enable("wonderland_blender", default_set=True, handle_error=None)
        with tempfile.TemporaryDirectory() as tmp:
            check(Path(tmp), report)
    except Exception:  # noqa: BLE001 - reported for the test to show
        report["error"] = traceback.format_exc()
    Path(report_path).write_text(json.dumps(report))
    return 1 if "error" in report else 0
