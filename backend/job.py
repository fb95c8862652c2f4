"""A backend job's side of the contract with its caller (architecture.md).

- `guard_process()`: called first thing by `python -m backend`, before torch loads, so a SIGINT/SIGTERM or
  the caller's death during the ~1 s of imports already counts: the process is tied to its parent (the
  pid the caller passes in WONDERLAND_PARENT_PID, else the parent it had at start-up, for jobs only; on
  Linux also PR_SET_PDEATHSIG, on Windows a handle on the parent process, which pins it against pid reuse).
- `job_folder()`: one run of a job in its --out folder: the folder locked (a second run gets exit 2),
  stale outputs removed, events.jsonl started afresh, and exactly one final event written.
- `EventLog`: events.jsonl, one JSON object per line, flushed as it happens.
- `CancelWatch`: the job stops at its next check when the cancel file asks this run to stop, on
  SIGINT/SIGTERM, or when the parent process dies (so no child outlives the Blender that started it).
  A cancel file names the run it cancels (WONDERLAND_RUN_ID); an empty one cancels whatever runs, a file
  naming another run is stale and ignored, so a cancel that came too late never stops the next run.
"""
from __future__ import annotations

import _thread
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from backend.errors import EXIT_CANCELLED, Cancelled, InputError

FINAL_EVENTS = ("done", "error", "cancelled")
PARENT_PID_ENV = "WONDERLAND_PARENT_PID"
RUN_ID_ENV = "WONDERLAND_RUN_ID"
PARENT_GONE = "the parent process exited"
LOCK_FILE = ".lock"
CANCEL_FILE = "cancel"
EVENTS_FILE = "events.jsonl"
PARENT_POLL_S = 0.5


class _Guard:
    """Process-wide state: the pending cancel reason and the watch (if any) that turns signals into checks."""
    reason: str | None = None
    watching = False      # a CancelWatch polls `reason`; otherwise a signal interrupts the main thread
    parent: int | None = None
    parent_handle = None  # Windows: a SYNCHRONIZE handle on the parent process
    started = False
    enforced = False      # the parent's death ends the process (see enforce_parent)
    importing = False     # the command's modules are still loading (see imports_done): nothing is written yet


def _on_signal(signum, _frame) -> None:
    reason = PARENT_GONE if not parent_alive() else f"signal {signal.Signals(signum).name}"
    if _Guard.watching:  # a job loop checks it between steps
        _Guard.reason = _Guard.reason or reason
    elif _Guard.importing:  # nothing to clean up; an exception raised here may land in (and be swallowed by)
        os.write(2, f"cancelled: {reason}\n".encode())  # one of importlib's callbacks, so leave at once
        os._exit(EXIT_CANCELLED)
    else:  # no job loop to notice it (render, info): stop now, exit code 3
        raise KeyboardInterrupt(reason)


def imports_done() -> None:
    """The command is about to run: from now on a signal is a cancel that it handles (a job loop's check,
    or KeyboardInterrupt), no longer an immediate exit."""
    _Guard.importing = False


def parent_watch_kind(platform: str) -> str:
    """How a child learns that its parent died, per OS (sys.platform):
    linux: PR_SET_PDEATHSIG (immediate) plus comparing getppid() with the caller's pid (covers a parent that
    died before the child ran); darwin and other POSIX: that getppid() comparison, polled; win32: a handle on
    the parent process, polled (Windows does not re-parent, and the handle pins the pid)."""
    if platform.startswith("linux"):
        return "pdeathsig+ppid"
    return "handle" if platform == "win32" else "ppid"


def _windows_parent_handle(pid: int):
    import ctypes
    SYNCHRONIZE = 0x00100000
    kernel32 = ctypes.windll.kernel32
    kernel32.OpenProcess.restype = ctypes.c_void_p
    return kernel32.OpenProcess(SYNCHRONIZE, False, pid) or None


def parent_alive() -> bool:
    """False once the recorded parent has exited (always True when there is none to watch)."""
    if _Guard.parent is None:
        return True
    if sys.platform == "win32":
        if _Guard.parent_handle is None:
            return False
        import ctypes
        WAIT_TIMEOUT = 0x102
        handle = ctypes.c_void_p(_Guard.parent_handle)
        return ctypes.windll.kernel32.WaitForSingleObject(handle, 0) == WAIT_TIMEOUT
    return os.getppid() == _Guard.parent


def _watch_parent() -> None:
    while parent_alive():
        time.sleep(PARENT_POLL_S)
    if _Guard.reason is None:
        _Guard.reason = PARENT_GONE
    if not _Guard.watching:
        _thread.interrupt_main(signal.SIGTERM)


def guard_process(environ=os.environ, importing: bool = False) -> None:
    """Install the SIGINT/SIGTERM handlers and the parent watch; call before any heavy import. `importing`:
    the caller is a process that only now loads its command (a signal ends it at once until imports_done)."""
    if _Guard.started:
        return
    _Guard.started, _Guard.importing = True, importing
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _on_signal)
    except ValueError:  # not the main thread (a library caller): the cancel file and parent watch still work
        pass
    given = environ.get(PARENT_PID_ENV, "").strip()
    if given == "0":  # the caller opts out (a detached batch run): no parent to die with
        return
    _Guard.parent = int(given) if given.isdigit() else os.getppid()
    kind = parent_watch_kind(sys.platform)
    if kind == "handle":
        _Guard.parent_handle = _windows_parent_handle(_Guard.parent)
    elif kind == "pdeathsig+ppid" and given:  # only for callers that asked: it fires when the spawning thread ends
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if given:  # a caller that names its pid wants any command tied to it, from the first instant
        enforce_parent()


