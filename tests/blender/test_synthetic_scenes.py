"""The synthetic scene generator (tools/synthetic_scenes.py) in the real bpy: folder format, cameras that
match what was rendered, determinism per seed, disjoint splits, resumable runs. Tiny renders only."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import synthetic_scenes as gen  # noqa: E402

from wonderland_blender.trajectory import camera_trajectory  # noqa: E402

pytestmark = pytest.mark.blender
TINY = dict(width=48, height=32, frames=5, samples=2, threads=2, version=1)  # the primitive rooms


def png_bytes(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((folder / "frames").glob("*.png"))]


def assert_same_frames(a: Path, b: Path) -> None:
    """Denoised frames of one seed: equal but for rare pixels one 8-bit level apart (OpenImageDenoise)."""
    for x, y in zip(sorted((a / "frames").glob("*.png")), sorted((b / "frames").glob("*.png")), strict=True):
        diff = np.abs(np.asarray(Image.open(x), dtype=np.int16) - np.asarray(Image.open(y), dtype=np.int16))
        assert diff.max() <= 1 and (diff > 0).any(axis=-1).mean() < 0.005, f"{x.name}: {diff.max()}"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Seed 3 rendered twice into separate folders, seed 4 once, and seed 3 twice without the denoiser."""
    a, b, c, d = (tmp_path_factory.mktemp(name) for name in "abcd")
    assert gen.render_scene(a, 3, "train", **TINY)
    assert gen.render_scene(b, 3, "train", **TINY)
    assert gen.render_scene(b, 4, "train", **TINY)
    assert gen.render_scene(c, 3, "train", **TINY, denoise=False)
    assert gen.render_scene(d, 3, "train", **TINY, denoise=False)
    return a / "scene_0000003", b / "scene_0000003", b / "scene_0000004", c / "scene_0000003", d / "scene_0000003"


