"""tools/gpu_check.py's plumbing on the CPU: rows in child processes, per-row budgets, skipped needs, the
results file rewritten after every measurement, and what a kill of the whole command leaves behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_check.py"


def run_check(*args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def rows_by_name(path: Path) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(path.read_text())["rows"]}


def process_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_dry_run_measures_every_row_at_the_tiny_shape(tmp_path):
    out = tmp_path / "results.json"
    result = run_check("--dry-run", "--steps", "2", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["dry_run"] and data["finished"]
    rows = rows_by_name(out)
    assert list(rows) == ["environment", "models", "gsplat_build", "training", "generate_offload", "gsplat_parity",
                          "render_bench"]
    assert all(row["status"] == "ok" for row in rows.values()), rows
    whats = [m["what"] for m in rows["models"]["measurements"]]
    assert whats[:2] == ["1 step, stock CogVideoX transformer (CFG batch 2)",
                         "2 steps, stock CogVideoXImageToVideoPipeline"]
    assert "2 steps, ours: ControlNet 40% + CFG first 20% + pyramid attention broadcast" in whats
    assert any(w.startswith("LaLRM forward") for w in whats)
    assert all(m["seconds"] > 0 for m in rows["models"]["measurements"])
    assert rows["generate_offload"]["measurements"][0]["what"].startswith("whole generate, 2 steps, offload")
    assert [m["gradient_checkpointing"] for m in rows["training"]["measurements"]] == [False, True]
    assert all(m["seconds_per_step"] > 0 for m in rows["training"]["measurements"])
    parity = rows["gsplat_parity"]["measurements"]
    assert [m["sh_degree"] for m in parity] == [0, 3] and all("dry run" in m["vs"] for m in parity)
    assert all(m["psnr_db"] > 100 and max(v for v in m["grad_relative_l2"].values() if v is not None) == 0
               for m in parity)  # the stand-in is the torch rasterizer itself: identical
    assert rows["render_bench"]["measurements"][0]["torch_over_gsplat"] > 0


def test_a_row_past_its_budget_is_killed_and_the_rows_after_it_still_run(tmp_path):
    out = tmp_path / "results.json"
    result = run_check("--dry-run", "--rows", "environment", "gsplat_build", "training", "gsplat_parity",
                       "--row-budget", "gsplat_build=0.3", "--out", out)
    assert result.returncode == 1  # not every row ok
    rows = rows_by_name(out)
    assert rows["gsplat_build"]["status"] == "timeout" and rows["gsplat_build"]["seconds"] < 5
    assert process_gone(rows["gsplat_build"]["pid"])
    assert rows["environment"]["status"] == "ok"
    env = {k: v for m in rows["environment"]["measurements"] for k, v in m.items()}
    assert env["torch"] == torch.__version__ and "nvcc" in env["tools"] and "gsplat" in env["packages"]
    for later in ("training", "gsplat_parity"):  # both need the gsplat build
        assert rows[later] == {"name": later, "status": "skipped",
                               "reason": "needs gsplat_build, which did not finish ok"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine gsplat's build would succeed")
def test_gsplat_build_without_cuda_fails_with_its_reason_in_the_log(tmp_path):
    out = tmp_path / "results.json"
    result = run_check("--rows", "gsplat_build", "--out", out)
    assert result.returncode == 1
    row = rows_by_name(out)["gsplat_build"]
    assert row["status"] == "failed" and row["returncode"] != 0
    assert "RuntimeError: gsplat's kernels are built only on a CUDA machine" in row["log_tail"]
    assert "nvcc" in row["measurements"][0]["tools"]  # the tools were looked up before the build was tried


def test_no_row_starts_once_the_overall_budget_is_spent(tmp_path):
    out = tmp_path / "results.json"
    assert run_check("--dry-run", "--budget", "0", "--rows", "environment", "models", "--out", out).returncode == 1
    rows = rows_by_name(out)
    assert all(row["status"] == "skipped" and "of the --budget 0 s left" in row["reason"] for row in rows.values())


def test_bad_arguments_say_what_to_write():
    result = run_check("--row-budget", "models:20", "--out", "x.json")
    assert result.returncode == 2 and "write NAME=SECONDS" in result.stderr
    result = run_check("--dry-run")
    assert result.returncode == 2 and "--out FILE is required" in result.stderr


def test_killing_the_command_leaves_valid_results_and_no_row_process(tmp_path):
    out = tmp_path / "results.json"
    driver = subprocess.Popen([sys.executable, str(TOOL), "--dry-run", "--rows", "environment", "models",
                               "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the environment row is done and the models row runs
            if out.exists():
                rows = rows_by_name(out)
                if rows.get("models", {}).get("status") == "running":
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"the models row never started: {out.read_text() if out.exists() else 'no file'}")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
    rows = rows_by_name(out)
    assert rows["environment"]["status"] == "ok" and len(rows["environment"]["measurements"]) == 3
    assert rows["models"]["status"] == "running"  # what was measured when the kill came
    deadline = time.monotonic() + 10
    while not process_gone(rows["models"]["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_gone(rows["models"]["pid"])  # the row's process died with the command
