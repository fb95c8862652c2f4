"""tools/gpu_burst.py on the CPU at 2 steps a stage: pack the shipped default's latent caches from tiny scenes,
run the three stages (--dry-run), unpack into a model folder and a checkpoint run that the backend and
bench_checkpoints.py read; a video stage cut short is exported from its checkpoint; the travel size check."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.models.weights import load_state_dict
from backend.pipelines.wonderland import load_pipeline
from backend.training.engine import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_burst.py"
sys.path.insert(0, str(ROOT / "tools"))
import gpu_burst  # noqa: E402
import gpu_wheels  # noqa: E402


def write_scene(root: Path, name: str, seed: int, frames: int = 9, width: int = 96, height: int = 64) -> None:
    """Our folder format: a smooth random colour field seen by a camera sliding sideways."""
    rng = np.random.default_rng(seed)
    field = np.asarray(Image.fromarray((rng.random((4, 8, 3)) * 255).astype(np.uint8)).resize(
        (width + 2 * frames, height), Image.Resampling.BICUBIC))
    (root / name / "frames").mkdir(parents=True)
    K = [[0.9 * width, 0, width / 2], [0, 0.9 * width, height / 2], [0, 0, 1]]
    cams = []
    for i in range(frames):
        Image.fromarray(field[:, 2 * i:2 * i + width]).save(root / name / "frames" / f"{i:04d}.png")
        c2w = np.eye(4)
        c2w[0, 3] = 0.05 * i
        cams.append({"frame": i, "K": K, "c2w": c2w.tolist()})
    (root / name / "cameras.json").write_text(json.dumps({"width": width, "height": height, "frames": cams}))


def tool(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_pack_run_unpack_round_trip_on_the_cpu(tmp_path):
    for i in range(3):
        write_scene(tmp_path / "data", f"scene{i}", seed=i)
    pack = tmp_path / "pack"
    result = tool("pack", "--data", tmp_path / "data", "--out", pack, "--work", tmp_path / "pack_work",
                  "--lrm-scenes", 1, "--val-fraction", 0)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((pack / "burst.json").read_text())
    assert manifest["model"] == "backend/weights/default" and manifest["clips"] == {"latents": 3, "lrm": 1}
    with tarfile.open(pack / "latents.tar.xz") as tar:
        names = tar.getnames()
    assert "latents/cache.json" in names and "lrm/cache.json" in names
    assert not (pack / "model").exists()  # the shipped default travels with the working tree

    out, work = tmp_path / "out", tmp_path / "work"
    result = tool("run", "--dry-run", "--pack", pack, "--work", work, "--out", out, "--budget", 500)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((out / "burst.json").read_text())
    assert [(s["name"], s["status"]) for s in results["stages"]] == [("video", "ok"), ("samples", "ok"), ("lrm", "ok")]
    assert [s.get("steps_done") for s in results["stages"]] == [2, None, 2]
    assert all(s["median_step_s"] > 0 for s in results["stages"] if s["name"] != "samples")
    assert sorted(results["files"]) == sorted(p.name for p in out.iterdir()) == [
        "burst.json", "lalrm.safetensors", "logs.tar", "lrm_step_00000001.tar", "lrm_step_00000002.tar", "video.tar"]
    assert all(p.stat().st_size <= 16 * 2 ** 20 for p in out.iterdir())  # the device's limit on files sent back

    # a stage cut short: its latest checkpoint becomes the model's part, as its --export would have written it
    for part, file in (("video", "camera_branches.safetensors"), ("lrm", "lalrm.safetensors")):
        (work / "model" / file).unlink()
        assert gpu_burst.export_latest_checkpoint(work, part) == "step_00000002"
        checkpoint = load_state_dict(work / "runs" / part / "checkpoints" / "step_00000002" / "model.safetensors")
        for name, value in load_state_dict(work / "model" / file).items():
            torch.testing.assert_close(value, checkpoint[name], msg=name)

    model, run = tmp_path / "models" / "burst", tmp_path / "runs" / "burst-lrm"
    result = tool("unpack", "--results", out, "--out", model, "--run", run)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bench_checkpoints.py --model" in result.stdout
    pipe = load_pipeline(str(model))
    default = load_pipeline("default")
    assert pipe.config.scene_scale == default.config.scene_scale == "metric"   # the LaLRM kept its frame
    trained = dict(pipe.transformer.base.named_parameters())
    assert any(not torch.equal(p, trained[n]) for n, p in default.transformer.base.named_parameters())
    assert [c.name for c in list_checkpoints(run)] == ["step_00000001", "step_00000002"]
    last = load_state_dict(run / "checkpoints" / "step_00000002" / "model.safetensors")
    for name, value in pipe.lalrm.state_dict().items():  # the exported LaLRM is the last checkpoint's
        torch.testing.assert_close(value, last[name], msg=name)
    assert tool("unpack", "--results", out, "--out", model, "--run", run).returncode != 0  # never overwrites


def test_size_report_refuses_more_than_the_device_takes(tmp_path):
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 1000)
    line, fits = gpu_wheels.size_report([small])
    assert fits and "of 64 MiB" in line
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "cache.bin", "wb") as f:  # sparse: the apparent size is what counts
        f.truncate(64 * 2 ** 20)
    line, fits = gpu_wheels.size_report([small, big])
    assert not fits and "TOO BIG" in line


def test_pack_refuses_a_folder_that_is_no_model(tmp_path):
    result = tool("pack", "--data", tmp_path, "--model", tmp_path, "--out", tmp_path / "pack")
    assert result.returncode != 0 and "not a model folder" in result.stderr


def test_run_and_unpack_say_what_is_missing(tmp_path):
    result = tool("run", "--pack", tmp_path / "nothing", "--out", tmp_path / "out", "--work", tmp_path / "work")
    assert result.returncode != 0 and "holds no pack" in result.stderr and "carry" in result.stderr
    result = tool("unpack", "--results", tmp_path, "--out", tmp_path / "m", "--run", tmp_path / "r")
    assert result.returncode != 0 and "lacks burst.json, video.tar, lalrm.safetensors" in result.stderr
