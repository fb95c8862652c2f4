"""Which torch build Install backend puts into the backend's environment: a CUDA build for an NVIDIA GPU, the
standard wheel on Apple silicon (it carries MPS), or the CPU build elsewhere.

No bpy here: `choose_torch` is a pure function of the facts (OS, machine, NVIDIA driver version, the user's
override), so every OS's branch is tested on any machine; `detect_nvidia_driver` is the one look at the machine.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

TORCH_VERSION = "2.13.0"   # also what build.py installs
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
MACOS_MIN = "14.0"         # torch's macOS wheels are macosx_14_0_arm64
# CUDA builds of torch, oldest first, with the NVIDIA driver each needs (CUDA toolkit release notes, "CUDA
# Toolkit and Corresponding Driver Versions", GA column) on Linux and on Windows.
CUDA_BUILDS = (
    ("cu126", "12.6", {"Linux": "560.28.03", "Windows": "560.76"}),
    ("cu128", "12.8", {"Linux": "570.26", "Windows": "570.65"}),
    ("cu130", "13.0", {"Linux": "580.65.06", "Windows": "580.88"}),
)
# Older CUDA 12 drivers run the oldest 12.x build through CUDA's minor-version compatibility.
CUDA12_COMPAT_DRIVER = {"Linux": "525.60.13", "Windows": "528.33"}
OVERRIDES = ("auto", "cpu", "macos", *(tag for tag, _, _ in CUDA_BUILDS))
NVIDIA_SMI_TIMEOUT_S = 10


class TorchChoiceError(ValueError):
    """No torch build fits this machine or the override asked for; the message says what to do."""


@dataclass(frozen=True)
class TorchChoice:
    kind: str              # "cuda", "mps" or "cpu": the device the backend will use
    build: str             # "cu128", "macos", "cpu"
    index_url: str | None  # None: the default package index (PyPI)
    reason: str            # one sentence for the user: what was chosen and why

    @property
    def requirement(self) -> str:
        return f"torch=={TORCH_VERSION}"

    def pip_args(self) -> list[str]:
        """What follows `pip install` to install this build."""
        return [self.requirement] + (["--index-url", self.index_url] if self.index_url else [])


def _version(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        raise TorchChoiceError(f"the {what} version {text!r} is not numbers separated by dots") from None


def _cuda(tag: str, why: str) -> TorchChoice:
    cuda = next(version for t, version, _ in CUDA_BUILDS if t == tag)
    return TorchChoice("cuda", tag, PYTORCH_INDEX + tag, f"torch {TORCH_VERSION} CUDA {cuda} build ({why})")


def _cpu(why: str) -> TorchChoice:
    return TorchChoice("cpu", "cpu", PYTORCH_INDEX + "cpu", f"torch {TORCH_VERSION} CPU build ({why})")


def _auto_cuda(system: str, driver: str) -> TorchChoice | None:
    """The newest CUDA build the driver runs, or None when it is too old for any."""
    have = _version(driver, "NVIDIA driver")
    for tag, _, needs in reversed(CUDA_BUILDS):
        if have >= _version(needs[system], "NVIDIA driver"):
            return _cuda(tag, f"NVIDIA driver {driver} found")
    if have >= _version(CUDA12_COMPAT_DRIVER[system], "NVIDIA driver"):
        tag = CUDA_BUILDS[0][0]
        return _cuda(tag, f"NVIDIA driver {driver} found, older than this build's {CUDA_BUILDS[0][2][system]}: "
                          "it runs through CUDA minor-version compatibility; update the driver if generation fails")
    return None


def choose_torch(system: str, machine: str, nvidia_driver: str | None, override: str = "auto",
                 macos_version: str | None = None) -> TorchChoice:
    """The torch build for a machine: `system` as platform.system() ("Linux", "Darwin", "Windows"), `machine` as
    platform.machine(), `nvidia_driver` as `detect_nvidia_driver()` found it (None: no NVIDIA GPU), `override`
    one of OVERRIDES (the add-on preference; "auto" decides from the facts), `macos_version` as
    platform.mac_ver()[0] on a Mac (None: not known)."""
    if override not in OVERRIDES:
        raise TorchChoiceError(f"unknown torch build {override!r}: choose one of {', '.join(OVERRIDES)}")
    arch = machine.lower()
    if system == "Darwin":
        if arch not in ("arm64", "aarch64"):
            raise TorchChoiceError(f"torch {TORCH_VERSION} has no build for Intel Macs ({machine}): the backend "
                                   f"needs a Mac with Apple silicon (M1 or newer) and macOS {MACOS_MIN} or newer")
        if macos_version and _version(macos_version, "macOS")[:2] < _version(MACOS_MIN, "macOS")[:2]:
            raise TorchChoiceError(f"torch {TORCH_VERSION} needs macOS {MACOS_MIN} or newer and this Mac runs "
                                   f"macOS {macos_version}: update macOS")
        if override not in ("auto", "macos"):
            raise TorchChoiceError(f"the {override} torch build does not exist for macOS: choose Auto or macOS "
                                   "(the standard wheel runs on the Apple GPU through MPS)")
        return TorchChoice("mps", "macos", None, f"torch {TORCH_VERSION} standard macOS build, using the Apple GPU "
                                                 "through MPS (Apple silicon)")
    if system not in ("Linux", "Windows"):
        raise TorchChoiceError(f"torch has no builds for {system}: the backend runs on Linux, Windows and macOS")
    if system == "Windows" and arch not in ("amd64", "x86_64"):
        raise TorchChoiceError(f"torch {TORCH_VERSION} has no build for Windows on {machine}: the backend needs "
                               "Windows on x86_64")
    if override == "macos":
        raise TorchChoiceError(f"the macOS torch build is for Macs only; this is {system}: choose Auto, CPU or a "
                               "CUDA build")
    if override == "cpu":
        return _cpu("chosen in the preferences")
    if override != "auto":
        return _cuda(override, "chosen in the preferences")
    if nvidia_driver is None:
        return _cpu("no NVIDIA GPU found")
    choice = _auto_cuda(system, nvidia_driver)
    if choice is None:
        return _cpu(f"NVIDIA driver {nvidia_driver} is too old for CUDA 12; update it to "
                    f"{CUDA_BUILDS[0][2][system]} or newer and install again to use the GPU")
    return choice


def detect_nvidia_driver() -> str | None:
    """The NVIDIA driver version nvidia-smi reports for the first GPU, or None without one (or without nvidia-smi,
    which comes with the driver on Linux and Windows)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=NVIDIA_SMI_TIMEOUT_S, stdin=subprocess.DEVNULL,
                              creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))  # no console flash
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.split()
    return lines[0] if done.returncode == 0 and lines else None
