"""One backend job as a child process: start it, follow its events.jsonl, cancel it, and never leave it behind.

Pure Python (no bpy), so it is tested without Blender and can be driven by a modal operator (one `poll()`
per timer tick) or synchronously (`wait()`, for background mode and scripts). The contract it follows is
architecture.md's: the backend appends JSON lines to DIR/events.jsonl ending with exactly one of
done / error / cancelled, exits 0/1/2/3, and stops within one step when DIR/cancel names its run (or on
SIGINT/SIGTERM). A child that exits without a final event has failed; its stderr says why.

What differs between the OSes is decided by small pure functions (`popen_options`, `child_environment`,
`stop_steps`, `path_argument`, `parent_death_rule`) that the tests call for every OS on any OS.
"""
from __future__ import annotations

import atexit
import json
import ntpath
import os
import signal
import subprocess
import sys
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

EVENTS_FILE = "events.jsonl"
CANCEL_FILE = "cancel"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
FINAL_EVENTS = ("done", "error", "cancelled")
CANCEL_GRACE_S = 10.0   # after writing DIR/cancel: the backend stops within one denoising step
TERMINATE_GRACE_S = 5.0  # after SIGTERM to the process group: then SIGKILL
STDERR_TAIL_LINES = 12
PARENT_PID_ENV = "WONDERLAND_PARENT_PID"   # the backend exits when this process is gone (backend/job.py)
RUN_ID_ENV = "WONDERLAND_RUN_ID"           # the cancel file holds it: a late cancel never stops the next run
# Windows process-creation flags (the subprocess module defines them only on Windows)
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
WINDOWS_MAX_PATH = 260

# Share of the whole job each stage takes (denoising dominates); progress runs 0 → 1 through them.
STAGE_WEIGHTS = {"encode": 0.05, "denoise": 0.75, "reconstruct": 0.10, "render": 0.07, "write": 0.03}


def stage_progress(stage: str, step: int, total: int) -> float | None:
    """Overall progress in [0, 1] at `step` of `total` in `stage`; None for a stage this table does not know."""
    if stage not in STAGE_WEIGHTS:
        return None
    before = 0.0
    for name, weight in STAGE_WEIGHTS.items():
        if name == stage:
            fraction = min(max(step / total, 0.0), 1.0) if total > 0 else 0.0
            return min(before + weight * fraction, 1.0)
        before += weight
    return None


def popen_options(os_name: str = os.name) -> dict:
    """Popen keywords: the child in its own group, so a cancel ends everything it started, and on Windows
    no console window popping up (Blender is a GUI process; a console child would open one)."""
    if os_name == "nt":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def child_environment(base: dict, parent_pid: int, run_id: str) -> dict:
    """The child's environment: unbuffered UTF-8 output (non-ASCII paths in messages on every OS, Windows'
    console code page included), the parent to die with, and the run id its cancel file must name."""
    return dict(base, PYTHONUNBUFFERED="1", PYTHONUTF8="1", PYTHONIOENCODING="utf-8",
                **{PARENT_PID_ENV: str(parent_pid), RUN_ID_ENV: run_id})


def stop_steps(os_name: str = os.name) -> tuple:
    """After the cancel file's grace period: what ends the child, then what ends it for sure.

    POSIX: SIGTERM to the process group (the backend stops as for a cancel), then SIGKILL. Windows has no
    SIGTERM for a console-less child (CTRL_BREAK needs a console), so the cancel file is the only polite
    request there and the second step is TerminateProcess; the Job Object takes the child's children."""
    if os_name == "nt":
        return ("terminate", "terminate")
    return (signal.SIGTERM, signal.SIGKILL)


def path_argument(path: str | os.PathLike, os_name: str = os.name) -> str:
    r"""A path as a command-line argument. Spaces and non-ASCII characters need nothing (Popen passes a list,
    quoting for Windows itself); on Windows, an absolute path at or beyond MAX_PATH gets the `\\?\` prefix
    (backslashes only, as that prefix turns off normalisation), so long job folders work without the
    LongPathsEnabled registry switch."""
    text = os.fspath(path)
    if os_name != "nt":
        return text
    text = ntpath.normpath(text)
    if len(text) < WINDOWS_MAX_PATH - 12 or text.startswith("\\\\?\\") or not ntpath.isabs(text):
        return text  # 12: room for an 8.3 file name inside a folder path (CreateDirectory's limit)
    if text.startswith("\\\\"):
        return "\\\\?\\UNC\\" + text[2:]
    return "\\\\?\\" + text


