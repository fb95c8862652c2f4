"""Run INSIDE a Python with the bpy 4.5 wheel (see test_edits_formats45.py): `python check_edits_formats.py OUT.json`.

Imports every splat format, adds each Gaussian edit to a known cloud, applies them and exports SPZ on
Blender 4.5 (the add-on's minimum), and writes what it saw as JSON for the test to assert.
"""
from __future__ import annotations

import gzip
import json
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `import wonderland_blender` from the checkout

import bpy  # noqa: E402  first: puts Blender's script modules on sys.path
import addon_utils  # noqa: E402
import numpy as np  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "splat_formats"


def main(out: Path) -> int:
    report = {"version": bpy.app.version_string, "imported": {}, "edited": {}, "errors": []}
    try:
        addon_utils.enable("wonderland_blender", default_set=True, handle_error=None)
        from wonderland_blender import edits
        from wonderland_blender.formats.spz import encode_spz
        from wonderland_blender.plyio import Splats, read_ply
        from wonderland_blender.pointcloud import create_object, read_splats
        for name in ("source.spz", "source.compressed.ply", "source.splat"):
            bpy.ops.wonderland.import_gaussians(filepath=str(FIXTURES / name))
            report["imported"][name] = len(bpy.context.active_object.data.points)
        rng = np.random.default_rng(0)
        n = 1000
        cloud = Splats(rng.uniform(-1, 1, (n, 3)).astype(np.float32), rng.normal(0, 0.5, (n, 3)).astype(np.float32),
                       np.zeros((n, 0, 3), np.float32), rng.normal(0, 2, n).astype(np.float32),
                       np.full((n, 3), -3.0, np.float32), np.tile(np.float32([1, 0, 0, 0]), (n, 1)))
        obj = create_object(bpy.context, "Cloud", cloud)
        box = bpy.data.objects.new("Box", None)
        box.scale = (0.5, 0.5, 0.5)
        camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))  # at the origin looking down −Z
        for helper in (box, camera):
            bpy.context.scene.collection.objects.link(helper)
        x, y, z = cloud.means.T
        opacity = 1 / (1 + np.exp(-cloud.opacity_logits))
        cases = {"CROP_BOX": ({"Box": box}, (np.abs(cloud.means) <= 0.5).all(axis=1).sum()),
                 "CAMERA_CULL": ({"Camera": camera, "Tan X": 1.0, "Tan Y": 0.5, "Margin": 0.0},
                                 ((z < 0) & (np.abs(x) <= -z) & (np.abs(y) <= -0.5 * z)).sum()),
                 "FILTER": ({"Min Opacity": 0.5}, (opacity >= 0.5).sum()),
                 "DECIMATE": ({"Keep": 25.0}, None), "COLOR": ({"Brightness": 0.0}, n)}
        for key, (settings, want) in cases.items():
            modifier = edits.add_edit(obj, key)
            for input_name, value in settings.items():
                edits.set_input(modifier, input_name, value)
            got = read_splats(obj.evaluated_get(bpy.context.evaluated_depsgraph_get()))
            report["edited"][key] = {"got": len(got), "want": None if want is None else int(want),
                                     "max_f_dc": float(got.f_dc.max())}
            obj.modifiers.remove(modifier)
        edits.set_input(edits.add_edit(obj, "CROP_BOX"), "Box", box)
        edits.add_edit(obj, "COLOR")
        report["applied"] = edits.apply_edits(obj)
        report["after_apply"] = len(obj.data.points)
        report["modifiers_left"] = [m.name for m in obj.modifiers]
        with tempfile.TemporaryDirectory() as folder:
            bpy.ops.object.select_all(action='DESELECT')
            bpy.ops.wonderland.import_gaussians(filepath=str(FIXTURES / "source.ply"))
            bpy.ops.wonderland.export_spz(filepath=f"{folder}/out.spz")
            report["spz_matches_reference"] = gzip.decompress(Path(f"{folder}/out.spz").read_bytes()) == \
                encode_spz(read_ply(FIXTURES / "source.ply").splats)
    except Exception:
        report["errors"].append(traceback.format_exc())
    out.write_text(json.dumps(report, indent=1))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