def enforce_parent() -> None:
    """Start acting on the parent's death (once): now if it is already gone, else when the watch sees it.
    Jobs (CancelWatch) and callers that pass their pid do; a training run started by a shell that then exits
    (nohup) does not."""
    if _Guard.parent is None or _Guard.enforced:
        return
    _Guard.enforced = True
    if not parent_alive():  # it died before we could watch it
        if not _Guard.watching:
            raise KeyboardInterrupt(PARENT_GONE)
        _Guard.reason = PARENT_GONE
    threading.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()


class EventLog:
    """events.jsonl of one run: created afresh (a planted link is replaced, never followed), mode per umask."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.unlink(missing_ok=True)  # a link planted here goes; its target is never written
        except PermissionError:
            pass  # Windows: the caller is reading the old log this instant; truncating still starts afresh
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        self._file = os.fdopen(os.open(self.path, flags, 0o666), "w", encoding="utf-8")
        self._start = time.perf_counter()
        self.finished = False

    def emit(self, event: str, **fields) -> None:
        if self.finished:
            raise RuntimeError(f"events.jsonl already ended; cannot add {event!r}")
        record = {"event": event, **fields, "t": round(time.perf_counter() - self._start, 3)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if event in FINAL_EVENTS:
            os.fsync(self._file.fileno())
            self.finished = True
            self._file.close()

    def stage(self, stage: str, step: int, total: int, **fields) -> None:
        self.emit("stage", stage=stage, step=step, total=total, **fields)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class CancelWatch:
    """Polled by the job between steps; `check()` raises Cancelled once a cancel was asked for."""

    def __init__(self, out_dir: str | Path, run_id: str | None = None):
        self.cancel_file = Path(out_dir) / CANCEL_FILE
        self.run_id = os.environ.get(RUN_ID_ENV, "").strip() if run_id is None else run_id
        guard_process()
        _Guard.watching = True
        enforce_parent()

    @property
    def reason(self) -> str | None:
        return _Guard.reason

    def _file_cancels(self) -> bool:
        """The cancel file exists and is empty or names this run."""
        try:
            with open(self.cancel_file, "rb") as fh:
                text = fh.read(256).decode("utf-8", errors="replace").strip()
        except OSError:
            return False
        return text == "" or text == self.run_id

    def requested(self) -> bool:
        if self.reason is None and self._file_cancels():
            _Guard.reason = f"{self.cancel_file} exists"
        return self.reason is not None

    def check(self) -> None:
        if self.requested():
            raise Cancelled(self.reason)

    def close(self) -> None:
        """Stop watching; a cancel file meant for this run is served and removed, another run's is left."""
        if self._file_cancels():
            self.cancel_file.unlink(missing_ok=True)
        _Guard.watching = False
        if _Guard.reason != PARENT_GONE:  # served; an orphan stays cancelled
            _Guard.reason = None


def prepare_out_dir(out: str | Path) -> Path:
    """--out as an existing or new folder, or an InputError saying why it cannot be one."""
    path = Path(out).resolve()
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out} is a file, not a folder", "give a folder for the job's outputs")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"--out {out} cannot be a folder: a part of its path is a file",
                         "give a folder path whose parents are folders") from None
    except PermissionError as e:
        raise InputError(f"--out {out}: no permission to create it ({e.strerror})",
                         "choose a folder you can write to") from None
    return path


def lock_folder(out: Path):
    """An exclusive lock on OUT/.lock held until the process ends or the returned file is closed."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fh = os.fdopen(os.open(out / LOCK_FILE, flags, 0o666), "r+b")
    except OSError as e:
        raise InputError(f"cannot lock the job folder {out}: {e.strerror}",
                         f"remove {out / LOCK_FILE} if it is not a plain file, or choose another --out") from None
    try:
        if os.name == "nt":
            import msvcrt
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise InputError(f"another run is writing into {out}",
                         "wait for it to finish or cancel it, or give this run another --out folder") from None
    return fh


def remove_outputs(out: Path, names) -> None:
    """Remove outputs of an earlier or failed run; links are removed themselves, never followed."""
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def job_folder(out: str | Path, outputs: tuple[str, ...]):
    """One run in `out`: yields (folder, EventLog, CancelWatch); writes `cancelled` or `error` on the way out
    (removing `outputs` then) unless the body ended the log with `done`."""
    folder = prepare_out_dir(out)
    lock = lock_folder(folder)
    watch = CancelWatch(folder)
    try:
        remove_outputs(folder, outputs)
        events = EventLog(folder / EVENTS_FILE)
        try:
            yield folder, events, watch
        except (Cancelled, KeyboardInterrupt):
            remove_outputs(folder, outputs)
            events.emit("cancelled")
            raise
        except InputError as e:
            remove_outputs(folder, outputs)
            events.emit("error", message=str(e), kind="input")
            raise
        except BaseException as e:
            remove_outputs(folder, outputs)
            events.emit("error", message=f"{type(e).__name__}: {e}")
            raise
        finally:
            events.close()
    finally:
        watch.close()
        lock.close()
