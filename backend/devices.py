"""Device and dtype choice, with messages that say what to do when a request cannot be met."""
from __future__ import annotations

import torch

from backend.errors import InputError

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """`auto` prefers CUDA, then Apple's MPS, then the CPU."""
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but this torch sees no CUDA GPU",
                         "use --device auto or cpu, or install a CUDA build of torch "
                         "(python3 build.py setup --cuda cu128)")
    if name == "mps" and not mps_ok:
        raise InputError("--device mps was asked for, but MPS is not available here",
                         "use --device auto or cpu")
    if name not in DEVICES:
        raise InputError(f"unknown device {name!r}", f"use one of {', '.join(DEVICES)}")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on CUDA GPUs that support it, else fp32 (CPU half precision is slow)."""
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}", f"use one of {', '.join(DTYPES)}")
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
