"""Run INSIDE a Python that has the bpy 4.5 wheel (see test_bpy45.py): usage `python check_addon.py REPORT.json`.

Measures what the add-on does on Blender 4.5 (its blender_version_min) and writes the numbers to a JSON report;
test_bpy45.py asserts them. Each check runs on its own, so one failure does not hide the others: an exception
is recorded with its traceback under "errors" and the exit code is 1.
"""
from __future__ import annotations

import json
import math
import struct
import sys
import tempfile
import traceback
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `import wonderland_blender` from the checkout

import bpy  # noqa: E402  first: puts Blender's script modules (addon_utils, bpy_extras) on sys.path
import addon_utils  # noqa: E402
import numpy as np  # noqa: E402
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402
from mathutils import Vector  # noqa: E402

import wonderland_blender  # noqa: E402
from wonderland_blender.display import QUAD_OBJECT  # noqa: E402
from wonderland_blender.plyio import Splats, read_ply, write_ply  # noqa: E402
from wonderland_blender.presets import channelbag  # noqa: E402

ADDON = "wonderland_blender"
OUR_CLASSES = (("PropertyGroup", "WonderlandSceneSettings"), ("AddonPreferences", "WonderlandPreferences"),
               ("Operator", "WONDERLAND_OT_export_trajectory"), ("Operator", "WONDERLAND_OT_import_gaussians"),
               ("Operator", "WONDERLAND_OT_export_gaussians"), ("Operator", "WONDERLAND_OT_match_photo_camera"),
               ("Panel", "WONDERLAND_PT_main"))
RAW_FIELDS = ("means", "f_dc", "f_rest", "opacity_logits", "log_scales", "quats")


def registered_classes() -> list[str]:
    return [name for base, name in OUR_CLASSES if getattr(bpy.types, base).bl_rna_get_subclass_py(name) is not None]


def check_register() -> dict:
    """addon_utils.enable/disable twice, then the module's register()/unregister() twice."""
    cycles = []
    for _ in range(2):
        module = addon_utils.enable(ADDON, default_set=True, handle_error=None)
        enabled = {"module": getattr(module, "__name__", None), "classes": registered_classes(),
                   "scene_settings": hasattr(bpy.types.Scene, "wonderland")}
        addon_utils.disable(ADDON, default_set=True)
        cycles.append({"enabled": enabled, "left_after_disable": registered_classes(),
                       "scene_settings_after_disable": hasattr(bpy.types.Scene, "wonderland")})
    for _ in range(2):
        wonderland_blender.register()
        enabled = {"module": ADDON, "classes": registered_classes(),
                   "scene_settings": hasattr(bpy.types.Scene, "wonderland")}
        wonderland_blender.unregister()
        cycles.append({"enabled": enabled, "left_after_disable": registered_classes(),
                       "scene_settings_after_disable": hasattr(bpy.types.Scene, "wonderland")})
    return {"expected_classes": [name for _, name in OUR_CLASSES], "cycles": cycles}


def _scene_with_camera():
    """A factory-settings scene with the add-on enabled and a new camera as its camera: (scene, camera object)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable(ADDON, default_set=True, handle_error=None)
    scene = bpy.context.scene
    cam_obj = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    return scene, cam_obj


def _worst_pixel_error(scene, cam_obj, frame: dict, width: int, height: int) -> float:
    """Largest |cameras.json projection − Blender's world_to_camera_view| over a few points in view."""
    worst = 0.0
    w2c = np.linalg.inv(np.array(frame["c2w"]))
    for p in ((0.0, 0.0, -5.0), (1.2, 0.7, -4.0), (-2.0, 1.5, -9.0), (0.4, -1.1, -2.5)):  # camera space
        world = cam_obj.matrix_world.normalized() @ Vector(p)
        uvw = np.array(frame["K"]) @ (w2c @ np.array([*world, 1.0]))[:3]
        ndc = world_to_camera_view(scene, cam_obj, world)
        theirs = np.array([ndc.x * width, (1.0 - ndc.y) * height])
        worst = max(worst, float(np.abs(uvw[:2] / uvw[2] - theirs).max()))
    return worst


