"""`wonderland.install_backend`: a virtual environment in the extension's user folder, with the backend that
ships inside the extension zip (backend_src/) pip-installed into it.

Steps run as child processes one after the other (make the venv, pip install of the torch build that
torch_choice picks for this machine, pip install of the backend, import check); their output goes to
install.log beside the venv and is read line by line into a short status text, so Blender's UI never waits
on pip. It needs Blender's online access (pip downloads torch and friends) and a Python 3.11+
to make the venv from: in a full Blender `sys.executable` is Blender's own Python; in the bpy module it is
the host's Python (often itself a venv, which `python -m venv` handles).
"""
from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bpy

from .preferences import INSTALLER_VENV, get_preferences, venv_python
from .torch_choice import TorchChoice, TorchChoiceError, choose_torch, detect_nvidia_driver

BACKEND_SRC = Path(__file__).resolve().parent / "backend_src"   # put there by tools/build_zip.py
LOG_NAME = "install.log"
MIN_PYTHON = (3, 11)
TIMER_SECONDS = 0.25
_CHECK_PYTHON = ("import sys, venv, ensurepip; "
                 f"sys.exit(0 if sys.version_info[:2] >= {MIN_PYTHON!r} else 1)")
_VERIFY = ("import backend, torch; print('backend', backend.__version__, 'torch', torch.__version__, "
           "'cuda', torch.cuda.is_available(), 'mps', torch.backends.mps.is_available())")

# (pattern in pip's output, what it means, what to do)
_KNOWN_FAILURES = (
    (re.compile(r"Failed to establish a new connection|Temporary failure in name resolution|"
                r"ConnectionError|Network is unreachable|ReadTimeoutError", re.I),
     "pip could not reach the package index", "check the internet connection or proxy (HTTPS_PROXY), then retry"),
    (re.compile(r"No space left on device", re.I),
     "the disk is full", "free some space (torch needs a few GB) and retry"),
    (re.compile(r"No matching distribution found|Could not find a version that satisfies", re.I),
     "pip found no package for this Python or platform",
     "set Backend Python to an environment you installed yourself (see the README)"),
)


class InstallError(Exception):
    """The install cannot start or failed; the message says why and what to do."""


def pip_status(line: str) -> str | None:
    """A short status text for a line of pip's output, or None for lines that say nothing new."""
    line = line.strip()
    if m := re.match(r"Collecting (\S+)", line):
        return f"Collecting {m.group(1)}"
    if m := re.match(r"Downloading (\S+?)(?:-\d[^ ]*)?\.(?:whl|tar\.gz|zip)\b.*?(\([^)]*\))?$", line):
        return f"Downloading {m.group(1)}" + (f" {m.group(2)}" if m.group(2) else "")
    if m := re.match(r"Building wheels for collected packages: (.*)|Building wheel for (\S+)", line):
        return f"Building {m.group(1) or m.group(2)}"
    if m := re.match(r"Installing collected packages: (.*)", line):
        return f"Installing {len([p for p in m.group(1).split(',') if p.strip()])} packages"
    if line.startswith("Successfully installed"):
        return "Installed"
    if line.startswith("ERROR:"):
        return line
    return None


def explain_failure(step: str, returncode: int, output: str) -> str:
    """One message for a failed step: what failed, pip's own error lines, and a hint for known causes."""
    errors = [ln.strip() for ln in output.splitlines() if ln.strip().startswith("ERROR:")]
    detail = "; ".join(errors[-3:]) or (output.strip().splitlines() or ["no output"])[-1]
    message = f"{step} failed (exit code {returncode}): {detail}"
    for pattern, meaning, fix in _KNOWN_FAILURES:
        if pattern.search(output):
            return f"{message}. Likely cause: {meaning}: {fix}."
    return message


