"""The shipped default model (backend/weights/default): what it is made of, that `--model` falls back to
it, and that it does what its model card claims on held-out synthetic scenes it never saw."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.cameras import load_cameras
from backend.images import load_rgb
from backend.models.config import ModelConfig
from backend.models.video import CameraControlledTransformer
from backend.pipelines.wonderland import DEFAULT_MODEL, SHIPPED_DIR, generate, load_pipeline, model_inputs
from backend.training.metrics import image_metrics
from test_backend_generate import write_job  # tests/ is on the path, as for camera_geometry

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = SHIPPED_DIR / DEFAULT_MODEL
BUDGET_BYTES = 50 * 1024 * 1024
HELD_OUT = (16, 4)   # test-split seeds 1,000,016..19: never in training (among the card's validation scenes)


def test_shipped_files_are_safetensors_json_and_the_card_within_budget():
    files = [p for p in DEFAULT_DIR.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".md", ".png"}, files
    assert len(weights) >= 3                              # VAE, video transformer + branches, LaLRM
    assert sum(p.stat().st_size for p in weights) <= BUDGET_BYTES
    card = (DEFAULT_DIR / "MODEL_CARD.md").read_text()
    for must in ("train-vae", "train-video", "train-lrm", "seed", "LPIPS", "PSNR"):
        assert must in card, must
    for curve in ("vae", "video", "lrm"):
        assert (DEFAULT_DIR / "curves" / f"{curve}.png").is_file()


def test_default_loads_the_trained_small_model():
    pipe = load_pipeline(DEFAULT_MODEL)
    assert not pipe.random_weights and pipe.source == str(DEFAULT_DIR)
    small = ModelConfig.small()
    assert (pipe.config.video, pipe.config.lalrm) == (small.video, small.lalrm)
    # trained, not initialised: every camera path starts as exact zeros (models/video.py) and has moved
    fresh = CameraControlledTransformer(small.video).camera_state_dict()
    zero_init = [k for k, v in fresh.items() if not v.any()]
    trained = pipe.transformer.camera_state_dict()
    assert len(zero_init) >= 4 and all(trained[k].any() for k in zero_init)
    # its depth prior is trained too: the head starts at zero weights (models/depth_prior.py)
    assert pipe.config.scene_scale == "metric" and pipe.depth_prior is not None and pipe.depth_prior.head.weight.any()


def test_generate_without_model_uses_the_default(tmp_path, run_backend):
    image, cameras = write_job(tmp_path)
    out = tmp_path / "out"
    result = run_backend("generate", "--image", image, "--cameras", cameras, "--out", out)
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["model"], meta["model_source"], meta["random_weights"]) == (DEFAULT_MODEL, str(DEFAULT_DIR), False)
    assert "random weights" not in result.stderr
    assert meta["depth_prior"]["detail_weight"] == 0.25 and 0.1 < meta["depth_prior"]["scale"] < 10
    assert meta["depth_prior"]["shape_sigma"] == 0.042


@pytest.fixture(scope="module")
def held_out_scenes(tmp_path_factory):
    """Test-split scenes rendered by the real generator (bpy wheel, Cycles on the CPU), 9 frames like the
    training data and the model card's table."""
    out = tmp_path_factory.mktemp("held_out")
    start, count = HELD_OUT
    subprocess.run([sys.executable, str(ROOT / "tools" / "synthetic_scenes.py"), "--out", str(out), "--split", "test",
                    "--start-seed", str(start), "--count", str(count), "--frames", "9"],
                   check=True, capture_output=True, timeout=600)
    return out


def as_batch(rgb) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def test_video_preview_opens_on_the_input_picture(held_out_scenes):
    """The decoded video's frame 0 is the picture through the trained VAE (generate keeps the picture's own
    latent there), so it matches the picture far better than the later frames of the camera move do."""
    scene = sorted(p.parent for p in held_out_scenes.glob("*/cameras.json"))[0]  # the folder also holds the data card
    pipe = load_pipeline(DEFAULT_MODEL)
    rgb, cameras = load_rgb(scene / "frames" / "0000.png"), load_cameras(scene / "cameras.json")
    result = generate(pipe, rgb, cameras, preview_count=1, video_preview=True)
    pixels, _, _ = model_inputs(pipe, rgb, cameras)
    assert len(result.video) == pipe.config.video.num_frames
    assert all(frame.shape == pixels.shape for frame in result.video)
    first, last = (image_metrics(as_batch(frame), as_batch(pixels))["psnr"] for frame in (result.video[0],
                                                                                        result.video[-1]))
    assert first > 18 and first > last + 2, (first, last)


@pytest.mark.slow
def test_default_quality_on_held_out_scenes(held_out_scenes, capsys, bench_quality):
    """The model card's claims, through the quality benchmark itself, on held-out scenes: the full pipeline
    beats both baselines on novel-view PSNR and SSIM and itself without the detail layer on PSNR, and the
    LaLRM on ground-truth latents beats both baselines by more (random weights reach neither)."""
    assert bench_quality.main(["--data", str(held_out_scenes), "--model", DEFAULT_MODEL]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" not in out
    novel_table = out.split("Frame-0 depth")[0]  # the depth table below names the same methods
    rows = {line.split("|")[1].strip(): (float(line.split("|")[2]), float(line.split("|")[3]))
            for line in novel_table.splitlines() if line.startswith("| ") and not line.startswith("| method")}
    (ours, ours_ssim), (upper, _) = rows["full pipeline (image → latents → Gaussians)"], \
        rows["LaLRM on ground-truth latents (upper bound)"]
    (plane, plane_ssim), (unchanged, unchanged_ssim) = rows["plane baseline"], rows["unchanged baseline"]
    assert ours > plane + 1.5 and ours > unchanged + 0.25, rows
    off, _ = rows["full pipeline, detail layer off (the paper's)"]
    assert ours > off + 0.5, rows  # the detail layer pays on novel views too (SSIM: not on every scene set)
    assert ours_ssim > plane_ssim + 0.02 and ours_ssim > unchanged_ssim + 0.02, rows
    assert upper > plane + 2.5 and upper > unchanged + 0.75, rows
