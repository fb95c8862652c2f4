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
SCALE = 1.3  # the Gaussian object's uniform scale

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
    """Gaussians (SH degree 2) imported, then moved, turned and scaled by their object; a shifted camera at
    80×60 looking at them. Returns the untransformed PLY and a cameras.json that sees it as the scene
    camera sees the transformed object (camera moved by the object's inverse transform), so the backend
    renders the file's own values: an independent check of how the engine transforms positions,
    rotations, scales and SH colours, and of the camera."""
    rng = np.random.default_rng(3)
    n = 400
    means = rng.uniform([-1.2, -0.5, -0.8], [1.2, 0.5, 0.8], (n, 3)).astype(np.float32)
    src = Splats(means, rng.normal(0, 1, (n, 3)).astype(np.float32), rng.normal(0, 0.3, (n, 8, 3)).astype(np.float32),
                 rng.normal(1, 1, n).astype(np.float32), np.log(rng.uniform(0.03, 0.12, (n, 3))).astype(np.float32),
                 rng.normal(size=(n, 4)).astype(np.float32))
    write_ply(tmp_path / "local.ply", src)
    assert bpy.ops.wonderland.import_gaussians(filepath=str(tmp_path / "local.ply")) == {'FINISHED'}
    obj = bpy.context.active_object
    obj.location, obj.rotation_euler, obj.scale = (0.2, 0.3, 0.1), (0.2, -0.3, 0.5), (SCALE, SCALE, SCALE)

    scene = bpy.context.scene
    scene.render.engine = render_engine.ENGINE_ID
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 2 * W, 2 * H, 50
    scene.render.film_transparent = True
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    cam.location, cam.rotation_euler = (0.4, -5.0, 0.6), (math.radians(95), 0.0, math.radians(4))
    cam.data.lens, cam.data.shift_x, cam.data.shift_y = 40.0, 0.05, -0.04
    scene.collection.objects.link(cam)
    scene.camera = cam
    bpy.context.view_layer.update()
    cameras = camera_trajectory(scene, cam, scene.frame_current, scene.frame_current)
    c2w = np.linalg.inv(np.array(obj.matrix_world)) @ np.array(cameras["frames"][0]["c2w"])
    c2w[:3, :3] *= SCALE  # the object's inverse shrinks the camera axes by 1/SCALE
    cameras["frames"][0]["c2w"] = c2w.tolist()
    write_cameras_json(cameras, str(tmp_path / "cameras.json"))
    return tmp_path / "local.ply", tmp_path / "cameras.json"


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


def test_f12_matches_the_backend_renderer_with_depth(splat_scene, tmp_path):
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
    # The Depth pass holds the expected camera z (the object's scale makes it SCALE × the reference's).
    _, depth = render_engine.render_arrays(bpy.context.evaluated_depsgraph_get(), W, H)
    seen = ref["alpha"] > 0
    np.testing.assert_allclose(depth[seen], SCALE * ref["depth"][seen], rtol=1e-4)
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


def test_worker_answers_bad_requests_and_keeps_going(tmp_path):
    worker = render_engine._get_worker()
    missing = worker.request({"ply": str(tmp_path / "absent.ply"), "cameras": str(tmp_path / "c.json"),
                              "width": 4, "height": 4, "out": str(tmp_path)}, lambda: False)
    assert missing["ok"] is False and "does not exist" in missing["error"]
    incomplete = worker.request({"ply": "x.ply"}, lambda: False)
    assert incomplete == {"id": incomplete["id"], "ok": False, "error": "request lacks 'cameras'"}
    assert render_engine._worker is worker and worker.alive()


def test_the_idle_timer_leaves_a_worker_just_handed_to_a_render():
    worker = render_engine._get_worker()  # a render thread holds it and is about to send its request
    assert not render_engine.close_idle_worker(max_idle=0.0)
    assert render_engine._worker is worker and worker.alive()
    assert worker.request({"ply": "x.ply"}, lambda: False)["ok"] is False
    assert render_engine.close_idle_worker(max_idle=0.0)  # answered: idle now
    assert render_engine._worker is None and not worker.alive()


def test_a_request_to_a_closed_worker_says_it_exited():
    worker = render_engine._get_worker()
    worker.request({"ply": "x.ply"}, lambda: False)
    assert render_engine.close_idle_worker(max_idle=0.0)
    with pytest.raises(render_engine.RenderError, match="the backend render worker exited"):
        worker.request({"ply": "x.ply"}, lambda: False)


def test_render_animation_reuses_the_worker(splat_scene, tmp_path):
    scene = bpy.context.scene
    cam = scene.camera
    scene.frame_start, scene.frame_end = 1, 2
    for frame, x in ((1, 0.4), (2, 0.9)):
        cam.location.x = x
        cam.keyframe_insert("location", frame=frame)
    render_engine.render_arrays(bpy.context.evaluated_depsgraph_get(), W, H)  # make sure a worker runs
    worker = render_engine._worker
    scene.render.image_settings.file_format = 'OPEN_EXR'
    scene.render.filepath = str(tmp_path / "frame_")
    bpy.ops.render.render(animation=True)
    frames = []
    for f in (1, 2):
        image = bpy.data.images.load(str(tmp_path / f"frame_{f:04d}.exr"))
        pixels = np.empty(W * H * 4, np.float32)
        image.pixels.foreach_get(pixels)
        frames.append(pixels)
    assert render_engine._worker is worker  # one worker across the engines Blender made per frame
    assert frames[0][3::4].mean() > 0.2 and np.abs(frames[0] - frames[1]).mean() > 1e-3  # the camera moved


def test_engine_shows_its_settings_panels():
    assert render_engine.ENGINE_ID in bpy.types.DATA_PT_lens.COMPAT_ENGINES
    assert render_engine.ENGINE_ID in bpy.types.RENDER_PT_format.COMPAT_ENGINES
    assert render_engine.ENGINE_ID not in bpy.types.DATA_PT_EEVEE_light.COMPAT_ENGINES


def test_empty_scene_and_bad_cameras(tmp_path):
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
    cam = bpy.data.objects.new("Ortho", bpy.data.cameras.new("Ortho"))
    cam.data.type = 'ORTHO'
    scene.collection.objects.link(cam)
    scene.camera = cam
    with pytest.raises(RuntimeError, match="camera 'Ortho' is ortho.*set its Type to Perspective"):
        bpy.ops.render.render()  # F12 fails with the engine's message
