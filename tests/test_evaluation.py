"""The quality benchmark's parts (backend/evaluation.py, benchmarks/bench_quality.py) on a scene that is
exactly a textured plane facing camera 0, rendered analytically: there the plane baseline is the truth."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.cameras import CameraBatch, save_cameras
from backend.errors import InputError
from backend.evaluation import (blurred_baseline, evaluate_scene, load_eval_scene, mean_scores, plane_baseline,
                                plane_method, unchanged_baseline)
from backend.render import render
from backend.training.metrics import image_metrics

WIDTH, HEIGHT, FOCAL, DEPTH = 48, 32, 40.0, 3.0
PERIOD = 16 * DEPTH / FOCAL   # texture period on the plane: 16 pixels of camera 0


def rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth colours in [0.1, 0.9] at plane coordinates (x, y) (camera 0's x and y at z = DEPTH)."""
    k = 2 * math.pi / PERIOD
    return 0.5 + 0.4 * np.stack([np.sin(k * x), np.sin(k * y + 1.0), np.sin(k * (x + y) * 0.7 + 2.0)], axis=-1)


def make_plane_scene(folder: Path, frames: int = 4) -> tuple[Path, CameraBatch]:
    """Cameras dollying in along camera 0's axis (camera 0 turned and moved in the world) towards a
    plane at z = DEPTH in camera 0; images, cameras.json and depth/0000.npy in the scene folder format."""
    R0, t0 = rotation_y(0.4), np.array([0.5, -0.2, 1.0])
    K = np.array([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]])
    v, u = np.meshgrid(np.arange(HEIGHT) + 0.5, np.arange(WIDTH) + 0.5, indexing="ij")
    (folder / "frames").mkdir(parents=True)
    c2ws = []
    for i in range(frames):
        forward = 0.03 * i * DEPTH
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = R0, t0 + R0 @ np.array([0.0, 0.0, forward])
        c2ws.append(c2w)
        z = DEPTH - forward                                        # the plane in this camera's frame
        rgb = texture(z * (u - K[0, 2]) / FOCAL, z * (v - K[1, 2]) / FOCAL)
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / "frames" / f"{i:04d}.png")
    cameras = CameraBatch(torch.tensor(np.stack([K] * frames), dtype=torch.float32),
                          torch.tensor(np.stack(c2ws), dtype=torch.float32), WIDTH, HEIGHT, list(range(frames)))
    save_cameras(cameras, folder / "cameras.json")
    (folder / "depth").mkdir()
    np.save(folder / "depth" / "0000.npy", np.full((HEIGHT, WIDTH), DEPTH, dtype=np.float32))
    return folder, cameras


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    to = lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None]  # noqa: E731
    return image_metrics(to(a), to(b))["psnr"]


