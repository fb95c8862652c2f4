"""The job side of the contract: events.jsonl, the cancel file, signals and the parent watch."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from backend.errors import Cancelled
from backend.job import CancelWatch, EventLog


def read_events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_event_log_is_append_only_and_ends_once(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    log.stage("denoise", 1, 4)
    # a reader sees each line as soon as it is emitted, not at close
    assert read_events(tmp_path / "events.jsonl")[0]["step"] == 1
    log.emit("done", ply="scene.ply", count=7)
    events = read_events(tmp_path / "events.jsonl")
    assert [e["event"] for e in events] == ["stage", "done"]
    assert events[0] == {"event": "stage", "stage": "denoise", "step": 1, "total": 4, "t": events[0]["t"]}
    with pytest.raises(RuntimeError, match="already ended"):
        log.emit("error", message="late")


def test_cancel_file_stops_at_next_check(tmp_path):
    watch = CancelWatch(tmp_path)
    try:
        watch.check()
        (tmp_path / "cancel").touch()
        with pytest.raises(Cancelled, match="cancel"):
            watch.check()
    finally:
        watch.close()


def test_sigterm_is_a_cancel_not_a_crash(tmp_path):
    watch = CancelWatch(tmp_path)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Cancelled, match="SIGTERM"):
            watch.check()
    finally:
        watch.close()
    assert watch.reason is None  # served: the next run in this process starts uncancelled
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):  # outside a job loop a signal stops at once
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)


@pytest.mark.skipif(os.name == "nt", reason="uses a POSIX shell to orphan the child")
def test_child_notices_its_parent_died(tmp_path):
    """A job whose parent dies cancels itself instead of running on as an orphan."""
    child = textwrap.dedent(f"""
        import time, pathlib
        from backend import job
        job.PARENT_POLL_S = 0.1
        w = job.CancelWatch({str(tmp_path)!r})
        for _ in range(100):
            time.sleep(0.1)
            if w.requested():
                pathlib.Path({str(tmp_path / 'reason')!r}).write_text(w.reason)
                break
    """)
    # an intermediate shell starts the child in the background and exits at once
    subprocess.run(["sh", "-c", f'"{sys.executable}" -c "$0" & sleep 0.5', child], check=True)
    deadline = time.time() + 10
    while time.time() < deadline and not (tmp_path / "reason").exists():
        time.sleep(0.1)
    assert (tmp_path / "reason").read_text() == "the parent process exited"
