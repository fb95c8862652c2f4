"""The backend's dependencies install from wheels alone on every Python that a supported Blender embeds (3.11 for
4.5-5.0, 3.13 for 5.1+) on Linux x86_64, macOS arm64 and Windows x86_64: no pip build on an artist's machine.

The requirements are pyproject.toml's [project] dependencies, which is what Install backend pip-installs (the
bundled backend_src/), plus the torch pin that it installs first; on 3.11 also the [test] extra that build.py
setup installs. uv resolves them for each (Python, platform) pair with wheels only, from package metadata (no
wheel is downloaded, torch's included), six pairs in parallel. pip cannot do this: it evaluates environment
markers such as `python_version` for the Python that runs it, not for the target. torch is resolved from the
package index, whose torch wheels have the same version and platforms as the CPU and CUDA builds that the
installer takes from the PyTorch index.
"""
from __future__ import annotations

import os
import subprocess
import tomllib
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wonderland_blender.torch_choice import MACOS_MIN, TORCH_VERSION

ROOT = Path(__file__).resolve().parents[1]
INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
PYTHONS = ("3.11", "3.13")
PLATFORMS = {   # what we call it: uv's --python-platform
    "Linux x86_64": "x86_64-manylinux_2_28",   # glibc 2.28, as Blender 4.5+ needs
    "macOS arm64": "aarch64-apple-darwin",
    "Windows x86_64": "x86_64-pc-windows-msvc",
}
PAIRS = [(python, platform) for platform in PLATFORMS for python in PYTHONS]
RESOLVE_TIMEOUT_S = 300


def requirements(python: str) -> list[str]:
    """What the installers install, read from pyproject.toml (the one list)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = project["optional-dependencies"]["test"] if python == "3.11" else []
    return [*project["dependencies"], f"torch=={TORCH_VERSION}", *extra]


def uv_command() -> str:
    try:
        import uv
    except ImportError:
        pytest.fail("uv is missing: it is in pyproject.toml's [test] extra; run 'python3 build.py setup'")
    return uv.find_uv_bin()


def resolve(uv: str, python: str, platform: str) -> subprocess.CompletedProcess:
    """uv's wheel-only resolution of requirements(python) for one pair; its stderr names what has no wheel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_") or k == "UV_CACHE_DIR"}
    env["MACOSX_DEPLOYMENT_TARGET"] = MACOS_MIN
    cmd = [uv, "pip", "compile", "-", "--quiet", "--no-config", "--no-header", "--no-annotate",
           "--index-url", INDEX, "--only-binary", ":all:",
           "--python-version", python, "--python-platform", PLATFORMS[platform]]
    return subprocess.run(cmd, input="\n".join(requirements(python)), capture_output=True, text=True,
                          env=env, timeout=RESOLVE_TIMEOUT_S)


@pytest.fixture(scope="module")
def resolutions() -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """All six resolutions at once; skipped (with the reason) only when the package index cannot be reached."""
    uv = uv_command()
    try:
        urllib.request.urlopen(f"{INDEX}/pip/", timeout=20).close()
    except OSError as e:
        pytest.skip(f"no network: the package index {INDEX} cannot be reached ({e})")
    with ThreadPoolExecutor(len(PAIRS)) as pool:
        futures = {pair: pool.submit(resolve, uv, *pair) for pair in PAIRS}
        return {pair: future.result() for pair, future in futures.items()}


def pinned(stdout: str) -> dict[str, str]:
    lines = [line.split(";")[0].strip() for line in stdout.splitlines() if "==" in line]
    return dict(line.split("==", 1) for line in lines)


@pytest.mark.parametrize("python, platform", PAIRS, ids=[f"py{p}-{o.split()[0]}" for p, o in PAIRS])
def test_every_dependency_has_a_wheel(resolutions, python, platform):
    done = resolutions[(python, platform)]
    if done.returncode != 0:
        pytest.fail(f"Python {python} on {platform}: the dependencies do not install from wheels alone "
                    f"(pyproject.toml):\n{done.stderr.strip()}", pytrace=False)
    got = pinned(done.stdout)
    assert got["torch"] == TORCH_VERSION
    assert got["numpy"].startswith("1.26." if python == "3.11" else "2.")
    names = {r.split(";")[0].split("==")[0].split(">=")[0].strip().lower() for r in requirements(python)}
    assert names <= set(got), f"not in the resolution: {sorted(names - set(got))}"