def test_the_plane_baselines_median_depth_leaves_out_the_sky(tmp_path):
    folder, _ = make_plane_scene(tmp_path / "open")
    depth = np.full((HEIGHT, WIDTH), 1e10, dtype=np.float32)     # Cycles' depth where a ray hits nothing
    depth[: HEIGHT // 3] = DEPTH                                  # a third of the frame shows a surface
    depth[-1, -1] = 0.0
    np.save(folder / "depth" / "0000.npy", depth)
    assert load_eval_scene(folder).median_depth == DEPTH


def test_plane_baseline_sits_on_the_plane_and_renders_the_input_image(tmp_path):
    folder, cameras = make_plane_scene(tmp_path / "plane")
    scene = load_eval_scene(folder)
    assert scene.median_depth == DEPTH
    image = scene.image(0)
    g = plane_baseline(image, cameras[0], DEPTH)
    assert len(g) == WIDTH * HEIGHT
    local = (g.means.double() - cameras.c2w[0, :3, 3].double()) @ cameras.c2w[0, :3, :3].double()
    assert torch.allclose(local[:, 2], torch.full_like(local[:, 2], DEPTH), atol=1e-5)
    uv = local[:, :2] / local[:, 2:] * FOCAL + torch.tensor([WIDTH / 2, HEIGHT / 2], dtype=torch.float64)
    assert torch.allclose(uv[0], torch.tensor([0.5, 0.5], dtype=torch.float64), atol=1e-5)  # pixel centres
    assert torch.allclose(uv[-1], torch.tensor([WIDTH - 0.5, HEIGHT - 0.5], dtype=torch.float64), atol=1e-5)
    rendered = render(g, cameras[0]).rgb[0].clamp(0, 1).numpy()
    assert psnr(rendered, image) > 30
    with pytest.raises(InputError, match="depth > 0"):
        plane_baseline(image, cameras[0], 0.0)


def test_on_a_plane_scene_the_plane_baseline_is_near_perfect_and_unchanged_is_not(tmp_path):
    folder, _ = make_plane_scene(tmp_path / "plane")
    plane = evaluate_scene(folder, plane_method)
    unchanged = evaluate_scene(folder, unchanged_baseline)
    assert len(plane.novel) == 3 and plane.beyond == []
    assert plane.input["psnr"] > 30 and mean_scores(plane.novel)["psnr"] > 26
    assert mean_scores(plane.novel)["ssim"] > 0.95
    assert math.isinf(unchanged.input["psnr"]) and unchanged.input["ssim"] == pytest.approx(1.0)
    assert mean_scores(unchanged.novel)["psnr"] < mean_scores(plane.novel)["psnr"] - 4
    assert mean_scores(unchanged.novel)["ssim"] < mean_scores(plane.novel)["ssim"] - 0.05


def test_scores_per_view_split_into_input_novel_and_beyond(tmp_path):
    folder, _ = make_plane_scene(tmp_path / "plane", frames=5)
    scene = load_eval_scene(folder)
    truth = np.stack([scene.image(i) for i in range(5)])
    offset = evaluate_scene(scene, lambda image, cameras, s: truth + 0.05, clip_frames=3)  # MSE 0.0025
    assert (len(offset.novel), len(offset.beyond)) == (2, 2)
    for view in [offset.input, *offset.novel, *offset.beyond]:
        assert view["psnr"] == pytest.approx(10 * math.log10(1 / 0.0025), abs=1e-3)
    seen = []
    evaluate_scene(scene, lambda image, cameras, s: seen.append((image, len(cameras))) or truth, clip_frames=3)
    assert seen[0][1] == 3 and np.array_equal(seen[0][0], truth[0])
    assert math.isnan(mean_scores([])["psnr"])
    with pytest.raises(InputError, match="clip_frames = 6"):
        evaluate_scene(scene, unchanged_baseline, clip_frames=6)
    with pytest.raises(ValueError, match="expected"):
        evaluate_scene(scene, lambda image, cameras, s: truth[:2])


def test_a_scene_without_depth_says_how_to_get_it(tmp_path):
    folder, _ = make_plane_scene(tmp_path / "plane")
    (folder / "depth" / "0000.npy").unlink()
    with pytest.raises(InputError, match="depth/0000.npy") as e:
        load_eval_scene(folder)
    assert "synthetic_scenes.py" in e.value.hint


def test_blurred_baseline_keeps_the_colours_and_removes_the_detail(tmp_path):
    folder, _ = make_plane_scene(tmp_path / "scene", frames=3)
    scene = load_eval_scene(folder)
    image = scene.image(0)
    views = blurred_baseline(image, scene.cameras, scene)
    assert views.shape == (3, *image.shape) and np.array_equal(views[0], views[2])
    assert abs(float(views[0].mean()) - float(image.mean())) < 0.02          # same colours on average
    assert horizontal_detail(views[0]) < 0.5 * horizontal_detail(image)     # much less detail
    assert math.isfinite(evaluate_scene(scene, blurred_baseline).input["psnr"])  # a yardstick, not a copy


def horizontal_detail(image: np.ndarray) -> float:
    return float(np.abs(np.diff(image, axis=1)).mean())


def test_bench_quality_end_to_end_with_random_tiny_model(tmp_path, capsys, bench_quality):
    make_plane_scene(tmp_path / "data" / "scene_0000001", frames=9)
    data = str(tmp_path / "data")
    assert bench_quality.main(["--data", data, "--model", "tiny", "--steps", "2", "--levers", "--known-distance",
                               "--data-4x", data]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out and "Device:" in out
    main_table, rest = out.split("Frame-0 depth rendered")
    depth_table, large_table = rest.split("Input view at ")
    depth = {line.split("|")[1].strip(): [float(c) for c in line.split("|")[2:4]] for line in depth_table.splitlines()
             if line.startswith("| ") and not line.startswith("| method")}
    assert set(depth) == {bench_quality.FULL, bench_quality.DETAIL_OFF, "LaLRM on ground-truth latents (upper bound)",
                          "plane baseline", bench_quality.KNOWN,
                          *(f"full pipeline, {lever}" for lever in bench_quality.SPEED_LEVERS)}
    assert depth["plane baseline"][0] < 0.01 and depth["plane baseline"][1] > 0.99   # the plane sits at the truth
    # told the plane's true distance, even the random model's depth lands on it (its own is off by 2x)
    assert depth[bench_quality.KNOWN][0] < 0.15 < depth[bench_quality.FULL][0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in main_table.splitlines() if line.startswith("| ") and not line.startswith("| method")}
    assert len(rows) == 7 + len(bench_quality.SPEED_LEVERS)
    for lever in bench_quality.SPEED_LEVERS:
        assert float(rows[f"full pipeline, {lever}"][0]) > 0
    plane, unchanged = rows["plane baseline"], rows["unchanged baseline"]
    assert float(plane[0]) > 24 and float(plane[0]) > float(unchanged[0]) + 6
    assert float(plane[2]) > float(plane[0])                                   # near views: the plane holds up
    assert plane[5].startswith("+0.00 dB") and unchanged[4] == "∞"
    delta = float(re.match(r"([+-][\d.]+) dB", unchanged[5]).group(1))
    assert delta == pytest.approx(float(unchanged[0]) - float(plane[0]), abs=0.011)
    for name, cells in rows.items():
        assert math.isfinite(float(cells[0])) and 0 < float(cells[1]) <= 1, name
    # the input view at the 4x scenes' size (here the same scene): the detail layer lifts the photo itself
    large = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in large_table.splitlines()
             if line.startswith("| ") and not line.startswith("| method")}
    assert set(large) == {bench_quality.FULL, bench_quality.DETAIL_OFF, "plane baseline"}
    assert large[bench_quality.FULL] > large[bench_quality.DETAIL_OFF] + 3, large
