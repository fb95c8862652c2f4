"""The "Wonderland Gaussians" render engine in the real bpy, against the backend renderer in its own process."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

from wonderland_blender import ops_io, render_engine
from wonderland_blender.plyio import Splats, write_ply
from wonderland_blender.trajectory import camera_trajectory, write_cameras_json

ROOT = Path(__file__).resolve().parents[2]
W, H = 80, 60
OFFSET = np.array([0.0, 0.0, 0.3], np.float32)  # the object's location, applied by the engine

REFERENCE = """
import sys, numpy as np, torch
from backend.cameras import load_cameras
from backend.ply import read_ply
from backend.render import render
g, _ = read_ply(sys.argv[1])
with torch.no_grad():
    r = render(g, load_cameras(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
np.savez(sys.argv[5], rgb=r.rgb[0].numpy(), alpha=r.alpha[0, ..., 0].numpy(), depth=r.depth[0, ..., 0].numpy())
"""


@pytest.fixture(scope="module", autouse=True)
def engine_registered():
    ops_io.register()
    render_engine.register()
    yield
    render_engine.unregister()
    ops_io.unregister()


@pytest.fixture
def splat_scene(tmp_path):
    """Gaussians (SH degree 1) imported and moved by OFFSET, a shifted camera at 80×60 looking at them.
    Returns the PLY of the Gaussians in world space and the scene's cameras.json."""
    rng = np.random.default_rng(3)
    n = 400
    means = rng.uniform([-1.2, -0.5, -0.8], [1.2, 0.5, 0.8], (n, 3)).astype(np.float32)
    src = Splats(means, rng.normal(0, 1, (n, 3)).astype(np.float32), rng.normal(0, 0.3, (n, 3, 3)).astype(np.float32),
                 rng.normal(1, 1, n).astype(np.float32), np.log(rng.uniform(0.03, 0.12, (n, 3))).astype(np.float32),
                 rng.normal(size=(n, 4)).astype(np.float32))
    write_ply(tmp_path / "local.ply", src)
    assert bpy.ops.wonderland.import_gaussians(filepath=str(tmp_path / "local.ply")) == {'FINISHED'}
    bpy.context.active_object.location = OFFSET
    world = Splats(src.means + OFFSET, src.f_dc, src.f_rest, src.opacity_logits, src.log_scales, src.quats)
    write_ply(tmp_path / "world.ply", world)

    scene = bpy.context.scene
    scene.render.engine = render_engine.ENGINE_ID
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 2 * W, 2 * H, 50
    scene.render.film_transparent = True
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    cam.location, cam.rotation_euler = (0.4, -5.0, 0.6), (math.radians(95), 0.0, math.radians(4))
    cam.data.lens, cam.data.shift_x, cam.data.shift_y = 40.0, 0.05, -0.04
    scene.collection.objects.link(cam)
    scene.camera = cam
    write_cameras_json(camera_trajectory(scene, cam, scene.frame_current, scene.frame_current),
                       str(tmp_path / "cameras.json"))
    return tmp_path / "world.ply", tmp_path / "cameras.json"


def reference_render(ply: Path, cameras: Path, out: Path) -> dict:
    """backend.render.render in the backend's own process, as `python -m backend render` does it."""
    subprocess.run([sys.executable, "-c", REFERENCE, str(ply), str(cameras), str(W), str(H), str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    return dict(np.load(out))


def linear_premultiplied_to_display(rgba: np.ndarray) -> np.ndarray:
    """Inverse of the engine's conversion: scene-linear premultiplied → display colour over black."""
    a = rgba[..., 3:]
    straight = np.divide(rgba[..., :3], a, out=np.zeros_like(rgba[..., :3]), where=a > 1e-6)
    srgb = np.where(straight <= 0.0031308, straight * 12.92, 1.055 * np.power(straight, 1 / 2.4) - 0.055)
    return srgb * a


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


def test_f12_matches_the_backend_renderer(splat_scene, tmp_path):
    ply, cameras = splat_scene
    scene = bpy.context.scene
    scene.view_layers[0].use_pass_z = True
    scene.render.image_settings.file_format = 'OPEN_EXR'
    scene.render.image_settings.color_depth = '32'
    scene.render.filepath = str(tmp_path / "f12.exr")
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(tmp_path / "f12.exr"))
    assert tuple(image.size) == (W, H)
    pixels = np.empty(W * H * 4, np.float32)
    image.pixels.foreach_get(pixels)
    ours = pixels.reshape(H, W, 4)[::-1]  # Blender images are stored bottom row first
    ref = reference_render(ply, cameras, tmp_path / "ref.npz")
    assert ref["alpha"].mean() > 0.2  # the Gaussians fill a good part of the frame
    display = linear_premultiplied_to_display(ours)
    assert psnr(display, ref["rgb"]) >= 40.0
    assert np.abs(ours[..., 3] - ref["alpha"]).max() < 1e-4
    assert np.abs(display - ref["rgb"]).max() < 5e-3


def test_depth_and_alpha_arrays_match(splat_scene, tmp_path):
    ply, cameras = splat_scene
    depsgraph = bpy.context.evaluated_depsgraph_get()
    rgba, depth = render_engine.render_arrays(depsgraph, W, H)
    ref = reference_render(ply, cameras, tmp_path / "ref.npz")
    seen = ref["alpha"] > 0
    np.testing.assert_allclose(depth[seen], ref["depth"][seen], rtol=1e-4)
    assert np.all(depth[~seen] == render_engine.EMPTY_DEPTH)
    assert 4.0 < np.median(depth[ref["alpha"] > 0.5]) < 6.5  # the cloud sits about 5 units away


def test_worker_survives_frames_restarts_and_skips_cancelled_answers(splat_scene):
    depsgraph = bpy.context.evaluated_depsgraph_get()
    first, _ = render_engine.render_arrays(depsgraph, W, H)
    worker = render_engine._worker
    assert render_engine.render_arrays(depsgraph, W, H, should_stop=lambda: True) is None  # cancelled
    again, _ = render_engine.render_arrays(depsgraph, W, H)  # the stale answer is skipped by its id
    assert render_engine._worker is worker and worker.alive()
    np.testing.assert_array_equal(again, first)
    worker.proc.kill()
    worker.proc.wait()
    restarted, _ = render_engine.render_arrays(depsgraph, W, H)
    assert render_engine._worker is not worker and render_engine._worker.alive()
    np.testing.assert_array_equal(restarted, first)


def test_empty_scene_and_missing_camera(tmp_path):
    scene = bpy.context.scene
    scene.render.engine = render_engine.ENGINE_ID
    rgba, depth = render_engine.render_arrays(bpy.context.evaluated_depsgraph_get(), 8, 6)
    assert not rgba.any() and np.all(depth == render_engine.EMPTY_DEPTH)
    write_ply(tmp_path / "one.ply", Splats(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32),
                                           np.zeros((1, 0, 3), np.float32), np.zeros(1, np.float32),
                                           np.zeros((1, 3), np.float32), np.array([[1, 0, 0, 0]], np.float32)))
    bpy.ops.wonderland.import_gaussians(filepath=str(tmp_path / "one.ply"))
    with pytest.raises(render_engine.RenderError, match="no camera"):
        render_engine.render_arrays(bpy.context.evaluated_depsgraph_get(), 8, 6)