def check_trajectory(folder: Path) -> dict:
    """export_trajectory for a moving, turning camera with shift, one run per sensor fit (portrait frame,
    so AUTO, HORIZONTAL and VERTICAL all differ)."""
    results = {}
    for fit in ("AUTO", "HORIZONTAL", "VERTICAL"):
        scene, cam_obj = _scene_with_camera()
        cam = cam_obj.data
        cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit = 35.0, 36.0, 20.0, fit
        cam.shift_x, cam.shift_y = 0.13, -0.07
        scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 480, 640, 50
        scene.frame_start, scene.frame_end = 1, 3
        cam_obj.location, cam_obj.rotation_euler = (1.0, -4.0, 2.0), (math.radians(75), 0.1, math.radians(20))
        cam_obj.keyframe_insert("location", frame=1)
        cam_obj.keyframe_insert("rotation_euler", frame=1)
        cam_obj.location, cam_obj.rotation_euler = (2.5, -3.0, 1.0), (math.radians(85), -0.1, math.radians(40))
        cam_obj.keyframe_insert("location", frame=3)
        cam_obj.keyframe_insert("rotation_euler", frame=3)
        scene.frame_set(2)
        out = folder / f"cameras_{fit}.json"
        status = bpy.ops.wonderland.export_trajectory(filepath=str(out))
        frame_after = scene.frame_current
        cameras = json.loads(out.read_text())
        errors = []
        for frame in cameras["frames"]:
            scene.frame_set(frame["frame"])
            errors.append(_worst_pixel_error(scene, cam_obj, frame, cameras["width"], cameras["height"]))
        results[fit] = {"status": sorted(status), "frame_after": frame_after,
                        "frames": [f["frame"] for f in cameras["frames"]],
                        "size": [cameras["width"], cameras["height"]],
                        "fx": [f["K"][0][0] for f in cameras["frames"]], "worst_px": max(errors)}
        addon_utils.disable(ADDON, default_set=True)
    return results


def _differences(out: Splats, src: Splats) -> dict:
    """Largest |exported − source| per field; opacity as sigmoid, rotations against the normalized source."""
    sigmoid = lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))  # noqa: E731
    unit = src.quats / np.linalg.norm(src.quats, axis=1, keepdims=True)
    pairs = {name: (getattr(out, name), getattr(src, name)) for name in RAW_FIELDS}
    pairs["opacity_logits"] = (sigmoid(out.opacity_logits), sigmoid(src.opacity_logits))
    pairs["quats"] = (out.quats, unit)
    return {name: float(np.abs(a.astype(np.float64) - b).max()) for name, (a, b) in pairs.items()}


