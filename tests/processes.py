"""What the job tests ask the operating system about a process (Linux's /proc)."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs: it exists and is not a zombie (exited, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
