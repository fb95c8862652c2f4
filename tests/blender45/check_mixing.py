"""Run INSIDE a Python with the bpy 4.5 wheel: `python check_mixing.py REPORT.json`. Sets up mesh mixing on
Blender 4.5 (its compositor is the scene's node tree, EEVEE is BLENDER_EEVEE_NEXT), renders the mixing test
scene and reports the expected and the rendered pixels as JSON for test_mixing45.py."""
from __future__ import annotations

import json
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "blender")]

import bpy  # noqa: E402  first: puts Blender's script modules (addon_utils) on sys.path
import addon_utils  # noqa: E402

import mixing_scene  # noqa: E402


def main(report_path: str) -> int:
    report = {"blender_version": list(bpy.app.version)}
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        addon_utils.enable("wonderland_blender", default_set=True, handle_error=None)
        with tempfile.TemporaryDirectory() as tmp:
            scene = mixing_scene.build(Path(tmp))
            report["setup"] = sorted(bpy.ops.wonderland.setup_mesh_mixing())
            report["mesh_engine"] = bpy.data.scenes[scene.name + " Meshes"].render.engine
            mix = mixing_scene.render(Path(tmp) / "mix.exr")
        report["pixels"] = [{"expected": list(rgba), "got": mixing_scene.pixel(mix, *point).tolist()}
                            for point, rgba in mixing_scene.EXPECTED]
    except Exception:  # noqa: BLE001 - reported for the test to show
        report["error"] = traceback.format_exc()
    Path(report_path).write_text(json.dumps(report))
    return 1 if "error" in report else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
