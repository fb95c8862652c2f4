"""antimatter15's .splat (the WebGL viewer's format): 32 bytes per Gaussian, no header, no SH beyond DC.

Per Gaussian: position (3 float32), linear scale (3 float32), RGBA (4 uint8: display colour 0.5 + C0·f_dc
and opacity), rotation (4 uint8: w x y z mapped from [-1, 1] as q·128 + 128). Files keep the frame of the
PLY they were made from.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..plyio import SH_C0, ReadResult, Splats
from . import FormatError, finite_result, logit, read_bytes

RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])


def read_splat(path: str | os.PathLike) -> ReadResult:
    """Gaussians of a .splat file; rows with non-finite values (or zero scales) are dropped and counted."""
    path = Path(path)
    raw = read_bytes(path)
    if len(raw) % RECORD.itemsize:
        raise FormatError(f"{path.name} is {len(raw)} bytes, not a whole number of 32-byte .splat records: "
                          "it is truncated or not an antimatter15 .splat file.")
    rows = np.frombuffer(raw, RECORD)
    n = len(rows)
    quats = (rows["rotation"].astype(np.float32) - 128) / 128
    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    quats = np.where(norm > 0, quats / np.where(norm > 0, norm, 1), np.array([1, 0, 0, 0], np.float32))
    rgba = rows["rgba"].astype(np.float32) / 255
    with np.errstate(divide="ignore"):
        log_scales = np.log(rows["scale"])
    splats = Splats(means=rows["position"].copy(), f_dc=(rgba[:, :3] - np.float32(0.5)) / np.float32(SH_C0),
                    f_rest=np.zeros((n, 0, 3), np.float32), opacity_logits=logit(rgba[:, 3]),
                    log_scales=log_scales, quats=quats.astype(np.float32))
    return finite_result(splats)
