"""Issue 16: every bad input a clear exit 2, no empty "success", no orphan job, a cancel tied to its run, a job
folder that serves one run at a time. Cheap cases run in-process; the CLI runs stop before the model loads,
except the few that need a whole generate (tiny model)."""
import copy
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from backend.atomic import atomic_write_text
from backend.cameras import cameras_from_dict
from backend.commands.render import output_size
from backend.errors import InputError
from backend.images import load_rgb
from backend.job import CancelWatch, job_folder, lock_folder
from backend.models.config import ModelConfig
from backend.models.model_dir import read_model
from backend.ply import read_ply
from processes import pid_alive
from test_backend_generate import MODEL, events_of, write_job

GENERATE = [sys.executable, "-m", "backend", "generate"]


def generate_args(tmp_path, out=None, *extra):
    image, cams = write_job(tmp_path)
    return ["--image", str(image), "--cameras", str(cams), "--out", str(out or tmp_path / "out"),
            "--model", MODEL, "--previews", "1", "--preview-size", "32", *map(str, extra)]


# --- 1. values that overflow float32 ----------------------------------------------------------------------

def _cams(edit):
    d = {"width": 180, "height": 120,
         "frames": [{"K": [[150, 0, 90], [0, 150, 60], [0, 0, 1]], "c2w": np.eye(4).tolist()}]}
    edit(d["frames"][0])
    return d


@pytest.mark.parametrize("where, edit", [
    ("c2w[0][3]", lambda f: f["c2w"][0].__setitem__(3, 1e39)),
    ("K[0][2]", lambda f: f["K"][0].__setitem__(2, 1e39)),
    ("K[0][1]", lambda f: f["K"][0].__setitem__(1, 1e300)),
    ("K[0][0]", lambda f: (f["K"][0].__setitem__(0, 1e300), f["K"][1].__setitem__(1, 1e300))),
])
def test_camera_values_beyond_float32_are_bad_input(where, edit):
    with pytest.raises(InputError, match=re.escape(where) + ".*beyond 32-bit floats"):
        cameras_from_dict(_cams(edit))


def test_camera_and_render_sizes_too_large_are_bad_input():
    with pytest.raises(InputError, match="width.*up to 65536"):
        cameras_from_dict(dict(_cams(lambda f: None), width=10**12))
    cams = cameras_from_dict(_cams(lambda f: None))

    class Args:
        width, height = 100000, 100000
    with pytest.raises(InputError, match="too large to render"):
        output_size(Args, cams)


# --- 2. an empty or non-finite result is never a success ----------------------------------------------------

