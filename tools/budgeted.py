"""Run one command for at most a budget of seconds: what lets a short GPU lease (tools/gpu_check.py,
tools/gpu_burst.py) keep the results of its other steps when one of them is slow.

The command gets its own process group, killed whole at the budget (compilers and data-loader workers
with it), and dies with this process (PR_SET_PDEATHSIG on Linux), so no step outlives the command that
started it. Its output is handed over line by line as it comes.
"""
from __future__ import annotations

import ctypes
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PR_SET_PDEATHSIG = 1
LOG_LINES = 40


@dataclass
class Outcome:
    status: str        # "ok", "failed" (non-zero exit) or "timeout" (killed at the budget)
    returncode: int
    seconds: float
    log_tail: str      # the last output lines that `on_line` did not take


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the process that started it dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the budget still ends it


def child_env() -> dict[str, str]:
    """Unbuffered output; this Python's bin folder first on PATH (ninja installed as a package lives there)."""
    return dict(os.environ, PYTHONUNBUFFERED="1",
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def run_budgeted(command: list[str], budget: float, cwd: Path, on_line: Callable[[str], bool] = lambda line: False,
                 on_start: Callable[[int], None] = lambda pid: None, env: dict[str, str] | None = None) -> Outcome:
    """Run `command`; each output line (stdout and stderr) goes to `on_line`, which returns True for the lines
    it keeps (the others make the log tail); `on_start(pid)` is called once the process runs."""
    start = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd,
                             env=env or child_env(), start_new_session=True, preexec_fn=_die_with_parent)
    log: list[str] = []
    selector = selectors.DefaultSelector()
    pending = b""
    timed_out = finished = False

    def take(line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if not on_line(text):
            log[:] = (log + [text])[-LOG_LINES:]

    try:
        on_start(child.pid)
        selector.register(child.stdout, selectors.EVENT_READ)
        while True:
            left = budget - (time.monotonic() - start)
            if left <= 0:
                timed_out = True
                break
            if not selector.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                take(line)
        if pending:
            take(pending)  # the last line, without its newline
        finished = True
    finally:  # an exception in on_line/on_start, or Ctrl-C, must not leave the command's group running
        if timed_out or not finished:
            os.killpg(child.pid, signal.SIGKILL)
        returncode = child.wait()
        selector.close()
        child.stdout.close()
    return Outcome("timeout" if timed_out else "ok" if returncode == 0 else "failed", returncode,
                   round(time.monotonic() - start, 2), "\n".join(log)[-4000:])