def test_scene_folder_format(rendered):
    scene = rendered[0]
    assert sorted(p.name for p in scene.iterdir()) == ["cameras.json", "depth", "frames", "scene.json"]
    assert sorted(p.name for p in (scene / "frames").iterdir()) == [f"{i:04d}.png" for i in range(5)]
    assert sorted(p.name for p in (scene / "depth").iterdir()) == [f"{i:04d}.npy" for i in range(5)]
    depth = np.load(scene / "depth" / "0000.npy")
    assert depth.dtype == np.float32 and depth.shape == (32, 48)
    assert np.isfinite(depth).all() and 0.05 < depth.min() and depth.max() < 30  # inside a closed room
    for path in (scene / "frames").iterdir():
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (48, 32))
            pixels = np.asarray(img, dtype=np.float64)
        assert 20 < pixels.mean() < 235, f"{path.name} is too dark or blown out: mean {pixels.mean():.1f}"
        assert pixels.std() > 5, f"{path.name} is flat"
    info = json.loads((scene / "scene.json").read_text())
    assert (info["seed"], info["split"], info["seed_rule"]) == (3, "train", gen.SEED_RULE)
    assert info["camera"]["move"] in ("walk", "orbit", "pan", "crane", "truck", "dolly_in", "dolly_out")

    cameras = json.loads((scene / "cameras.json").read_text())
    assert [f["frame"] for f in cameras["frames"]] == list(range(5))
    room = info["room"]
    for f in cameras["frames"]:  # every camera inside the room, clear of the walls, floor and ceiling
        x, y, z = np.array(f["c2w"])[:3, 3]
        assert abs(x) < room["width"] / 2 - 0.3 and abs(y) < room["depth"] / 2 - 0.3
        assert 0.3 < z < room["height"] - 0.3

    # the backend's own reader accepts it (a child process: torch is not loaded into Blender's process)
    code = ("import sys; from backend.cameras import load_cameras; b = load_cameras(sys.argv[1]); "
            "print(len(b), b.width, b.height, b.frames)")
    out = subprocess.run([sys.executable, "-c", code, str(scene / "cameras.json")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == ["5", "48", "32"]


def test_same_seed_same_images_other_seed_differs(rendered):
    a, again, other, raw, raw_again = rendered
    assert png_bytes(raw) == png_bytes(raw_again)  # bitwise without the denoiser
    assert_same_frames(a, again)
    assert json.loads((raw / "scene.json").read_text())["denoise"] is False
    assert (a / "cameras.json").read_bytes() == (raw / "cameras.json").read_bytes()
    assert (a / "cameras.json").read_bytes() == (again / "cameras.json").read_bytes()
    assert (a / "scene.json").read_bytes() == (again / "scene.json").read_bytes()
    first = np.asarray(Image.open(a / "frames" / "0000.png"), dtype=np.int16)
    differ = np.asarray(Image.open(other / "frames" / "0000.png"), dtype=np.int16)
    assert np.abs(first - differ).mean() > 10
    assert json.loads((a / "cameras.json").read_text()) != json.loads((other / "cameras.json").read_text())


def test_projection_matches_the_render(tmp_path):
    """A red lamp added between the first camera and what it looks at shows up, in every frame where a ray
    from the camera reaches it, at the pixel cameras.json projects it to (and Blender agrees)."""
    built = gen.build_scene(5, width=64, height=48, frames=5, samples=2, threads=2, version=1)
    scene, cam = built.scene, built.camera
    scene.frame_set(0)
    start = np.array(cam.matrix_world.translation)
    centre = start + 0.5 * (np.array(built.recipe["camera"]["target"]) - start)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.12, location=centre.tolist())
    lamp = bpy.context.object
    red = bpy.data.materials.new("Red")
    nodes = red.node_tree.nodes
    nodes.remove(nodes["Principled BSDF"])
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Color"].default_value = (1.0, 0.0, 0.0, 1.0)
    emission.inputs["Strength"].default_value = 2.0
    red.node_tree.links.new(emission.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
    lamp.data.materials.append(red)

    gen.write_scene(built, tmp_path, {})
    cameras = json.loads((tmp_path / "cameras.json").read_text())
    assert cameras == camera_trajectory(scene, cam, 0, 4)
    checked = 0
    for i, f in enumerate(cameras["frames"]):
        K, c2w = np.array(f["K"]), np.array(f["c2w"])
        cam_point = np.linalg.inv(c2w) @ np.array([*centre, 1.0])
        u, v = (K @ cam_point[:3])[:2] / cam_point[2]
        scene.frame_set(f["frame"])
        ndc = world_to_camera_view(scene, cam, Vector(centre))
        assert abs(ndc.x * 64 - u) < 0.01 and abs((1 - ndc.y) * 48 - v) < 0.01
        origin = Vector(c2w[:3, 3])
        hit, _, _, _, obj, _ = scene.ray_cast(bpy.context.evaluated_depsgraph_get(), origin,
                                              (Vector(centre) - origin).normalized())
        if not (hit and obj == lamp and 2 <= u < 62 and 2 <= v < 46):
            continue
        r, g, b = np.asarray(Image.open(tmp_path / "frames" / f"{i:04d}.png"), dtype=np.int16)[int(v), int(u)]
        assert r > g + 50 and r > b + 50, f"frame {i}: pixel ({u:.1f}, {v:.1f}) is {(r, g, b)}, not the red lamp"
        checked += 1
    assert checked >= 3


def test_depth_is_camera_z_of_the_surface_seen(tmp_path):
    """depth/NNNN.npy holds camera z (along the view axis, not the ray length) of what each pixel sees: a
    sphere placed in front of the first camera, and the room around it found by ray casts."""
    width, height = 64, 48
    built = gen.build_scene(5, width=width, height=height, frames=3, samples=2, threads=2, version=1)
    scene, cam = built.scene, built.camera
    scene.frame_set(0)
    start = np.array(cam.matrix_world.translation)
    centre = start + 0.5 * (np.array(built.recipe["camera"]["target"]) - start)
    radius = 0.25
    bpy.ops.mesh.primitive_uv_sphere_add(radius=radius, location=centre.tolist(), segments=64, ring_count=32)
    gen.write_scene(built, tmp_path, {})
    cameras = json.loads((tmp_path / "cameras.json").read_text())
    depth = np.load(tmp_path / "depth" / "0000.npy")
    K, c2w = np.array(cameras["frames"][0]["K"]), np.array(cameras["frames"][0]["c2w"])
    w2c = np.linalg.inv(c2w)

    c = (w2c @ np.array([*centre, 1.0]))[:3]
    u, v = (K @ c)[:2] / c[2]
    ray = np.linalg.inv(K) @ np.array([int(u) + 0.5, int(v) + 0.5, 1.0])   # through that pixel's centre
    ray /= np.linalg.norm(ray)
    b = ray @ c
    hit = ray * (b - np.sqrt(b * b - (c @ c - radius ** 2)))                # near side of the sphere
    assert depth[int(v), int(u)] == pytest.approx(hit[2], rel=0.01)

    checked, off_axis = 0, 0
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for y in range(2, height - 2, 4):
        for x in range(2, width - 2, 4):
            d_cam = np.linalg.inv(K) @ np.array([x + 0.5, y + 0.5, 1.0])
            d_world = c2w[:3, :3] @ d_cam
            found, location, *_ = scene.ray_cast(depsgraph, Vector(c2w[:3, 3]), Vector(d_world).normalized())
            patch = depth[y - 1:y + 2, x - 1:x + 2]
            if not found or patch.max() - patch.min() > 0.02 * patch.mean():  # skip silhouettes
                continue
            z = (w2c @ np.array([*location, 1.0]))[2]
            assert depth[y, x] == pytest.approx(z, rel=0.01), f"pixel ({x}, {y})"
            off_axis += np.linalg.norm(d_cam) > 1.02   # there the ray length is > 2% longer than z
            checked += 1
    assert checked > 40 and off_axis > 10, (checked, off_axis)


def test_resume_skips_complete_scenes_and_redoes_broken_ones(rendered, tmp_path):
    scene = rendered[1]
    out = scene.parent
    stamps = {p: p.stat().st_mtime_ns for p in (scene / "frames").iterdir()}
    (out / ".scene_0000003.tmp-999999").mkdir()  # what a killed run leaves behind
    assert gen.render_scene(out, 3, "train", **TINY) is False
    assert {p: p.stat().st_mtime_ns for p in (scene / "frames").iterdir()} == stamps
    assert not (out / ".scene_0000003.tmp-999999").exists()

    broken = tmp_path / "scene_0000003"
    broken.mkdir()
    (broken / "cameras.json").write_bytes((scene / "cameras.json").read_bytes())  # frames missing
    assert gen.render_scene(tmp_path, 3, "train", **TINY) is True
    assert_same_frames(broken, scene)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene_0000003"]  # no temporary folder left

    with pytest.raises(ValueError, match="5 frames at 48x32, not 5 at 64x32"):
        gen.render_scene(out, 3, "train", **{**TINY, "width": 64})


def test_a_move_planned_longer_than_rendered_keeps_the_planned_scenes_first_frames(rendered, tmp_path):
    """--frames 2 --plan-frames 5 renders the 5-frame scene's first two frames: its first camera sits where the
    whole move fits (a lone camera's would not; the depth prior's training frames need the placement the move
    gives)."""
    full = rendered[0]
    assert gen.render_scene(tmp_path, 3, "train", **{**TINY, "frames": 2}, plan_frames=5)
    short = tmp_path / "scene_0000003"
    cameras = json.loads((short / "cameras.json").read_text())["frames"]
    assert cameras == json.loads((full / "cameras.json").read_text())["frames"][:2]
    for name in ("0000.png", "0001.png"):
        a = np.asarray(Image.open(short / "frames" / name), dtype=np.int16)
        b = np.asarray(Image.open(full / "frames" / name), dtype=np.int16)
        assert np.abs(a - b).max() <= 1, name                      # the denoiser's rare level apart
    assert np.array_equal(np.load(short / "depth" / "0000.npy"), np.load(full / "depth" / "0000.npy"))
    info = json.loads((short / "scene.json").read_text())
    assert (info["frames"], info["plan_frames"]) == (2, 5)
    assert info["camera"] == json.loads((full / "scene.json").read_text())["camera"]   # the same move's recipe
    with pytest.raises(ValueError, match="--plan-frames 1 is fewer than --frames 5"):
        gen.render_scene(tmp_path / "x", 4, "train", **TINY, plan_frames=1)


def test_splits_are_disjoint_and_bad_arguments_say_why(capsys):
    train, test = gen.scene_seeds("train", 0, 1000), gen.scene_seeds("test", 0, 1000)
    assert set(train).isdisjoint(test) and min(test) == gen.TEST_SEED_START
    assert gen.scene_seeds("test", 5, 2) == range(gen.TEST_SEED_START + 5, gen.TEST_SEED_START + 7)
    with pytest.raises(ValueError, match="reach the test range"):
        gen.scene_seeds("train", gen.TEST_SEED_START - 1, 2)
    with pytest.raises(SystemExit):
        gen.main(["--out", "x", "--count", "1", "--size", "96by64"])
    assert "size must be WIDTHxHEIGHT" in capsys.readouterr().err