def parent_death_rule(platform: str = sys.platform) -> str:
    """How a child is tied to this process on each OS (the backend's side is in backend/job.py):
    every OS passes our pid in WONDERLAND_PARENT_PID; Linux adds PR_SET_PDEATHSIG in the child; Windows adds
    a Job Object that kills the child when Blender's handle on it closes (Blender exiting or crashing)."""
    if platform == "win32":
        return "parent pid + job object"
    if platform.startswith("linux"):
        return "parent pid + pdeathsig"
    return "parent pid"


def kill_on_close_job(process_handle: int):
    """Windows: a Job Object that kills its processes when its last handle closes, with the child in it.
    Returns the job handle (keep it open as long as the child may run), or None where it cannot be made."""
    import ctypes
    from ctypes import wintypes
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.CreateJobObjectW.restype = wintypes.HANDLE
    job = kernel32.CreateJobObjectW(None, None)
    if not job:
        return None
    info = JobObjectExtendedLimitInformation()
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    if not kernel32.SetInformationJobObject(wintypes.HANDLE(job), JOB_OBJECT_EXTENDED_LIMIT_INFORMATION,
                                            ctypes.byref(info), ctypes.sizeof(info)) or \
            not kernel32.AssignProcessToJobObject(wintypes.HANDLE(job), wintypes.HANDLE(process_handle)):
        kernel32.CloseHandle(wintypes.HANDLE(job))
        return None
    return job


