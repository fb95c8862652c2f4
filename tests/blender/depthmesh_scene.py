"""The Input View as Mesh test scene, shared by tests/blender/test_input_view_mesh.py (bpy 5.0) and
tests/blender45/check_viewport.py (bpy 4.5): a hand-made job folder with a known detail grid (a flat wall at
camera depth 2 and a box at 1.2 in front of it), the result object linked to it, and camera 0 as a scene
camera."""
from __future__ import annotations

import json
from pathlib import Path

import bpy
import numpy as np
from mathutils import Euler, Matrix

from wonderland_blender.housekeeping import RESULT_KEY
from wonderland_blender.plyio import SH_C0, Splats, write_ply
from wonderland_blender.pointcloud import create_object

W, H, F = 24, 16, 20.0                   # detail grid and its focal length in grid pixels
WALL, BOX = 2.0, 1.2                     # camera z of the wall and of the box in front of it
BOX_ROWS, BOX_COLS = slice(4, 11), slice(5, 12)
OFFSET = np.array([0.3, -0.2, 0.5])      # the result object's location: the mesh must follow it

def camera0_c2w() -> np.ndarray:
    """Camera 0 in the OpenCV convention (x right, y down, z forward), looking roughly along +Y."""
    blender = Matrix.Translation((0.5, -3.0, 1.0)) @ Euler((1.4, 0.0, 0.25)).to_matrix().to_4x4()
    return np.array(blender, np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0])


def photo() -> np.ndarray:
    """[H, W, 3] colours (sRGB 0..1): a red/green ramp on the wall, a flat blue box."""
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    rgb = np.stack([0.2 + 0.6 * u / W, 0.2 + 0.6 * v / H, np.full_like(u, 0.3)], axis=-1)
    rgb[BOX_ROWS, BOX_COLS] = (0.15, 0.3, 0.85)
    return rgb


def depth() -> np.ndarray:
    z = np.full((H, W), WALL)
    z[BOX_ROWS, BOX_COLS] = BOX
    return z


def detail_splats() -> Splats:
    """One Gaussian per pixel on its ray at depth(), in the world, row-major top row first (as the backend)."""
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    z = depth()
    cam = np.stack([(u - W / 2) / F * z, (v - H / 2) / F * z, z], axis=-1).reshape(-1, 3)
    c2w = camera0_c2w()
    n = H * W
    return Splats((cam @ c2w[:3, :3].T + c2w[:3, 3]).astype(np.float32),
                  ((photo().reshape(-1, 3) - 0.5) / SH_C0).astype(np.float32), np.zeros((n, 0, 3), np.float32),
                  np.full(n, 5.3, np.float32), np.full((n, 3), -4.0, np.float32),
                  np.tile(np.float32([1, 0, 0, 0]), (n, 1)))


def model_splats(n: int = 7) -> Splats:
    rng = np.random.default_rng(0)
    return Splats(rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32),
                  np.zeros((n, 0, 3), np.float32), np.zeros(n, np.float32), np.full((n, 3), -2.0, np.float32),
                  np.tile(np.float32([1, 0, 0, 0]), (n, 1)))


def write_job(folder: Path, detail: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_ply(folder / "scene.ply", Splats.concatenate([model_splats(), detail_splats()]))
    K = [[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]]
    (folder / "cameras.json").write_text(json.dumps(
        {"width": W, "height": H, "frames": [{"frame": 1, "K": K, "c2w": camera0_c2w().tolist()}]}))
    (folder / "meta.json").write_text(json.dumps({"count": 7 + W * H, "detail": detail}))
    return folder


def make_result(folder: Path):
    """A generated-looking result: the Gaussian object linked to its job folder in `folder`, moved by OFFSET."""
    job = write_job(folder / "20261206-112233", {"size": [W, H], "count": W * H, "culled": 0})
    obj = create_object(bpy.context, "Wonderland 20261206-112233",
                        Splats.concatenate([model_splats(), detail_splats()]))
    obj[RESULT_KEY] = str(job)
    obj.location = OFFSET
    bpy.context.view_layer.update()
    return obj


def make_mesh(obj):
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.wonderland.input_view_mesh() == {'FINISHED'}
    return bpy.data.objects[f"{obj.name} Input View"]


def shoot_from_camera_0(result, world: float):
    """The scene camera at camera 0 (moved with the result), 2W×2H, a grey World of strength `world`,
    Standard view transform; the result's Gaussians out of the render."""
    scene = bpy.context.scene
    result.hide_render = True
    cam = bpy.data.objects.new("Camera 0", bpy.data.cameras.new("Camera 0"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    blender = camera0_c2w() @ np.diag([1.0, -1.0, -1.0, 1.0])
    blender[:3, 3] += OFFSET
    cam.matrix_world = Matrix(blender.tolist())
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 2 * W, 2 * H, 100
    cam.data.sensor_width, cam.data.lens = 36.0, F / W * 36.0
    scene.world = bpy.data.worlds.new("World")
    scene.world.color = (world,) * 3
    for node in scene.world.node_tree.nodes if scene.world.node_tree else []:
        if node.type == 'BACKGROUND':
            node.inputs["Color"].default_value = (world, world, world, 1.0)
            node.inputs["Strength"].default_value = 1.0
    scene.view_settings.view_transform = 'Standard'
    scene.eevee.taa_render_samples = 8
    scene.cycles.samples, scene.cycles.device, scene.cycles.use_denoising = 16, 'CPU', False
    return scene


def photo_pixels() -> tuple[np.ndarray, np.ndarray]:
    """(the photo at the 2W×2H render size, the pixels where a render from camera 0 must show it)."""
    # compare everywhere (up to the frame border: the mesh reaches it) but on the outermost pixels (the pixel
    # filter reaches past the frame, into the World), at the box's rim (where the photo's colours fade from
    # box to wall) and on the wall the box shades (it occludes the World there)
    box = depth() == BOX
    skip = np.zeros((H, W), bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            skip |= np.roll(box, (dr, dc), axis=(0, 1)) != box
    shade = np.zeros((H, W), bool)
    shade[BOX_ROWS.start - 4:BOX_ROWS.stop + 4, BOX_COLS.start - 4:BOX_COLS.stop + 4] = True
    keep = np.repeat(np.repeat(~skip & ~(shade & ~box), 2, axis=0), 2, axis=1)
    keep[[0, -1], :] = keep[:, [0, -1]] = False
    return np.repeat(np.repeat(photo(), 2, axis=0), 2, axis=1), keep
