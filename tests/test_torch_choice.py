"""Install backend's torch build for each OS and GPU (wonderland_blender.torch_choice: no bpy), and the NVIDIA
driver look-up through a real nvidia-smi stand-in on PATH."""
from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import pytest

from wonderland_blender.torch_choice import (OVERRIDES, PYTORCH_INDEX, TORCH_VERSION, TorchChoiceError, choose_torch,
                                             detect_nvidia_driver)

ROOT = Path(__file__).resolve().parents[1]
TORCH = f"torch=={TORCH_VERSION}"


@pytest.mark.parametrize("system, machine", [("Linux", "x86_64"), ("Windows", "AMD64"), ("Linux", "aarch64")])
def test_no_nvidia_gpu_gets_the_cpu_build(system, machine):
    choice = choose_torch(system, machine, None)
    assert (choice.kind, choice.build) == ("cpu", "cpu")
    assert choice.pip_args() == [TORCH, "--index-url", PYTORCH_INDEX + "cpu"]
    assert "CPU build" in choice.reason and "no NVIDIA GPU found" in choice.reason


@pytest.mark.parametrize("system, driver, build", [
    ("Linux", "580.95.05", "cu130"), ("Linux", "580.65.06", "cu130"), ("Linux", "575.51.03", "cu128"),
    ("Linux", "565.57.01", "cu126"), ("Linux", "535.230.02", "cu126"),
    ("Windows", "581.57", "cu130"), ("Windows", "580.65", "cu128"), ("Windows", "572.16", "cu128"),
    ("Windows", "560.94", "cu126"), ("Windows", "528.33", "cu126"),
])
def test_an_nvidia_gpu_gets_the_newest_cuda_build_its_driver_runs(system, driver, build):
    choice = choose_torch(system, "x86_64" if system == "Linux" else "AMD64", driver)
    assert (choice.kind, choice.build, choice.index_url) == ("cuda", build, PYTORCH_INDEX + build)
    assert choice.pip_args() == [TORCH, "--index-url", PYTORCH_INDEX + build]
    assert f"NVIDIA driver {driver} found" in choice.reason


def test_an_unreadable_driver_version_is_named():
    with pytest.raises(TorchChoiceError, match="NVIDIA driver version 'N/A' is not numbers"):
        choose_torch("Linux", "x86_64", "N/A")


def test_a_driver_below_cuda_12_6_is_said_to_run_by_compatibility():
    assert "minor-version compatibility" in choose_torch("Linux", "x86_64", "535.230.02").reason
    assert "compatibility" not in choose_torch("Linux", "x86_64", "560.35.03").reason


@pytest.mark.parametrize("system, driver, update_to", [("Linux", "470.256.02", "560.28.03"),
                                                       ("Windows", "474.30", "560.76")])
def test_a_driver_too_old_for_cuda_12_falls_back_to_cpu_and_says_to_update(system, driver, update_to):
    choice = choose_torch(system, "x86_64", driver)
    assert choice.kind == "cpu"
    assert f"NVIDIA driver {driver} is too old" in choice.reason and update_to in choice.reason


@pytest.mark.parametrize("machine", ["arm64", "aarch64"])
def test_apple_silicon_gets_the_standard_wheel_with_mps(machine):
    choice = choose_torch("Darwin", machine, None)
    assert (choice.kind, choice.build, choice.index_url) == ("mps", "macos", None)
    assert choice.pip_args() == [TORCH] and "MPS" in choice.reason
    assert choose_torch("Darwin", machine, None, "macos") == choice


def test_a_mac_older_than_torch_needs_is_told_to_update():
    with pytest.raises(TorchChoiceError, match="needs macOS 14.0 or newer and this Mac runs macOS 13.6.1: update"):
        choose_torch("Darwin", "arm64", None, macos_version="13.6.1")
    assert choose_torch("Darwin", "arm64", None, macos_version="14.0").kind == "mps"
    assert choose_torch("Darwin", "arm64", None, macos_version="26.1").kind == "mps"


def test_the_preference_overrides_what_the_machine_suggests():
    cpu = choose_torch("Linux", "x86_64", "580.95.05", "cpu")
    assert (cpu.kind, cpu.build) == ("cpu", "cpu") and "chosen in the preferences" in cpu.reason
    cuda = choose_torch("Windows", "AMD64", None, "cu128")
    assert (cuda.kind, cuda.build, cuda.index_url) == ("cuda", "cu128", PYTORCH_INDEX + "cu128")
    assert "CUDA 12.8" in cuda.reason and "chosen in the preferences" in cuda.reason


@pytest.mark.parametrize("system, machine, override, message", [
    ("Darwin", "x86_64", "auto", "no build for Intel Macs"),
    ("Darwin", "arm64", "cu128", "cu128 torch build does not exist for macOS"),
    ("Darwin", "arm64", "cpu", "cpu torch build does not exist for macOS"),
    ("Linux", "x86_64", "macos", "for Macs only; this is Linux"),
    ("Windows", "ARM64", "auto", "no build for Windows on ARM64"),
    ("FreeBSD", "amd64", "auto", "no builds for FreeBSD"),
    ("Linux", "x86_64", "rocm", "unknown torch build 'rocm'"),
])
def test_impossible_choices_say_what_to_do(system, machine, override, message):
    with pytest.raises(TorchChoiceError, match=message):
        choose_torch(system, machine, None, override)


def test_every_override_is_a_choice_somewhere():
    for override in OVERRIDES:
        system, machine = ("Darwin", "arm64") if override in ("auto", "macos") else ("Linux", "x86_64")
        assert choose_torch(system, machine, None, override).requirement == TORCH


def _fake_nvidia_smi(folder: Path, body: str) -> None:
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


@pytest.mark.skipif(os.name == "nt", reason="the stand-in nvidia-smi is a shell script")
@pytest.mark.parametrize("body, expected", [
    ('[ "$1" = "--query-gpu=driver_version" ] && printf "580.95.05\\n580.95.05\\n"', "580.95.05"),
    ("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9", None),
    ("exit 0", None),
])
def test_the_driver_version_comes_from_nvidia_smi(tmp_path, monkeypatch, body, expected):
    _fake_nvidia_smi(tmp_path, body)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_nvidia_driver() == expected


def test_no_nvidia_smi_means_no_nvidia_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_nvidia_driver() is None


def test_build_py_installs_the_same_torch():
    spec = importlib.util.spec_from_file_location("wonderland_build_py", ROOT / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.TORCH == TORCH and build.CUDA_CHOICES == tuple(o for o in OVERRIDES if o.startswith("cu"))
