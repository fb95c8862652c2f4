"""tools/budgeted.py: every output line reaches the caller, and the command's process group never outlives
run_budgeted, whatever way it ends."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from budgeted import run_budgeted  # noqa: E402


def gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its reaper."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_last_line_without_a_newline_is_kept(tmp_path):
    outcome = run_budgeted([sys.executable, "-c", "import sys; print('first'); sys.stdout.write('last')"],
                           60, tmp_path)
    assert outcome.status == "ok" and outcome.log_tail.splitlines() == ["first", "last"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_an_exception_in_on_line_kills_the_command_and_its_children(tmp_path):
    code = ("import subprocess; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); p.wait()")
    pids: list[int] = []

    def on_line(line: str) -> bool:
        pids.append(int(line))
        raise RuntimeError("the caller failed")

    try:
        with pytest.raises(RuntimeError, match="the caller failed"):
            run_budgeted([sys.executable, "-c", code], 60, tmp_path, on_line=on_line)
        deadline = time.monotonic() + 5
        while not gone(pids[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(pids[0]), "the command's child still runs after run_budgeted raised"
    finally:
        for pid in pids:  # the sleep this test started, should it outlive the check
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
