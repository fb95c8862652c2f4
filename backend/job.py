"""A backend job's side of the contract with its caller (architecture.md).

- `EventLog`: events.jsonl, one JSON object per line, flushed as it happens, ending with exactly one of
  done / error / cancelled.
- `CancelWatch`: the job stops at its next check when `DIR/cancel` appears, on SIGINT/SIGTERM, or when
  the parent process dies (so no child outlives the Blender that started it).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from backend.errors import Cancelled

FINAL_EVENTS = ("done", "error", "cancelled")


class EventLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
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

    PARENT_POLL_S = 1.0

    def __init__(self, out_dir: str | Path, watch_parent: bool = True):
        self.cancel_file = Path(out_dir) / "cancel"
        self.reason: str | None = None
        self._parent = os.getppid()
        self._stop = threading.Event()
        self._previous_handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: the cancel file and parent watch still work
                pass
        if watch_parent:
            threading.Thread(target=self._watch_parent, name="parent-watch", daemon=True).start()

    def _on_signal(self, signum, _frame) -> None:
        self.reason = f"signal {signal.Signals(signum).name}"

    def _parent_alive(self) -> bool:
        if os.name == "nt":
            import psutil
            return psutil.pid_exists(self._parent)
        return os.getppid() == self._parent

    def _watch_parent(self) -> None:
        while not self._stop.wait(self.PARENT_POLL_S):
            if not self._parent_alive():
                self.reason = "the parent process exited"
                return

    def requested(self) -> bool:
        if self.reason is None and self.cancel_file.exists():
            self.reason = f"{self.cancel_file} exists"
        return self.reason is not None

    def check(self) -> None:
        if self.requested():
            raise Cancelled(self.reason)

    def close(self) -> None:
        self._stop.set()
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