def check_ply(folder: Path) -> dict:
    """A PLY from the add-on's writer → import_gaussians (mesh, then object.convert to POINTCLOUD) →
    export_gaussians."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable(ADDON, default_set=True, handle_error=None)
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    n, k = 64, 8  # SH degree 2
    src = Splats(f(n, 3), f(n, 3), f(n, k, 3), f(n), f(n, 3) - 2, f(n, 4))
    write_ply(folder / "in.ply", src)
    status_in = bpy.ops.wonderland.import_gaussians(filepath=str(folder / "in.ply"))
    obj = bpy.context.active_object
    attributes = {a.name: a.data_type for a in obj.data.attributes} if obj is not None else {}
    points = len(obj.data.points) if obj is not None and obj.type == 'POINTCLOUD' else None
    depsgraph = bpy.context.evaluated_depsgraph_get()
    quads = [len(i.object.data.polygons) for i in depsgraph.object_instances if i.object.type == 'MESH']
    status_out = bpy.ops.wonderland.export_gaussians(filepath=str(folder / "out.ply"))
    out = read_ply(folder / "out.ply").splats
    result = {"import_status": sorted(status_in), "export_status": sorted(status_out),
              "object_type": obj.type if obj is not None else None, "points": points, "expected_points": n,
              "attributes": attributes, "meshes_left": len([m for m in bpy.data.meshes if m.name != QUAD_OBJECT]),
              "max_difference": _differences(out, src), "modifiers": [m.name for m in obj.modifiers],
              "display_quads": quads, "expected_quads": int((src.opacity_logits >= np.log(1 / 254)).sum())}
    addon_utils.disable(ADDON, default_set=True)
    return result


def _png_with_exif(path: Path, width: int, height: int, focal_35mm: int) -> None:
    """A grey RGB PNG whose eXIf chunk says FocalLengthIn35mmFilm (built with the standard library: this venv
    has no Pillow)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ifd0 = struct.pack("<HHHII", 1, 0x8769, 4, 1, 8 + 18) + b"\0" * 4          # -> the Exif IFD at offset 26
    exif_ifd = struct.pack("<HHHIHH", 1, 0xA405, 3, 1, focal_35mm, 0) + b"\0" * 4
    rows = b"".join(b"\0" + b"\x80" * (3 * width) for _ in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"eXIf", b"II" + struct.pack("<HI", 42, 8) + ifd0 + exif_ifd)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def check_photo_camera(folder: Path) -> dict:
    """Match Camera to Photo with a 4:3 photo taken at 26 mm (35 mm terms): a 16:9, 50 mm camera, then the
    same with its lens keyed (read through 4.5's layered-action API)."""
    scene, cam_obj = _scene_with_camera()
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    _png_with_exif(folder / "photo.png", 400, 300, 26)
    scene.wonderland.image_path = str(folder / "photo.png")
    status = bpy.ops.wonderland.match_photo_camera()
    plain = {"status": sorted(status), "resolution": [scene.render.resolution_x, scene.render.resolution_y],
             "lens": cam_obj.data.lens, "sensor_fit": cam_obj.data.sensor_fit}
    cam_obj.data.lens = 50.0
    cam_obj.data.keyframe_insert("lens", frame=1)
    keyed = {"status": sorted(bpy.ops.wonderland.match_photo_camera()), "lens": cam_obj.data.lens}
    addon_utils.disable(ADDON, default_set=True)
    return {"plain": plain, "keyed": keyed}


def check_preset_move() -> dict:
    """The dolly-in preset keyed on a level camera (its curves read through presets.channelbag, as the add-on
    reads them on 4.5)."""
    scene, cam_obj = _scene_with_camera()
    scene.frame_start, scene.frame_end = 1, 9
    cam_obj.location, cam_obj.rotation_euler = (0.0, -6.0, 1.5), (math.radians(90), 0.0, 0.0)   # looks along +Y
    status = bpy.ops.wonderland.add_trajectory(preset='dolly_in', amount=2.0)
    ys = []
    for frame in (1, 5, 9):
        scene.frame_set(frame)
        ys.append(cam_obj.matrix_world.translation.y)
    curves = [fc for fc in channelbag(cam_obj).fcurves if fc.data_path == "location"]
    keys = [(int(k.co.x), k.interpolation) for fc in curves for k in fc.keyframe_points]
    addon_utils.disable(ADDON, default_set=True)
    return {"status": sorted(status), "y": ys, "keys": sorted(set(keys))}


def main(report_path: str) -> int:
    report = {"blender_version": list(bpy.app.version), "errors": {}}
    bpy.ops.wm.read_factory_settings(use_empty=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, check in (("register", check_register), ("trajectory", lambda: check_trajectory(Path(tmp))),
                            ("ply", lambda: check_ply(Path(tmp))),
                            ("photo_camera", lambda: check_photo_camera(Path(tmp))),
                            ("preset_move", check_preset_move)):
            try:
                report[name] = check()
            except Exception:
                report["errors"][name] = traceback.format_exc()
                if ADDON in bpy.context.preferences.addons:
                    addon_utils.disable(ADDON, default_set=True)
    Path(report_path).write_text(json.dumps(report, indent=1))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
