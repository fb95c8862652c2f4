"""The add-on's job runner (wonderland_blender/job.py) without Blender, driving real child processes.

The children are small Python scripts that follow the backend's side of the contract (events.jsonl, the
cancel file, exit codes), so these tests take seconds; the real backend runs in tests/blender/test_generate.py.
"""
import os
import signal
import sys
import textwrap
import time

import pytest

from processes import pid_alive
from wonderland_blender import job as jobmod
from wonderland_blender.job import EventTail, Job, build_command, shutdown_all, stage_progress


def child(tmp_path, body: str) -> list[str]:
    """A command running `body` with OUT (the job folder) and `emit(event, **fields)` defined."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent("""
        import json, os, pathlib, signal, subprocess, sys, time
        OUT = pathlib.Path(sys.argv[1])
        def emit(event, **fields):
            with open(OUT / "events.jsonl", "a") as fh:
                fh.write(json.dumps({"event": event, **fields}) + "\\n")
    """) + textwrap.dedent(body))
    return [sys.executable, str(script), str(tmp_path / "job")]


def run_to_end(job: Job, timeout: float = 30.0, on_poll=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job.poll()
        if on_poll is not None:
            on_poll(state)
        if state.finished:
            return state
        time.sleep(0.05)
    job.abort()
    raise AssertionError(f"job still running after {timeout} s")


def test_build_command_has_the_contract_flags_and_skips_unset_ones():
    cmd = build_command("/py", "/j/image.png", "/j/cameras.json", "/j", model="tiny", steps=4, seed=0,
                        device="cpu", dtype=None)
    assert cmd == ["/py", "-m", "backend", "generate", "--image", "/j/image.png", "--cameras", "/j/cameras.json",
                   "--out", "/j", "--model", "tiny", "--steps", "4", "--seed", "0", "--device", "cpu"]
    sized = build_command("/py", "/j/image.png", "/j/cameras.json", "/j", subject_distance=12.5)
    assert sized[-2:] == ["--subject-distance", "12.5"]
    grounded = build_command("/py", "/j/image.png", "/j/cameras.json", "/j", ground_z=0.0)
    assert grounded[-2:] == ["--ground-z", "0.0"]
    assert build_command("/py", "/j/image.png", "/j/cameras.json", "/j", no_ground=True)[-1] == "--no-ground"


def test_stage_progress_runs_through_the_stages_in_order():
    assert stage_progress("encode", 0, 1) == 0.0
    assert stage_progress("denoise", 0, 50) == pytest.approx(0.05)
    assert stage_progress("denoise", 25, 50) == pytest.approx(0.05 + 0.75 / 2)
    assert stage_progress("write", 4, 4) == pytest.approx(1.0)
    assert stage_progress("denoise", 3, 0) == pytest.approx(0.05)  # no total: start of the stage
    assert stage_progress("warmup", 1, 2) is None


def test_event_tail_reads_only_new_lines_and_keeps_a_partial_one(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read_new() == []  # not written yet
    with open(path, "wb") as fh:
        fh.write(b'{"event": "stage", "stage": "encode", "step": 0, "total": 1}\n{"event": "sta')
    assert [e["stage"] for e in tail.read_new()] == ["encode"]
    with open(path, "ab") as fh:
        fh.write(b'ge", "stage": "denoise", "step": 1, "total": 4}\nnot json\n')
    events = tail.read_new()
    assert [(e["stage"], e["step"]) for e in events] == [("denoise", 1)]
    assert tail.read_new() == []


def test_a_finished_job_reports_done_with_progress_and_final_event(tmp_path):
    cmd = child(tmp_path, """
        emit("stage", stage="encode", step=0, total=1)
        for i in range(1, 4):
            emit("stage", stage="denoise", step=i, total=3)
        print("some progress on stderr", file=sys.stderr)
        emit("done", ply=str(OUT / "scene.ply"), previews=[], count=7)
    """)
    job = Job(cmd, tmp_path / "job").start()
    seen = []
    state = run_to_end(job, on_poll=lambda s: seen.append(s.progress))
    assert state.outcome == "done" and state.returncode == 0
    assert state.final["count"] == 7 and state.progress == 1.0
    assert (state.stage, state.step, state.total) == ("denoise", 3, 3)
    assert [e["event"] for e in state.events] == ["stage"] * 4 + ["done"]
    assert seen == sorted(seen)  # progress never goes back
    assert state.stderr_tail == "some progress on stderr"
    assert (tmp_path / "job" / "stderr.log").is_file()  # the log stays in the job folder


def test_an_error_event_carries_the_backend_message(tmp_path):
    cmd = child(tmp_path, """
        emit("error", message="image not found: /nope.png (check the path)")
        sys.exit(2)
    """)
    state = run_to_end(Job(cmd, tmp_path / "job").start())
    assert state.outcome == "error" and state.returncode == 2
    assert state.message == "image not found: /nope.png (check the path)"


def test_a_child_exiting_without_a_final_event_fails_with_its_stderr(tmp_path):
    cmd = child(tmp_path, """
        emit("stage", stage="encode", step=0, total=1)
        print("Traceback (most recent call last):", file=sys.stderr)
        print("ModuleNotFoundError: No module named 'backend'", file=sys.stderr)
        sys.exit(1)
    """)
    state = run_to_end(Job(cmd, tmp_path / "job").start())
    assert state.outcome == "error" and state.returncode == 1 and state.final is None
    assert "exited with code 1 without a final event" in state.message
    assert "No module named 'backend'" in state.message


def test_cancel_writes_the_file_and_the_child_stops_cleanly(tmp_path):
    cmd = child(tmp_path, """
        for i in range(1, 1000):
            if (OUT / "cancel").exists():
                emit("cancelled")
                sys.exit(3)
            emit("stage", stage="denoise", step=i, total=1000)
            time.sleep(0.02)
    """)
    job = Job(cmd, tmp_path / "job").start()

    def cancel_after_first_denoise(state):
        if state.stage == "denoise" and not job.cancel_requested:
            job.cancel()

    state = run_to_end(job, on_poll=cancel_after_first_denoise)
    assert state.outcome == "cancelled" and state.returncode == 3
    assert state.final == {"event": "cancelled"}
    assert (tmp_path / "job" / "cancel").is_file()
    assert not pid_alive(job.pid)


@pytest.mark.skipif(os.name == "nt", reason="process groups and SIGTERM are POSIX")
def test_a_child_that_ignores_the_cancel_file_is_terminated_with_its_children(tmp_path):
    """After the grace period the whole group gets SIGTERM, then SIGKILL: no grandchild is left behind."""
    cmd = child(tmp_path, """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # deaf to the polite requests
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        (OUT / "grandchild.pid").write_text(str(grandchild.pid))
        emit("stage", stage="denoise", step=1, total=10)
        time.sleep(60)
    """)
    job = Job(cmd, tmp_path / "job", cancel_grace=0.3, terminate_grace=0.3).start()
    pid_file = tmp_path / "job" / "grandchild.pid"
    state = run_to_end(job, on_poll=lambda s: s.stage and pid_file.exists() and job.cancel())
    grandchild = int(pid_file.read_text())
    assert state.outcome == "cancelled"
    assert state.returncode == -signal.SIGKILL  # SIGTERM was ignored, so it took the kill
    for _ in range(50):  # the grandchild is reparented to init, which reaps it shortly
        if not pid_alive(grandchild):
            break
        time.sleep(0.05)
    assert not pid_alive(job.pid) and not pid_alive(grandchild)


def test_shutdown_all_ends_every_live_job(tmp_path):
    cmd = child(tmp_path, """
        emit("stage", stage="encode", step=0, total=1)
        time.sleep(60)
    """)
    jobs = [Job(cmd, tmp_path / "job").start(), Job(cmd, tmp_path / "job2").start()]
    assert set(jobs) <= set(jobmod._live)
    shutdown_all(timeout=5)
    for job in jobs:
        assert job.state.finished and job.state.outcome == "cancelled"
        assert not pid_alive(job.pid)
    assert not set(jobs) & set(jobmod._live)


def test_poll_before_start_says_what_to_do(tmp_path):
    with pytest.raises(RuntimeError, match="start"):
        Job(["true"], tmp_path).poll()
