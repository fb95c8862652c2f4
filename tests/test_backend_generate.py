"""`python -m backend generate` and the pipeline under it, with the `tiny` model (seeded random weights)."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from backend.cameras import CameraBatch, load_cameras
from backend.errors import InputError
from backend.images import load_rgb
from backend.pipelines.wonderland import generate, load_pipeline
from backend.ply import read_ply
from backend.rotations import quat_to_rotmat

MODEL = "tiny"


def write_job(folder, n_frames=5, size=(180, 120), image_size=None):
    """An image and a short dolly-and-pan trajectory, in the cameras.json format."""
    w, h = size
    iw, ih = image_size or size
    rng = np.random.RandomState(0)
    Image.fromarray((rng.rand(ih, iw, 3) * 255).astype(np.uint8)).save(folder / "image.png")
    frames = []
    for i in range(n_frames):
        a = 0.05 * i
        c2w = np.eye(4)
        c2w[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
        c2w[:3, 3] = [0.2 * i, 0.0, 0.1 * i]
        frames.append({"frame": i + 1, "K": [[150, 0, w / 2], [0, 150, h / 2], [0, 0, 1]], "c2w": c2w.tolist()})
    (folder / "cameras.json").write_text(json.dumps({"width": w, "height": h, "frames": frames}))
    return folder / "image.png", folder / "cameras.json"


def events_of(out):
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def test_generate_cli_writes_ply_previews_meta_and_events(tmp_path, run_backend):
    image, cams = write_job(tmp_path)
    out = tmp_path / "out"
    result = run_backend("generate", "--image", image, "--cameras", cams, "--out", out, "--model", MODEL,
                         "--previews", "3", "--preview-size", "64", check=0)
    assert "random weights" in result.stderr  # the tiny model says it is not a trained one
    events = events_of(out)
    assert [e["event"] for e in events].count("done") == 1 and events[-1]["event"] == "done"
    stages = {e["stage"] for e in events if e["event"] == "stage"}
    assert stages == {"encode", "denoise", "reconstruct", "render", "write"}
    denoise = [e for e in events if e.get("stage") == "denoise"]
    assert [e["step"] for e in denoise] == list(range(1, denoise[0]["total"] + 1))
    done = events[-1]
    gaussians, report = read_ply(done["ply"])
    assert report.count == done["count"] == len(gaussians) > 0
    assert torch.isfinite(gaussians.means).all()
    assert [os.path.basename(p) for p in done["previews"]] == ["0000.png", "0001.png", "0002.png"]
    assert Image.open(done["previews"][0]).size == (64, 43)  # long side 64, the cameras' 3:2 aspect
    meta = json.loads((out / "meta.json").read_text())
    assert meta["random_weights"] is True and meta["model"] == MODEL and meta["seed"] == 0
    assert set(meta["timings_s"]) == {"encode", "denoise", "reconstruct", "render"}


def test_video_preview_writes_every_decoded_frame(tmp_path, run_backend):
    image, cams = write_job(tmp_path)
    out = tmp_path / "out"
    run_backend("generate", "--image", image, "--cameras", cams, "--out", out, "--model", MODEL, "--previews", "2",
                "--video-preview", check=0)
    events = events_of(out)
    done = events[-1]
    frames = load_pipeline(MODEL).config.video.num_frames
    assert [os.path.relpath(p, out) for p in done["video"]] == [f"preview/video/{i:04d}.png" for i in range(frames)]
    assert Image.open(done["video"][0]).size == (96, 64)  # the model's size: the frames the VAE decodes
    assert len(done["previews"]) == 2
    render = [(e["step"], e["total"]) for e in events if e.get("stage") == "render"]
    assert render == [(1, 3), (2, 3), (3, 3)]  # the decode is the render stage's first step
    writes = [e for e in events if e.get("stage") == "write"]
    assert writes[-1]["step"] == writes[-1]["total"] == 2 + 2 + frames


def test_same_seed_same_scene_other_seed_other_scene(tmp_path):
    image, cams = write_job(tmp_path)
    pipe = load_pipeline(MODEL)
    rgb, cameras = load_rgb(image), load_cameras(cams)
    a = generate(pipe, rgb, cameras, seed=3, preview_count=0).gaussians
    b = generate(pipe, rgb, cameras, seed=3, preview_count=0).gaussians
    c = generate(pipe, rgb, cameras, seed=4, preview_count=0).gaussians
    assert torch.equal(a.means, b.means) and torch.equal(a.sh0, b.sh0)
    assert not torch.equal(a.means, c.means)


def test_scene_lands_in_the_callers_world_frame(tmp_path):
    """Moving, turning and scaling the whole trajectory moves the Gaussians the same way: the model
    sees normalized cameras, and the inverse normalization puts its output back in the caller's world."""
    image, cams = write_job(tmp_path)
    pipe = load_pipeline(MODEL)
    cameras = load_cameras(cams, dtype=torch.float64)
    a = 0.7
    R = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3], s = R, torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64), 2.5
    moved = cameras.c2w.clone()
    moved[:, :3, 3] = cameras.c2w[:, :3, 3] * s
    moved = T @ moved
    rgb = load_rgb(image)
    g0 = generate(pipe, rgb, CameraBatch(cameras.K.float(), cameras.c2w.float(), 180, 120), preview_count=0).gaussians
    g1 = generate(pipe, rgb, CameraBatch(cameras.K.float(), moved.float(), 180, 120), preview_count=0).gaussians
    expected = (s * g0.means.double()) @ R.T + T[:3, 3]
    assert torch.allclose(g1.means.double(), expected, atol=1e-3 * s)
    assert torch.allclose(g1.log_scales, g0.log_scales + math.log(s), atol=1e-4)
    R0, R1 = quat_to_rotmat(g0.quats.double()), quat_to_rotmat(g1.quats.double())
    assert torch.allclose(R1, R @ R0, atol=1e-4)


