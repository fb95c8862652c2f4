#!/usr/bin/env python3
"""The project's one task runner (standard library only).

    python3 build.py setup [--cuda cu128]   create .venv/ and install torch, the backend and test deps
    python3 build.py test [PYTEST ARGS]     set up if needed, then run pytest over tests/
    python3 build.py demo                   set up if needed, then run the headless Blender demo
    python3 build.py zip                    build the Blender extension zip into dist/

Set-up is idempotent: a stamp in .venv/ records what was installed, and a re-run with nothing to do
returns in seconds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# standard library only, like this file: one torch pin and CUDA list for build.py and the add-on's installer
from wonderland_blender.torch_choice import CUDA_BUILDS, PYTORCH_INDEX, TORCH_VERSION

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".wonderland-setup.json"
PYTHON_VERSION = (3, 11)
TORCH = f"torch=={TORCH_VERSION}"
CUDA_CHOICES = tuple(tag for tag, _, _ in CUDA_BUILDS)


def say(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def fail(msg: str, code: int = 1) -> "NoReturn":  # noqa: F821
    print(f"[build] error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_python311() -> list[str]:
    """A command that starts Python 3.11: bpy==5.0.1 exists only for 3.11."""
    if sys.version_info[:2] == PYTHON_VERSION:
        return [sys.executable]
    if shutil.which("python3.11"):
        return [shutil.which("python3.11")]
    if os.name == "nt" and shutil.which("py"):
        return [shutil.which("py"), "-3.11"]
    fail("Python 3.11 is needed (bpy==5.0.1 is built for 3.11 only). Install it and re-run "
         "'python3.11 build.py setup'.")


def run(cmd: list[str], **kw) -> None:
    say("$ " + " ".join(str(c) for c in cmd))
    result = subprocess.run(cmd, cwd=ROOT, **kw)
    if result.returncode != 0:
        fail(f"command failed with exit code {result.returncode}: {' '.join(map(str, cmd))}")


def wanted_stamp(cuda: str | None) -> dict:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return {"pyproject": digest, "torch": TORCH, "cuda": cuda, "python": list(PYTHON_VERSION)}


def read_stamp() -> dict | None:
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return None


def setup(cuda: str | None = None, quiet_if_done: bool = False) -> None:
    stamp = read_stamp()
    if cuda is None and stamp is not None:
        cuda = stamp.get("cuda")  # keep the torch build the user chose last time
    want = wanted_stamp(cuda)
    if stamp == want and venv_python().exists():
        if not quiet_if_done:
            say(f"setup is up to date ({VENV})")
        return
    if not venv_python().exists():
        say(f"creating {VENV} with Python 3.11")
        run([*find_python311(), "-m", "venv", str(VENV)])
    py = str(venv_python())
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check"]
    torch_cmd = pip + [TORCH]
    if cuda:
        torch_cmd += ["--index-url", PYTORCH_INDEX + cuda]
    say(f"installing {TORCH} ({cuda or 'CPU'} build) first, so nothing else picks a torch for us")
    run(torch_cmd)
    say("installing the backend (editable) with its pinned dependencies and the test tools")
    run(pip + ["-e", ".[test]"])
    STAMP.write_text(json.dumps(want))
    say("setup done")


def test(pytest_args: list[str]) -> int:
    setup(quiet_if_done=True)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    cmd = [str(venv_python()), "-m", "pytest", *(pytest_args or ["tests"])]
    say("$ " + " ".join(cmd))
    code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if code == 5:
        fail("pytest collected no tests: that is a failure, not a pass", 1)
    return code


def run_tool(name: str) -> int:
    """Set up if needed, then run tools/<name> with the venv's Python."""
    setup(quiet_if_done=True)
    return subprocess.run([str(venv_python()), str(ROOT / "tools" / name)], cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)
    p_setup = sub.add_parser("setup", help="create .venv/ and install everything")
    p_setup.add_argument("--cuda", choices=CUDA_CHOICES,
                         help="install a CUDA build of torch (NVIDIA GPUs) instead of the CPU one")
    sub.add_parser("test", help="set up if needed, then run the tests (extra args go to pytest)")
    sub.add_parser("demo", help="set up if needed, then run the headless Blender demo")
    sub.add_parser("zip", help="build the Blender extension zip into dist/")
    args, rest = parser.parse_known_args(argv)
    if args.task == "test":
        return test(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.task == "setup":
        setup(args.cuda)
        return 0
    if args.task == "demo":
        return run_tool("demo.py")
    return run_tool("build_zip.py")


if __name__ == "__main__":
    sys.exit(main())
