"""Issue 17 item 5 and issue 14's background timeout: the add-on's job runner on every OS.

Each OS-specific choice is a pure function called here for every OS branch; the real child processes run on
this machine (Linux), in folders with spaces, non-ASCII characters and a long path, and with the real backend
where the contract between the two sides is what is tested."""
import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from test_job_runner import child, pid_alive, run_to_end
from wonderland_blender import job as jobmod
from wonderland_blender.job import (CANCEL_FILE, PARENT_PID_ENV, RUN_ID_ENV, Job, build_command, child_environment,
                                    parent_death_rule, path_argument, popen_options, stop_steps)


def test_popen_options_hide_the_console_on_windows_and_make_a_group_everywhere():
    windows = popen_options("nt")
    assert windows["creationflags"] & 0x08000000  # CREATE_NO_WINDOW: no console pops up over Blender
    assert windows["creationflags"] & 0x00000200  # CREATE_NEW_PROCESS_GROUP
    assert "start_new_session" not in windows
    assert popen_options("posix") == {"start_new_session": True}
    if os.name == "nt":
        assert windows["creationflags"] == subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP


def test_stop_steps_never_send_sigterm_on_windows():
    assert stop_steps("nt") == ("terminate", "terminate")
    assert stop_steps("posix") == (signal.SIGTERM, signal.SIGKILL)


def test_parent_death_rule_per_os():
    assert parent_death_rule("win32") == "parent pid + job object"
    assert parent_death_rule("linux") == "parent pid + pdeathsig"
    assert parent_death_rule("darwin") == "parent pid"


def test_the_job_object_structure_has_the_windows_x64_layout():
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("the layout checked is the 64-bit one")
    info = jobmod.JobObjectExtendedLimitInformation()
    assert ctypes.sizeof(info) == 144  # sizeof(JOBOBJECT_EXTENDED_LIMIT_INFORMATION) on x64
    assert type(info).BasicLimitInformation.offset == 0 and ctypes.sizeof(info.BasicLimitInformation) == 64
    assert type(info.BasicLimitInformation).LimitFlags.offset == 16


@pytest.mark.parametrize("path, expected", [
    ("C:/Users/Zoë Müller/Wonderland/job 1", "C:\\Users\\Zoë Müller\\Wonderland\\job 1"),
    ("C:\\jobs\\" + "x" * 260, "\\\\?\\C:\\jobs\\" + "x" * 260),
    ("\\\\server\\share\\" + "y" * 260, "\\\\?\\UNC\\server\\share\\" + "y" * 260),
    ("\\\\?\\C:\\already\\" + "z" * 260, "\\\\?\\C:\\already\\" + "z" * 260),
])
def test_windows_paths_are_normalised_and_long_ones_prefixed(path, expected):
    assert path_argument(path, "nt") == expected


def test_posix_paths_pass_unchanged():
    weird = "/tmp/a folder/ünïcødé/back\\slash/" + "l" * 300
    assert path_argument(weird, "posix") == weird


def test_the_child_knows_its_parent_and_run_and_speaks_utf8():
    env = child_environment({"PATH": "/bin"}, 4242, "abc")
    assert env[PARENT_PID_ENV] == "4242" and env[RUN_ID_ENV] == "abc"
    assert env["PYTHONUTF8"] == "1" and env["PYTHONUNBUFFERED"] == "1" and env["PATH"] == "/bin"


def test_a_job_in_a_folder_with_spaces_non_ascii_backslashes_and_a_long_path_runs(tmp_path):
    folder = tmp_path / "my renders" / "Zoë's Wönderland 日本" / "back\\slash" / ("long " * 40).strip()
    cmd = child(tmp_path, """
        emit("stage", stage="encode", step=0, total=1)
        print("writing into", OUT, file=sys.stderr)
        emit("done", ply=str(OUT / "scene.ply"), previews=[], count=1, parent=os.environ["WONDERLAND_PARENT_PID"])
    """)
    cmd[-1] = str(folder)
    state = run_to_end(Job(cmd, folder).start())
    assert state.outcome == "done", state.message
    assert state.final["parent"] == str(os.getpid())
    assert "Zoë's Wönderland 日本" in state.stderr_tail


def test_the_cancel_file_names_the_run_and_old_events_are_not_read(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "events.jsonl").write_text('{"event": "done", "ply": "old.ply", "count": 3}\n')  # an earlier run
    cmd = child(tmp_path, """
        run = os.environ["WONDERLAND_RUN_ID"]
        for i in range(1, 500):
            cancel = OUT / "cancel"
            if cancel.exists() and cancel.read_text() == run:
                emit("cancelled")
                sys.exit(3)
            emit("stage", stage="denoise", step=i, total=500)
            time.sleep(0.02)
    """)
    job = Job(cmd, folder).start()
    state = run_to_end(job, on_poll=lambda s: s.stage == "denoise" and job.cancel())
    assert (state.outcome, state.returncode) == ("cancelled", 3)
    assert (folder / CANCEL_FILE).read_text() == job.run_id
    assert not any(e.get("ply") == "old.ply" for e in state.events)


def test_wait_with_a_timeout_stops_a_hung_job_with_a_clear_message(tmp_path):
    cmd = child(tmp_path, """
        emit("stage", stage="encode", step=0, total=1)
        time.sleep(60)                                   # hung
    """)
    job = Job(cmd, tmp_path / "job").start()
    started = time.monotonic()
    state = job.wait(interval=0.05, timeout=1.0)
    assert time.monotonic() - started < 15
    assert job.timed_out and state.outcome == "error"
    assert "ran longer than the 1 s timeout" in state.message and "stderr.log" in state.message
    assert not pid_alive(job.pid)


def test_the_real_backend_honours_the_runners_cancel_and_dies_with_it(tmp_path):
    """A real `python -m backend generate` started by the runner: the cancel file it writes (the run id)
    stops the run (exit 3), and the backend removes it, so it cannot cancel the next run in the folder."""
    from test_backend_generate import write_job
    image, cams = write_job(tmp_path)
    out = tmp_path / "out dir ü"
    cmd = build_command(sys.executable, image, cams, out, model="tiny", steps=400, device="cpu")
    job = Job(cmd, out, env=dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", ""))).start()
    state = run_to_end(job, timeout=180, on_poll=lambda s: s.stage == "denoise" and s.step >= 2 and job.cancel())
    assert (state.outcome, state.returncode) == ("cancelled", 3), state.stderr_tail
    assert [e["event"] for e in state.events].count("cancelled") == 1
    assert not (out / CANCEL_FILE).exists()  # served and removed: the next run in this folder is not cancelled