def test_image_aspect_differs_from_cameras_crop_is_reported(tmp_path):
    image, cams = write_job(tmp_path, image_size=(120, 120))
    pipe = load_pipeline(MODEL)
    result = generate(pipe, load_rgb(image), load_cameras(cams), preview_count=0)
    assert any("centre-cropped" in w for w in result.info["warnings"])
    # a square image for 3:2 cameras: the full width, a centred band of 2/3 of the height
    assert result.info["image_crop_box"] == [0.0, 20.0, 120.0, 80.0]


def test_save_and_load_model_folder_is_bit_exact(tmp_path):
    image, cams = write_job(tmp_path)
    pipe = load_pipeline(MODEL)
    with torch.no_grad():  # make the camera branches non-zero so that their weights matter
        for p in pipe.transformer.camera_parameters():
            p.add_(torch.randn_like(p) * 0.01)
    pipe.save_pretrained(tmp_path / "model")
    loaded = load_pipeline(str(tmp_path / "model"))
    assert not loaded.random_weights
    rgb, cameras = load_rgb(image), load_cameras(cams)
    a = generate(pipe, rgb, cameras, preview_count=0).gaussians
    b = generate(loaded, rgb, cameras, preview_count=0).gaussians
    assert torch.equal(a.means, b.means) and torch.equal(a.opacity_logits, b.opacity_logits)


def test_model_folder_given_as_a_relative_path(tmp_path, monkeypatch):
    load_pipeline(MODEL).save_pretrained(tmp_path / "models" / "mine")
    monkeypatch.chdir(tmp_path)
    assert load_pipeline("models/mine").source == "models/mine"