def find_base_python() -> str:
    """A Python 3.11+ with venv and ensurepip to make the backend's environment from."""
    candidates = [sys.executable, getattr(sys, "_base_executable", ""),
                  shutil.which("python3") or "", shutil.which("python") or ""]
    tried = []
    for exe in dict.fromkeys(c for c in candidates if c):
        if not Path(exe).name.lower().startswith("python"):
            continue  # e.g. the blender binary itself in old versions
        tried.append(exe)
        try:
            ok = subprocess.run([exe, "-c", _CHECK_PYTHON], capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return exe
    raise InstallError(f"no Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ with venv and ensurepip was found (tried: "
                       f"{', '.join(tried) or 'none'}): install Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer, "
                       "or make an environment yourself and set Backend Python")


@functools.cache
def _nvidia_driver() -> str | None:
    """Looked up once a session: the preferences draw the choice on every redraw."""
    return detect_nvidia_driver()


def torch_for_this_machine(override: str) -> TorchChoice:
    """The torch build for this computer and the Torch Build preference; TorchChoiceError says why none fits."""
    driver = _nvidia_driver() if override == "auto" and platform.system() != "Darwin" else None
    return choose_torch(platform.system(), platform.machine(), driver, override, platform.mac_ver()[0] or None)


def install_steps(base_python: str, venv_dir: Path, source: Path,
                  torch: TorchChoice) -> list[tuple[str, list[str]]]:
    """(label, command) for each step; the venv is made only when it does not exist yet. torch comes first, from
    its build's index, so that the backend's `torch>=2.4` is already met and pip keeps that build. Wheels only
    (tests/test_dependency_wheels.py checks that every pin has one): an artist's machine has no compilers, so a
    missing wheel should fail at once, naming the package, rather than in a source build."""
    py = str(venv_python(venv_dir))
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", "--only-binary=:all:"]
    steps = []
    if not venv_python(venv_dir).is_file():
        steps.append(("Making the virtual environment", [base_python, "-m", "venv", str(venv_dir)]))
    steps.append((f"pip install of {torch.reason}", pip + torch.pip_args()))
    steps.append(("pip install of the backend", pip + [str(source)]))
    steps.append(("Checking the backend", [py, "-c", _VERIFY]))
    return steps


class InstallRun:
    """Runs the steps one after another without blocking: call `poll()` from a timer until it returns True."""

    def __init__(self, steps: list[tuple[str, list[str]]], log_path: Path, summary: str = ""):
        self.steps = list(steps)
        self.log_path = Path(log_path)
        self.summary = summary   # what this install chose, said at its start and first in the log
        self.status = "Starting"
        self.error: str | None = None
        self.proc: subprocess.Popen | None = None
        self._index = -1
        self._offset = 0
        self._partial = ""
        self._output: list[str] = []   # the current step's output, for the failure message
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text(f"# {summary}\n" if summary else "", encoding="utf-8")
        self._next()

    @property
    def finished(self) -> bool:
        return self.proc is None

    def _next(self) -> None:
        self._index += 1
        if self._index >= len(self.steps):
            self.proc, self.status = None, "Done"
            return
        label, cmd = self.steps[self._index]
        self.status, self._output = label, []
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"$ {subprocess.list2cmdline(cmd)}\n")
            log.flush()
            try:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=dict(os.environ, PYTHONUNBUFFERED="1", PIP_NO_INPUT="1"))
            except OSError as e:
                self.proc, self.error = None, f"{label} could not start: {e}"

    def _read_lines(self) -> None:
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as log:
            log.seek(self._offset)
            data = log.read()
            self._offset = log.tell()
        lines = (self._partial + data).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._output.append(line)
            status = pip_status(line)
            if status is not None:
                self.status = status

    def poll(self) -> bool:
        """Read new output, move to the next step when one ends; True once everything ended (see `error`)."""
        if self.proc is None:
            return True
        self._read_lines()
        rc = self.proc.poll()
        if rc is None:
            return False
        self._read_lines()
        if rc != 0:
            label = self.steps[self._index][0]
            self.proc = None
            self.error = explain_failure(label, rc, "\n".join(self._output + [self._partial]))
            return True
        self._next()
        return self.proc is None

    def cancel(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc, self.error = None, "cancelled"


_run: InstallRun | None = None


def install_status() -> tuple[bool, str]:
    """(running, text) of the current or last install, for the preferences to draw."""
    if _run is None:
        return False, ""
    return not _run.finished, (_run.error or _run.status)


def prepare_install() -> InstallRun:
    """Check that an install can run here and start it; InstallError says why not (first whether torch has a
    build for this computer at all, which no setting of Blender's changes)."""
    prefs = get_preferences()
    try:
        torch = torch_for_this_machine(prefs.torch_build if prefs is not None else "auto")
    except TorchChoiceError as e:
        raise InstallError(f"{e} (Preferences ▸ Add-ons ▸ Wonderland ▸ Torch Build)") from None
    if not bpy.app.online_access:
        raise InstallError("Blender's online access is off, and pip needs to download the backend's packages: "
                           "turn on Preferences ▸ System ▸ Network ▸ Allow Online Access, or install the backend "
                           "yourself and set Backend Python")
    try:
        user_dir = Path(bpy.utils.extension_path_user(__package__, create=True))
    except ValueError:
        raise InstallError("Install backend works for the add-on installed as an extension; in a source checkout "
                           "run 'python3 build.py setup' (its .venv is found automatically)") from None
    if not (BACKEND_SRC / "pyproject.toml").is_file():
        raise InstallError(f"the extension has no bundled backend ({BACKEND_SRC} is missing): reinstall it from "
                           "the release zip")
    venv_dir = user_dir / INSTALLER_VENV
    return InstallRun(install_steps(find_base_python(), venv_dir, BACKEND_SRC, torch), user_dir / LOG_NAME,
                      summary=f"Installing {torch.reason}")


class WONDERLAND_OT_install_backend(bpy.types.Operator):
    """Make a Python environment for the backend and pip-install it with torch (downloads a few GB)"""
    bl_idname = "wonderland.install_backend"
    bl_label = "Install Backend"

    _timer = None

    @classmethod
    def poll(cls, context):
        if _run is not None and not _run.finished:
            cls.poll_message_set("The backend is being installed")
            return False
        return True

    def _start(self) -> bool:
        global _run
        try:
            _run = prepare_install()
        except InstallError as e:
            self.report({'ERROR'}, str(e))
            return False
        self.report({'INFO'}, f"Install backend: {_run.summary}")
        return True

    def _end(self) -> set[str]:
        if _run.error:
            self.report({'ERROR'}, f"Install backend: {_run.error} (log: {_run.log_path})")
            return {'CANCELLED'}
        self.report({'INFO'}, "The backend is installed: Generate is ready")
        return {'FINISHED'}

    def execute(self, context):
        """Synchronous (background mode, scripts)."""
        if not self._start():
            return {'CANCELLED'}
        last = None
        while not _run.poll():
            if _run.status != last:
                print(f"Wonderland install: {_run.status}", flush=True)
                last = _run.status
            time.sleep(TIMER_SECONDS)
        return self._end()

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        if not self._start():
            return {'CANCELLED'}
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_SECONDS, window=context.window)
        wm.modal_handler_add(self)
        return {'RUNNING_MODAL'}

    def modal(self, context, event):
        if event.type != 'TIMER':
            return {'PASS_THROUGH'}
        done = _run.poll()
        context.workspace.status_text_set(None if done else f"Installing the Wonderland backend: {_run.status}")
        for window in context.window_manager.windows:
            for area in window.screen.areas:
                area.tag_redraw()
        if not done:
            return {'PASS_THROUGH'}
        context.window_manager.event_timer_remove(self._timer)
        return self._end()

    def cancel(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
        if _run is not None:
            _run.cancel()


def register():
    bpy.utils.register_class(WONDERLAND_OT_install_backend)


def unregister():
    if _run is not None and not _run.finished:
        _run.cancel()
    bpy.utils.unregister_class(WONDERLAND_OT_install_backend)
