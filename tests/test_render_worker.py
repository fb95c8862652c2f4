"""The render worker and `render`/`warm-render` commands with the compiled rasterizer: thread counts from
the caller, the cached scene freed when idle, and images equal to the reference's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.cameras import save_cameras
from backend.ply import write_ply
from backend.render import render
from test_render_compiled import camera, random_scene

ROOT = Path(__file__).resolve().parents[1]
compiled = pytest.importorskip("backend.render.compiled")
if compiled.unavailable_reason():
    pytest.skip(compiled.unavailable_reason(), allow_module_level=True)


@pytest.fixture
def scene_files(tmp_path):
    gaussians, cameras = random_scene(4000, 1, seed=5), camera(48, 36)
    write_ply(tmp_path / "scene.ply", gaussians)
    save_cameras(cameras, tmp_path / "cameras.json")
    return tmp_path / "scene.ply", tmp_path / "cameras.json"


def env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def read_message(proc, deadline: float) -> dict:
    line = proc.stdout.readline()
    assert line, f"the worker ended: {proc.stderr.read()}"
    assert time.monotonic() < deadline, "the worker took too long"
    return json.loads(line)


def test_worker_honours_threads_frees_the_idle_scene_and_matches_the_reference(scene_files, tmp_path):
    ply, cams = scene_files
    proc = subprocess.Popen([sys.executable, "-m", "backend", "render-worker", "--idle-free", "3"], env=env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        assert read_message(proc, deadline)["event"] == "ready"
        base = {"ply": str(ply), "cameras": str(cams), "width": 48, "height": 36}
        for i, threads in enumerate((1, 0, "two")):
            proc.stdin.write(json.dumps({"id": i, **base, "out": str(tmp_path / f"f{i}"), "threads": threads}) + "\n")
            proc.stdin.flush()
        answers = [read_message(proc, deadline) for _ in range(3)]
        assert [a["id"] for a in answers] == [0, 1, 2]
        assert answers[0]["ok"] and answers[1]["ok"] and answers[0]["rss_mb"] > 0
        assert not answers[2]["ok"] and "threads must be a whole number" in answers[2]["error"]
        one, all_cores = (np.load(answers[i]["rgb"]) for i in (0, 1))
        assert np.array_equal(one, all_cores)
        with torch.no_grad():
            from backend.ply import read_ply
            ref = render(read_ply(ply)[0], camera(48, 36), backend="torch").rgb[0].numpy()
        assert np.quantile(np.abs(one - ref), 0.99) < 2e-3
        freed = read_message(proc, time.monotonic() + 30)  # after 3 idle seconds
        assert freed["event"] == "freed" and freed["rss_mb"] > 0
        proc.stdin.write(json.dumps({"id": 9, **base, "out": str(tmp_path / "again")}) + "\n")
        proc.stdin.flush()
        assert read_message(proc, time.monotonic() + 60)["ok"]  # reloads the scene
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0


def test_render_command_takes_threads_and_warm_render_reports_the_cache(scene_files, tmp_path):
    ply, cams = scene_files
    out = subprocess.run([sys.executable, "-m", "backend", "render", "--ply", ply, "--cameras", cams, "--out",
                          tmp_path / "png", "--threads", "1"], env=env(), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "png" / "0000.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "backend", "render", "--ply", ply, "--cameras", cams, "--out",
                          tmp_path / "png", "--threads", "-2"], env=env(), capture_output=True, text=True, timeout=240)
    assert bad.returncode == 2 and "threads must be a whole number" in bad.stderr
    warm = subprocess.run([sys.executable, "-m", "backend", "warm-render"], env=env(), capture_output=True,
                          text=True, timeout=600)
    assert warm.returncode == 0, warm.stderr
    assert "CPU rasterizer ready" in warm.stdout and compiled.kernel_cache_dir() in warm.stdout


def test_worker_imports_without_the_unix_only_resource_module_and_reports_memory():
    """Windows has no `resource` module: the worker must import without it (psutil measures the memory; its
    Linux part needs `resource`, so the module is given back before measuring)."""
    code = ("import sys; sys.modules['resource'] = None\n"
            "from backend.commands import render_worker\n"
            "del sys.modules['resource']\n"
            "print(render_worker._rss_mb())")
    done = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) > 0


def test_freeing_the_idle_worker_also_hands_back_the_rasterizer_work_arrays(scene_files, tmp_path):
    from backend.commands.render_worker import _Renderer
    ply, cams = scene_files
    renderer = _Renderer(torch.device("cpu"))
    answer = renderer.handle({"ply": str(ply), "cameras": str(cams), "width": 48, "height": 36, "out": str(tmp_path)})
    assert answer["ok"] and compiled.BUFFERS.held_bytes() > 4000 * 32
    assert renderer.free() and compiled.BUFFERS.held_bytes() == 0