def test_a_nan_model_fails_with_exit_1_naming_the_model(tmp_path):
    from backend.pipelines.wonderland import load_pipeline
    model = tmp_path / "nan-model"
    load_pipeline(MODEL).save_pretrained(model)
    weights = load_file(model / "lalrm.safetensors")
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, model / "lalrm.safetensors",
              metadata=safe_open(model / "lalrm.safetensors", "pt").metadata())
    args = generate_args(tmp_path)
    args[args.index("--model") + 1] = str(model)
    result = subprocess.run(GENERATE + args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert str(model) in result.stderr and "no usable Gaussians" in result.stderr
    events = events_of(tmp_path / "out")
    assert events[-1]["event"] == "error" and not any(e["event"] == "done" for e in events)
    assert not (tmp_path / "out" / "scene.ply").exists()


def test_options_that_empty_the_result_are_bad_input(tmp_path):
    result = subprocess.run(GENERATE + generate_args(tmp_path, None, "--prune-opacity", "1.0"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "--prune-opacity 1.0 left no Gaussians" in result.stderr and "hint:" in result.stderr
    assert events_of(tmp_path / "out")[-1]["event"] == "error"


# --- 3. the job dies with its parent; signals during the imports are a cancel -----------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_imports_is_a_clean_cancel(tmp_path, sig):
    proc = subprocess.Popen(GENERATE + generate_args(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(0.5)  # python is up, torch is still loading
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "Traceback" not in err and "cancelled" in err


def test_a_job_whose_parent_dies_in_its_first_second_ends(tmp_path):
    """The parent (a shell) starts the job, passes its pid and exits at once: the job must not run on."""
    pid_file = tmp_path / "job.pid"
    script = 'WONDERLAND_PARENT_PID=$$ "$0" "$@" >/dev/null 2>&1 & echo $! > "$PIDFILE"'
    subprocess.run(["sh", "-c", script, *GENERATE, *generate_args(tmp_path)], check=True,
                   env=dict(os.environ, PIDFILE=str(pid_file)))
    pid = int(pid_file.read_text())
    deadline = time.time() + 30
    while time.time() < deadline and pid_alive(pid):
        time.sleep(0.1)
    assert not pid_alive(pid), "the orphaned job is still running"
    events = events_of(tmp_path / "out") if (tmp_path / "out" / "events.jsonl").exists() else []
    assert not any(e["event"] == "done" for e in events)


# --- 4. a cancel is tied to its run ------------------------------------------------------------------------

def test_a_cancel_file_naming_another_run_is_ignored_and_left(tmp_path):
    (tmp_path / "cancel").write_text("run-1")
    watch = CancelWatch(tmp_path, run_id="run-2")
    try:
        assert not watch.requested()
    finally:
        watch.close()
    assert (tmp_path / "cancel").read_text() == "run-1"


def test_a_cancel_for_this_run_that_came_too_late_is_removed_at_its_end(tmp_path):
    """A cancel during the write stage may end in done, but it must not cancel the next run in the folder."""
    for content in ("run-1", ""):
        watch = CancelWatch(tmp_path, run_id="run-1")
        (tmp_path / "cancel").write_text(content)
        assert watch.requested()
        watch.close()
        assert not (tmp_path / "cancel").exists()
        later = CancelWatch(tmp_path, run_id="run-2")
        assert not later.requested()
        later.close()


# --- 5. bad input exits 2 with a hint, not 1 with a raw exception ----------------------------------------

def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (a few bytes: nothing is decoded before the size check)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_bad_input(tmp_path):
    _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(InputError, match="too large to read safely") as e:
        load_rgb(tmp_path / "bomb.png", min_side=1024)
    assert "scale it down" in e.value.hint


@pytest.mark.parametrize("problem", ["out is a file", "out under a file", "steps 1500"])
def test_cli_bad_input_exits_2_before_the_model_loads(tmp_path, problem):
    out = tmp_path / "out"
    extra = []
    if problem == "out is a file":
        out.write_text("x")
    elif problem == "out under a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    else:
        extra = ["--steps", "1500"]
    result = subprocess.run(GENERATE + generate_args(tmp_path, out, *extra), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "hint:" in result.stderr and "Traceback" not in result.stderr
    assert "random weights" not in result.stderr  # refused before the model was loaded


def _model_folder(tmp_path, edit):
    folder = tmp_path / "model"
    (folder / "vae").mkdir(parents=True)
    manifest = copy.deepcopy(ModelConfig.small().to_dict())
    replaced = edit(manifest)
    manifest = manifest if replaced is None else replaced
    (folder / "wonderland.json").write_text(json.dumps(manifest) if not isinstance(manifest, str) else manifest)
    return folder


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(max_gaussians="many"), "'max_gaussians' must be a whole number"),
    (lambda m: m.update(max_gaussians=-5), "'max_gaussians' is -5"),
    (lambda m: m.update(prune_opacity="abc"), "'prune_opacity' must be a number"),
    (lambda m: m["video"].update(num_inference_steps="50"), "'num_inference_steps' must be a whole number"),
    (lambda m: m["video"].update(guidance_scale="x"), "'guidance_scale' must be a number"),
    (lambda m: m.update(base_model=5), "'base_model' must be a folder path"),
    (lambda m: m.update(version="1"), 'is the string "1"'),
    (lambda m: [m], "top level must be an object"),
    (lambda m: "[" * 100000 + "]" * 100000, "JSON nested too deeply to read"),
    (lambda m: "{not json", "not valid JSON"),
])
def test_a_model_config_with_bad_types_is_bad_input(tmp_path, edit, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        read_model(_model_folder(tmp_path, edit))


def test_a_deeply_nested_cameras_file_is_bad_input(tmp_path):
    from backend.cameras import load_cameras
    (tmp_path / "cameras.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(InputError, match="nested too deeply"):
        load_cameras(tmp_path / "cameras.json")


def test_a_ply_header_claiming_more_than_the_file_holds_is_bad_input(tmp_path):
    path = tmp_path / "huge.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 1000000000000\nproperty float x\nend_header\n0\n")
    with pytest.raises(InputError, match="claims 1,000,000,000,000 vertex"):
        read_ply(path)


# --- 6. huge photos are decoded reduced ---------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_a_large_photo_is_decoded_reduced_but_never_below_the_minimum_side(tmp_path, suffix):
    path = tmp_path / f"photo.{suffix}"
    Image.fromarray((np.random.RandomState(0).rand(900, 1200, 3) * 255).astype(np.uint8)).save(path)
    rgb = load_rgb(path, min_side=200)
    assert min(rgb.shape[:2]) >= 200 and rgb.shape[0] <= 450  # reduced by 2 or more
    assert rgb.shape[1] * 900 == rgb.shape[0] * 1200  # the aspect is kept
    assert load_rgb(path).shape == (900, 1200, 3)


def test_palette_and_16_bit_photos_are_decoded_reduced_with_their_values(tmp_path):
    """Image.reduce refuses palette and 16-bit images (and would average palette indices): they are
    converted first, so the colours and the 16-bit precision survive the reduction."""
    halves = np.zeros((300, 420, 3), np.uint8)
    halves[:, :210] = (255, 0, 0)
    halves[:, 210:] = (0, 0, 255)
    Image.fromarray(halves).convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(tmp_path / "palette.png")
    ramp = (np.arange(420, dtype=np.uint16)[None, :].repeat(300, axis=0) * 150 + 7).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert [Image.open(tmp_path / f).mode for f in ("palette.png", "grey16.png")] == ["P", "I;16"]
    rgb = load_rgb(tmp_path / "palette.png", min_side=100)
    assert rgb.shape == (100, 140, 3)
    assert np.allclose(rgb[:, :70], (1, 0, 0)) and np.allclose(rgb[:, 70:], (0, 0, 1))
    grey = load_rgb(tmp_path / "grey16.png", min_side=100)
    expected = ramp.reshape(100, 3, 140, 3).astype(np.float64).mean(axis=(1, 3)) / 65535
    assert grey.shape == (100, 140, 3) and np.allclose(grey[..., 0], expected, atol=1e-6)


# --- 7. the job folder --------------------------------------------------------------------------------------

def test_a_rerun_starts_the_log_afresh_and_removes_stale_outputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "events.jsonl").write_text('{"event": "done", "ply": "scene.ply", "count": 5}\n')
    for name in ("meta.json", "scene.ply"):
        (out / name).write_text("{}")
    result = subprocess.run(GENERATE + generate_args(tmp_path, out, "--steps", "1500"), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert [e["event"] for e in events_of(out)] == ["error"]
    assert not (out / "meta.json").exists() and not (out / "scene.ply").exists()


def test_a_second_run_into_a_busy_folder_gets_exit_2_and_leaves_it_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "events.jsonl").write_text('{"event": "stage", "stage": "denoise", "step": 1, "total": 4}\n')
    lock = lock_folder(out)  # a run in progress
    try:
        result = subprocess.run(GENERATE + generate_args(tmp_path, out), capture_output=True, text=True,
                                timeout=120)
    finally:
        lock.close()
    assert result.returncode == 2 and "another run is writing into" in result.stderr
    assert [e["event"] for e in events_of(out)] == ["stage"]  # the running job's log is untouched


def test_links_planted_in_the_folder_are_not_followed(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "log.txt").write_text("precious\n")
    (elsewhere / "0000.png").write_text("precious\n")
    (out / "events.jsonl").symlink_to(elsewhere / "log.txt")
    (out / "preview").symlink_to(elsewhere, target_is_directory=True)
    with job_folder(out, ("scene.ply", "preview", "meta.json")) as (_, events, _watch):
        events.emit("done", count=1)
    assert (elsewhere / "log.txt").read_text() == "precious\n"
    assert (elsewhere / "0000.png").read_text() == "precious\n"
    assert not (out / "events.jsonl").is_symlink() and not (out / "preview").exists()


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "meta.json", "{}")
        with job_folder(tmp_path / "out", ()) as (_, events, _watch):
            events.emit("done", count=1)
    finally:
        os.umask(old)
    assert (tmp_path / "meta.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out" / "events.jsonl").stat().st_mode & 0o777 == 0o644


# --- 8. smaller ones --------------------------------------------------------------------------------------

def _write_gaussians(path, n, nan_rows=0):
    from backend.gaussians import Gaussians
    from backend.ply import write_ply
    g = Gaussians(means=torch.randn(n, 3), log_scales=torch.full((n, 3), -3.0), quats=torch.eye(4)[[0] * n],
                  opacity_logits=torch.zeros(n), sh0=torch.zeros(n, 3), sh_rest=torch.zeros(n, 0, 3))
    g.means[:nan_rows] = float("nan")
    write_ply(path, g)


def test_a_ply_body_longer_than_its_header_count_is_reported(tmp_path):
    path = tmp_path / "scene.ply"
    _write_gaussians(path, 10)
    data = path.read_bytes().replace(b"element vertex 10\n", b"element vertex 8\n")
    path.write_bytes(data)
    gaussians, report = read_ply(path)
    assert len(gaussians) == 8
    assert any("not read" in w for w in report.warnings), report.warnings
    from backend.commands.info import summarize
    assert any("not read" in w for w in summarize(path)["warnings"])


def test_render_says_how_many_nan_rows_it_dropped(tmp_path, run_backend):
    _write_gaussians(tmp_path / "scene.ply", 10, nan_rows=3)
    (tmp_path / "cams.json").write_text(json.dumps(_cams(lambda f: f["c2w"][2].__setitem__(3, -5.0))))
    result = run_backend("render", "--ply", tmp_path / "scene.ply", "--cameras", tmp_path / "cams.json",
                         "--out", tmp_path / "r", "--width", "32", "--height", "24", "--device", "cpu", check=0)
    assert "3 of 10 Gaussians" in result.stderr


@pytest.mark.parametrize("env, survives", [({}, True), ({"WONDERLAND_PARENT_PID": "0"}, True),
                                           ({"WONDERLAND_PARENT_PID": "$$"}, False)])
def test_only_jobs_and_callers_that_pass_their_pid_die_with_the_parent(tmp_path, env, survives):
    """A training run left behind by its shell (nohup) keeps going; a caller's pid ties any command to it."""
    script = (f"import time, pathlib; from backend import job; job.PARENT_POLL_S = 0.1; job.guard_process()\n"
              f"time.sleep(1.5); pathlib.Path({str(tmp_path / 'survived')!r}).touch()")
    assign = " ".join(f"{k}={v}" for k, v in env.items())
    subprocess.run(["sh", "-c", f'{assign} "$0" -c "$1" & sleep 0.3', sys.executable, script], check=True)
    time.sleep(3)
    assert (tmp_path / "survived").exists() == survives
