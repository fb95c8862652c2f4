"""Run INSIDE a Python with the bpy 4.5 wheel: `python check_viewport.py REPORT.json`. On Blender 4.5 (the
add-on's minimum): Input View as Mesh on the depth-mesh test scene (mesh, texture, save and reopen, a Cycles
render from camera 0), and Solid view colours (a Workbench render in Attribute colour mode). Reports what it
saw as JSON for test_viewport45.py."""
from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "blender")]

import bpy  # noqa: E402  first: puts Blender's script modules (addon_utils) on sys.path
import addon_utils  # noqa: E402
import numpy as np  # noqa: E402

import check_report  # noqa: E402
import mixing_scene  # noqa: E402


def render(scene, engine: str, path: Path) -> np.ndarray:
    scene.render.engine = engine
    return mixing_scene.render(path)


def texture(name: str) -> np.ndarray:
    (mat,) = bpy.data.objects[name].data.materials
    (image,) = [n.image for n in mat.node_tree.nodes if n.type == 'TEX_IMAGE']
    pixels = np.empty(image.size[0] * image.size[1] * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(image.size[1], image.size[0], 4)[::-1, :, :3]


def depth_mesh(folder: Path) -> dict:
    import depthmesh_scene as d
    obj = d.make_result(folder)
    mesh_obj = d.make_mesh(obj)
    name, result_name, job = mesh_obj.name, obj.name, Path(obj[d.RESULT_KEY])
    mesh = mesh_obj.data
    co = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.vertices.foreach_get("co", co)
    n = (d.W + 2) * (d.H + 2)
    grid = co.reshape(-1, 3)[:n].reshape(d.H + 2, d.W + 2, 3)[1:-1, 1:-1].reshape(-1, 3)
    in_box = np.concatenate([np.pad(d.depth() == d.BOX, 1).ravel(), np.zeros(len(mesh.vertices) - n, bool)])
    report = {"vertices": len(mesh.vertices), "twins": len(mesh.vertices) - n,
              "grid_error": float(np.abs(grid - (d.detail_splats().means + d.OFFSET)).max()),
              "faces": len(mesh.polygons),
              "faces_across_the_cut": sum(len(set(in_box[list(p.vertices)])) > 1 for p in mesh.polygons),
              "texture_error": float(np.abs(texture(name) - d.photo()).max())}
    bpy.ops.wm.save_as_mainfile(filepath=str(folder / "scene.blend"))
    (job / "scene.ply").unlink()  # the .blend needs nothing of the job folder
    bpy.ops.wm.open_mainfile(filepath=str(folder / "scene.blend"))
    report["texture_error_after_reopen"] = float(np.abs(texture(name) - d.photo()).max())
    scene = d.shoot_from_camera_0(bpy.data.objects[result_name], 1.0)
    rendered = render(scene, 'CYCLES', folder / "cycles.png")[..., :3]
    expected, keep = d.photo_pixels()
    error = np.abs(rendered - expected)[keep]
    report.update(compared=int(keep.sum()), render_mean_error=float(error.mean()), render_max_error=float(error.max()))
    return report


def solid_view(folder: Path) -> dict:
    """A red and a blue opaque Gaussian and a faint wide one (opacity 0.02, σ 0.3) in Workbench's Attribute
    colour mode."""
    from wonderland_blender.plyio import SH_C0, Splats
    from wonderland_blender.pointcloud import create_object
    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable("wonderland_blender", default_set=True, handle_error=None)
    scene = bpy.context.scene
    for name, x, z, srgb, opacity, sigma in (("Red", -0.8, -0.5, (0.9, 0.2, 0.1), 0.95, 0.2),
                                             ("Blue", 0.8, -0.5, (0.1, 0.3, 0.95), 0.95, 0.2),
                                             ("Faint", 0.0, 0.5, (1.0, 1.0, 0.2), 0.02, 0.3)):
        create_object(bpy.context, name, Splats(
            np.float32([[x, 0, z]]), ((np.float32([srgb]) - 0.5) / SH_C0).astype(np.float32),
            np.zeros((1, 0, 3), np.float32), np.float32([math.log(opacity / (1 - opacity))]),
            np.full((1, 3), math.log(sigma), np.float32), np.float32([[1, 0, 0, 0]])))
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    cam.location, cam.rotation_euler = (0.0, -4.0, 0.0), (math.pi / 2, 0.0, 0.0)
    scene.collection.objects.link(cam)
    scene.camera = cam
    scene.render.resolution_x, scene.render.resolution_y = 96, 72
    scene.view_settings.view_transform = 'Standard'
    scene.render.film_transparent = True
    scene.display.shading.light, scene.display.shading.color_type = 'FLAT', 'VERTEX'
    image = render(scene, 'BLENDER_WORKBENCH', folder / "workbench.png")
    px = 4.0 * 36.0 / 50.0 / 96  # metres per pixel at the Gaussians' depth
    row, col = {z: round(36 - z / px) for z in (-0.5, 0.5)}, {x: round(48 + x / px) for x in (-0.8, 0.0, 0.8)}
    r = math.ceil(0.45 / px)  # 1.5σ of the faint one
    return {"red": image[row[-0.5], col[-0.8]].tolist(), "blue": image[row[-0.5], col[0.8]].tolist(),
            "faint_coverage": float(image[row[0.5] - r:row[0.5] + r + 1, col[0.0] - r:col[0.0] + r + 1, 3].sum()),
            "faint_alpha_area": 2 * math.pi * (0.3 / px) ** 2 * 0.02, "faint_ball": math.pi * (0.3 / px) ** 2}


def check(folder: Path, report: dict) -> None:
    report["depth_mesh"] = depth_mesh(folder)
    report["solid_view"] = solid_view(folder)


if __name__ == "__main__":
    sys.exit(check_report.run(sys.argv[1], check))
