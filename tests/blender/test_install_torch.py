"""Install backend's torch build inside real bpy: the Torch Build preference lists every build torch_choice
knows and decides what Install backend installs; Auto follows the machine (here: no NVIDIA GPU, so CPU)."""
from __future__ import annotations

import platform
import sys
import time

import bpy
import pytest

from wonderland_blender import ops_install, preferences
from wonderland_blender.torch_choice import OVERRIDES, PYTORCH_INDEX, TorchChoiceError


def test_the_preference_offers_every_torch_build(addon):
    prefs = preferences.get_preferences()
    items = prefs.bl_rna.properties["torch_build"].enum_items
    assert [item.identifier for item in items] == list(OVERRIDES)
    assert prefs.torch_build == "auto"
    assert items["cu128"].name == "CUDA 12.8" and "570.26+ on Linux" in items["cu128"].description


@pytest.mark.skipif(platform.system() != "Linux", reason="the stand-in nvidia-smi is a shell script")
def test_the_preference_decides_what_install_backend_installs(addon, tmp_path, monkeypatch):
    prefs = preferences.get_preferences()
    monkeypatch.setenv("PATH", str(tmp_path))   # no nvidia-smi: no NVIDIA GPU
    ops_install._nvidia_driver.cache_clear()
    try:
        auto = ops_install.torch_for_this_machine(prefs.torch_build)
        assert (auto.kind, auto.index_url) == ("cpu", PYTORCH_INDEX + "cpu") and "no NVIDIA GPU" in auto.reason
        prefs.torch_build = "cu128"
        chosen = ops_install.torch_for_this_machine(prefs.torch_build)
        assert (chosen.kind, chosen.build) == ("cuda", "cu128") and "chosen in the preferences" in chosen.reason
        steps = ops_install.install_steps("python3", tmp_path / "venv", ops_install.BACKEND_SRC, chosen)
        assert steps[1][1][-3:] == chosen.pip_args() and steps[1][0] == f"pip install of {chosen.reason}"
        assert all("--only-binary=:all:" in steps[i][1] for i in (1, 2))   # no source builds on artists' machines
        prefs.torch_build = "macos"
        with pytest.raises(TorchChoiceError, match="for Macs only"):
            ops_install.torch_for_this_machine(prefs.torch_build)
    finally:
        ops_install._nvidia_driver.cache_clear()


def test_the_install_log_starts_with_what_was_chosen(addon, tmp_path):
    run = ops_install.InstallRun([("only", [sys.executable, "-c", "print('hi')"])], tmp_path / "install.log",
                                 summary="Installing torch 2.13.0 CPU build (no NVIDIA GPU found)")
    while not run.poll():
        time.sleep(0.02)
    assert run.error is None
    assert (tmp_path / "install.log").read_text().startswith("# Installing torch 2.13.0 CPU build")


def test_install_backend_refuses_a_torch_build_this_computer_cannot_run(addon):
    preferences.get_preferences().torch_build = "macos" if platform.system() != "Darwin" else "cpu"
    with pytest.raises(RuntimeError, match="(for Macs only|does not exist for macOS).*Torch Build"):
        bpy.ops.wonderland.install_backend()
    assert ops_install.install_status() == (False, "")