def test_model_folder_errors_name_the_file(tmp_path):
    pipe = load_pipeline(MODEL)
    pipe.save_pretrained(tmp_path / "model")
    data = (tmp_path / "model" / "lalrm.safetensors").read_bytes()
    (tmp_path / "model" / "lalrm.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="lalrm.safetensors"):
        load_pipeline(str(tmp_path / "model"))
    (tmp_path / "model" / "camera_branches.safetensors").unlink()
    with pytest.raises(InputError, match="camera_branches.safetensors"):
        load_pipeline(str(tmp_path / "model"))
    with pytest.raises(InputError, match="wonderland.json"):
        load_pipeline(str(tmp_path))
    with pytest.raises(InputError, match="needs weights"):
        load_pipeline("paper")


EXTRA_ARGS = {"bad steps": ["--steps", "0"], "tiling without a video preview": ["--vae-tiling"],
              "tiles the tiny VAE cannot put together": ["--video-preview", "--vae-tiling"],
              "compile with the PAB cache": ["--compile", "--cache", "pab"]}


@pytest.mark.parametrize("problem", ["missing image", "bad cameras", *EXTRA_ARGS])
def test_bad_input_exits_2_with_a_hint_and_leaves_no_outputs(tmp_path, run_backend, problem):
    image, cams = write_job(tmp_path)
    if problem == "missing image":
        image = tmp_path / "nope.png"
    elif problem == "bad cameras":
        cams.write_text(json.dumps({"width": 180, "height": 120, "frames": []}))
    extra = EXTRA_ARGS.get(problem, [])
    out = tmp_path / "out"
    result = run_backend("generate", "--image", image, "--cameras", cams, "--out", out, "--model", MODEL,
                         *extra, check=2)
    assert "error:" in result.stderr and "hint:" in result.stderr
    assert events_of(out)[-1]["event"] == "error"
    assert not any(e.get("stage") == "denoise" for e in events_of(out))  # refused before the long work
    assert not (out / "scene.ply").exists() and not (out / "preview").exists()


def _start(tmp_path, *extra):
    image, cams = write_job(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "backend", "generate", "--image", str(image), "--cameras",
                             str(cams), "--out", str(out), "--model", MODEL, "--steps", "400", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "events.jsonl").exists() and '"denoise"' in (out / "events.jsonl").read_text():
            return proc, out
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no denoise event within 120 s")


@pytest.mark.parametrize("how", ["cancel file", "SIGTERM"])
def test_cancel_mid_run_exits_3_and_leaves_nothing(tmp_path, how):
    proc, out = _start(tmp_path)
    if how == "cancel file":
        (out / "cancel").touch()
    else:
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 3
    events = events_of(out)
    assert events[-1]["event"] == "cancelled"
    assert sum(e["event"] in ("done", "error", "cancelled") for e in events) == 1
    steps = [e["step"] for e in events if e.get("stage") == "denoise"]
    assert max(steps) < 400  # stopped within the denoising loop, not at its end
    assert not (out / "scene.ply").exists() and not (out / "preview").exists()


def test_prompt_embeddings_turn_on_guidance(tmp_path, run_backend):
    image, cams = write_job(tmp_path)
    pipe = load_pipeline(MODEL)
    rgb, cameras = load_rgb(image), load_cameras(cams)
    embeds = torch.randn(*pipe.config.video.text_shape, generator=torch.Generator().manual_seed(0))
    plain = generate(pipe, rgb, cameras, preview_count=0).gaussians
    guided = generate(pipe, rgb, cameras, preview_count=0, prompt_embeds=embeds).gaussians
    assert not torch.equal(plain.means, guided.means)
    from backend.models.weights import save_state_dict
    save_state_dict({"prompt": embeds[:-1]}, tmp_path / "short.safetensors")
    result = run_backend("generate", "--image", image, "--cameras", cams, "--out", tmp_path / "out", "--model",
                         MODEL, "--prompt-embeds", tmp_path / "short.safetensors", check=2)
    assert "prompt embeddings" in result.stderr and "(7, 16)" in result.stderr


def test_prompt_through_a_local_t5_text_encoder(tmp_path):
    """A tiny T5 saved as transformers writes it (safetensors), with a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from backend.pipelines.text import encode_prompt

    tokens, dim = load_pipeline(MODEL).config.video.text_shape
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "red": 4, "room": 5}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(tmp_path / "t5" / "tokenizer")
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=dim, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
                   ).save_pretrained(tmp_path / "t5" / "text_encoder", safe_serialization=True)
    a = encode_prompt("a red room", tmp_path / "t5", (tokens, dim))
    b = encode_prompt("a room", tmp_path / "t5", (tokens, dim))
    assert a.shape == (tokens, dim) and not torch.allclose(a, b)
    with pytest.raises(InputError, match="makes 16-wide embeddings"):
        encode_prompt("a room", tmp_path / "t5", (tokens, 32))
    with pytest.raises(InputError, match="no text_encoder or tokenizer"):
        encode_prompt("a room", tmp_path, (tokens, dim))
