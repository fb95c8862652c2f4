"""Shared test set-up: small thread counts (2-core machines) and a seed per test."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = Path(sys.executable)


@pytest.fixture
def run_backend(tmp_path):
    """Run `python -m backend ARGS` in a child process, as the add-on does; returns CompletedProcess."""
    import subprocess

    def _run(*args, timeout=300, check=None):
        result = subprocess.run([str(VENV_PYTHON), "-m", "backend", *map(str, args)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=timeout,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if check is not None:
            assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
        return result

    return _run


def load_benchmark(name: str, monkeypatch):
    """benchmarks/<name>.py as a module, imported as when the script runs (its folder on the path)."""
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench_quality(monkeypatch):
    return load_benchmark("bench_quality", monkeypatch)


@pytest.fixture
def bench_checkpoints(monkeypatch):
    return load_benchmark("bench_checkpoints", monkeypatch)


@pytest.fixture
def bench_scene_scale(monkeypatch):
    return load_benchmark("bench_scene_scale", monkeypatch)


@pytest.fixture(scope="module")
def bench_models():
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield load_benchmark("bench_models", monkeypatch)
