"""Run INSIDE a Python with the bpy 4.5 wheel: `python check_mixing.py REPORT.json`. Sets up mesh mixing on
Blender 4.5 (its compositor is the scene's node tree, EEVEE is BLENDER_EEVEE_NEXT), renders the mixing test
scene and reports the expected and the rendered pixels as JSON for test_mixing45.py."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "blender")]

import bpy  # noqa: E402  first: puts Blender's script modules on sys.path

import check_report  # noqa: E402
import mixing_scene  # noqa: E402


def check(folder: Path, report: dict) -> None:
    scene = mixing_scene.build(folder)
    report["setup"] = sorted(bpy.ops.wonderland.setup_mesh_mixing())
    report["mesh_engine"] = bpy.data.scenes[scene.name + " Meshes"].render.engine
    mix = mixing_scene.render(folder / "mix.exr")
    report["pixels"] = [{"expected": list(rgba), "got": mixing_scene.pixel(mix, *point).tolist()}
                        for point, rgba in mixing_scene.EXPECTED]


if __name__ == "__main__":
    sys.exit(check_report.run(sys.argv[1], check))