def _job_object_structures():
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION (winnt.h), defined with ctypes so its layout is tested anywhere."""
    import ctypes

    class Basic(ctypes.Structure):
        _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64), ("PerJobUserTimeLimit", ctypes.c_int64),
                    ("LimitFlags", ctypes.c_uint32), ("MinimumWorkingSetSize", ctypes.c_size_t),
                    ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", ctypes.c_uint32),
                    ("Affinity", ctypes.c_size_t), ("PriorityClass", ctypes.c_uint32),
                    ("SchedulingClass", ctypes.c_uint32)]

    class IoCounters(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint64) for name in ("ReadOperationCount", "WriteOperationCount",
                                                         "OtherOperationCount", "ReadTransferCount",
                                                         "WriteTransferCount", "OtherTransferCount")]

    class Extended(ctypes.Structure):
        _fields_ = [("BasicLimitInformation", Basic), ("IoInfo", IoCounters),
                    ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                    ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]
    return Extended


JobObjectExtendedLimitInformation = _job_object_structures()
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000


def build_command(python: str, image: str | os.PathLike, cameras: str | os.PathLike, out_dir: str | os.PathLike,
                  model: str | None = None, steps: int | None = None, seed: int | None = None,
                  device: str | None = None, dtype: str | None = None,
                  subject_distance: float | None = None, ground_z: float | None = None,
                  no_ground: bool = False) -> list[str]:
    """The `python -m backend generate …` command line (architecture.md); options left as None are omitted."""
    cmd = [str(python), "-m", "backend", "generate", "--image", path_argument(image),
           "--cameras", path_argument(cameras), "--out", path_argument(out_dir)]
    for flag, value in (("--model", model), ("--steps", steps), ("--seed", seed), ("--device", device),
                        ("--dtype", dtype), ("--subject-distance", subject_distance), ("--ground-z", ground_z)):
        if value is not None and value != "":
            cmd += [flag, str(value)]
    return cmd + ["--no-ground"] * no_ground


def _tail_lines(path: Path, lines: int = STDERR_TAIL_LINES, max_bytes: int = 16384) -> str:
    """The last non-empty lines of a log (progress bars' carriage returns count as line ends)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    parts = [p.rstrip() for p in data.replace("\r", "\n").split("\n")]
    return "\n".join([p for p in parts if p.strip()][-lines:])


@dataclass
class JobState:
    """What a job has reported so far. `outcome` is None while it runs, then "done", "error" or "cancelled"."""
    stage: str = ""
    step: int = 0
    total: int = 0
    progress: float = 0.0
    final: dict | None = None          # the done / error / cancelled event, once written
    returncode: int | None = None      # the child's exit code once it has exited (negative: killed by a signal)
    stderr_tail: str = ""
    outcome: str | None = None
    message: str = ""                  # why it failed or was cancelled, one line
    events: list = field(default_factory=list)   # every event read so far, in order

    @property
    def finished(self) -> bool:
        return self.outcome is not None


class EventTail:
    """Reads events.jsonl incrementally: only new bytes each time, a partial last line is kept for later."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # b"" after a complete line, else the unfinished rest
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn or foreign line: the contract has none, so it carries nothing for us
            if isinstance(event, dict) and "event" in event:
                events.append(event)
        return events


_live: "weakref.WeakSet[Job]" = weakref.WeakSet()


class Job:
    """A backend child process writing into `out_dir`. Start it with `start()`, then `poll()` until finished."""

    def __init__(self, command: list[str], out_dir: str | os.PathLike, cwd: str | os.PathLike | None = None,
                 env: dict | None = None, cancel_grace: float = CANCEL_GRACE_S,
                 terminate_grace: float = TERMINATE_GRACE_S):
        self.command = list(command)
        self.out_dir = Path(out_dir)
        self.cwd = cwd
        self.env = env
        self.cancel_grace, self.terminate_grace = cancel_grace, terminate_grace
        self.proc: subprocess.Popen | None = None
        self.state = JobState()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._tail = EventTail(self.out_dir / EVENTS_FILE)
        self.run_id = uuid.uuid4().hex
        self.timed_out = False
        self._job_object = None                  # Windows: the Job Object handle that ties the child to us
        self._cancel_at: float | None = None      # when the cancel file was written
        self._terminate_at: float | None = None   # when the process group got SIGTERM

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_at is not None

    @property
    def seconds(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.started_at

    def start(self) -> "Job":
        """Start the child in its own process group (POSIX: a new session), output going to log files in
        the job folder, so a cancel can end it and everything it started, and the logs stay for the user.
        Events and a cancel file of an earlier run in this folder are removed first: they are not this run's."""
        if self.proc is not None:
            raise RuntimeError("this job was already started")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name in (EVENTS_FILE, CANCEL_FILE, STDOUT_FILE, STDERR_FILE):
            (self.out_dir / name).unlink(missing_ok=True)  # a planted link goes, its target is not written
        env = child_environment(dict(os.environ if self.env is None else self.env), os.getpid(), self.run_id)
        with open(self.out_dir / STDOUT_FILE, "xb") as out, open(self.out_dir / STDERR_FILE, "xb") as err:
            self.proc = subprocess.Popen(self.command, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, **popen_options())
        if parent_death_rule().endswith("job object"):
            self._job_object = kill_on_close_job(int(self.proc._handle))
        self.started_at = time.monotonic()
        _live.add(self)
        return self

    # --- reading ------------------------------------------------------------------------------------
    def _apply(self, event: dict) -> None:
        state = self.state
        state.events.append(event)
        kind = event.get("event")
        if kind == "stage":
            state.stage = str(event.get("stage", ""))
            state.step = int(event.get("step") or 0)
            state.total = int(event.get("total") or 0)
            progress = stage_progress(state.stage, state.step, state.total)
            if progress is not None:
                state.progress = max(state.progress, progress)
        elif kind in FINAL_EVENTS and state.final is None:
            state.final = event

    def poll(self) -> JobState:
        """Read new events and check the child; move a cancel along (terminate, then kill) when its grace
        period ran out. Cheap: call it from a timer."""
        if self.proc is None:
            raise RuntimeError("start() the job before polling it")
        if self.state.finished:
            return self.state
        for event in self._tail.read_new():
            self._apply(event)
        if self.proc.poll() is None:
            self._escalate_cancel()
            return self.state
        for event in self._tail.read_new():  # whatever it wrote just before exiting
            self._apply(event)
        self._finish()
        return self.state

    def _finish(self) -> None:
        state, rc = self.state, self.proc.returncode
        self.ended_at = time.monotonic()
        state.returncode = rc
        state.stderr_tail = _tail_lines(self.out_dir / STDERR_FILE)
        _live.discard(self)
        self._end_group(stop_steps()[1])  # anything the child left in its group
        if self._job_object is not None:  # Windows: the child is gone; closing now kills nothing more
            import ctypes
            from ctypes import wintypes
            ctypes.WinDLL("kernel32").CloseHandle(wintypes.HANDLE(self._job_object))
            self._job_object = None
        final = state.final or {}
        kind = final.get("event")
        if kind == "done" and rc == 0:
            state.outcome, state.progress = "done", 1.0
        elif kind == "cancelled" or rc == 3 or (kind is None and self.cancel_requested):
            state.outcome, state.message = "cancelled", "cancelled"
        elif kind == "error":
            state.outcome = "error"
            state.message = str(final.get("message") or f"the backend failed (exit code {rc})")
        else:
            state.outcome = "error"
            what = "after reporting done" if kind == "done" else "without a final event"
            last = state.stderr_tail.splitlines()[-1] if state.stderr_tail else ""
            state.message = f"the backend exited with code {rc} {what}: " + (last or "it wrote nothing to stderr")

    # --- cancelling ---------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the child to stop: write DIR/cancel (holding this run's id) now; `poll()` ends the child after
        `cancel_grace` seconds and for sure `terminate_grace` seconds later if it still runs."""
        if self._cancel_at is not None or self.proc is None or self.state.finished:
            return
        self._cancel_at = time.monotonic()
        cancel_file, tmp = self.out_dir / CANCEL_FILE, self.out_dir / f".{CANCEL_FILE}.{self.run_id}"
        try:
            tmp.write_text(self.run_id, encoding="utf-8")
            os.replace(tmp, cancel_file)  # whole or not at all: the backend never reads half an id
        except OSError:
            self._terminate()  # no file, no polite request: go straight to the next step

    def _escalate_cancel(self) -> None:
        now = time.monotonic()
        if self._cancel_at is not None and self._terminate_at is None and now - self._cancel_at > self.cancel_grace:
            self._terminate()
        elif self._terminate_at is not None and now - self._terminate_at > self.terminate_grace:
            self._end_group(stop_steps()[1])

    def _terminate(self) -> None:
        self._terminate_at = time.monotonic()
        self._end_group(stop_steps()[0])

    def _end_group(self, step) -> None:
        """Signal the child's whole process group (POSIX); on Windows terminate the child (its Job Object
        takes the rest when the handle closes)."""
        if self.proc is None:
            return
        if step == "terminate":
            if self.proc.poll() is None:
                self.proc.kill()
            return
        try:
            os.killpg(self.proc.pid, step)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already

    def abort(self, timeout: float = 3.0) -> JobState:
        """End the child now (file, then SIGTERM, then SIGKILL within `timeout`) and return its final state:
        for Blender quitting, a file load, or a modal operator torn down."""
        if self.proc is None or self.state.finished:
            return self.state
        self.cancel()
        if self._terminate_at is None:
            self._terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._end_group(stop_steps()[1])
            self.proc.wait()
        return self.poll()

    def wait(self, interval: float = 0.2, on_update=None, should_cancel=None,
             timeout: float | None = None) -> JobState:
        """Run to the end synchronously (background mode, scripts). `on_update(state)` is called after each
        poll that read something new; `should_cancel()` returning True cancels the job. After `timeout`
        seconds the job is ended and fails with a message saying so (`timed_out` is then True)."""
        seen = -1
        while True:
            state = self.poll()
            if on_update is not None and len(state.events) != seen:
                seen = len(state.events)
                on_update(state)
            if state.finished:
                return state
            if timeout is not None and self.seconds > timeout:
                self.timed_out = True
                state = self.abort()
                state.outcome = "error"
                state.message = (f"the backend ran longer than the {timeout:g} s timeout and was stopped; "
                                 f"allow more time (timeout), or see {self.out_dir / STDERR_FILE} for where it hung")
                return state
            if should_cancel is not None and not self.cancel_requested and should_cancel():
                self.cancel()
            time.sleep(interval)


def shutdown_all(timeout: float = 3.0) -> None:
    """End every job still running (Blender quitting, the add-on unregistered)."""
    for job in list(_live):
        job.abort(timeout=timeout)


atexit.register(shutdown_all)
