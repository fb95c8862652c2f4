"""generate's checks, kept beside the command: its options before anything loads, its result before it is
called a success (an empty or non-finite scene never is)."""
from __future__ import annotations

import math

import torch

from backend.errors import InputError
from backend.prior_scale import check_ground_z, check_subject_distance

MAX_STEPS = 1000          # the CogVideoX schedulers' training timesteps: more inference steps do not exist
MAX_PREVIEWS = 1000
MAX_PREVIEW_SIZE = 4096
DECODE_MIN_SIDE = 1024    # a photo is decoded reduced, its shorter side kept >= this (the paper model: 720x480)


class ModelFailure(RuntimeError):
    """The model produced no usable Gaussians from valid input: exit code 1, naming the model."""


def check_args(args) -> None:
    """Bad options fail fast, before the image, the cameras or the model are loaded."""
    bounds = {"steps": (1, MAX_STEPS), "previews": (0, MAX_PREVIEWS), "preview_size": (1, MAX_PREVIEW_SIZE),
              "max_gaussians": (1, None)}
    for name, (low, high) in bounds.items():
        value = getattr(args, name)
        if value is None:
            continue
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f"{low} or more"
            raise InputError(f"--{name.replace('_', '-')} {value} is out of range", f"use a number in {span}")
    for name in ("prune_opacity", "guidance", "controlnet_fraction", "guidance_fraction"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise InputError(f"--{name.replace('_', '-')} {value} is not a finite number", "give a number")
    check_subject_distance(getattr(args, "subject_distance", None))
    if getattr(args, "no_ground", False) and getattr(args, "ground_z", None) is not None:
        raise InputError(f"--ground-z {args.ground_z} and --no-ground both given", "give one of them")
    check_ground_z(getattr(args, "ground_z", None))
    if args.prune_opacity is not None and not 0.0 <= args.prune_opacity <= 1.0:
        raise InputError(f"--prune-opacity {args.prune_opacity} is out of range",
                         "opacities lie in 0..1: use e.g. 0.005")


def ground_z(args) -> float | None:
    """The ground's world Z for generate: --ground-z, 0 (Blender's floor grid) by default, None with --no-ground."""
    if getattr(args, "no_ground", False):
        return None
    value = getattr(args, "ground_z", None)
    return 0.0 if value is None else value


def decode_min_side(args) -> int:
    """The shorter side a large photo is decoded at, at least: never below the detail layer's size."""
    return max(DECODE_MIN_SIDE, getattr(args, "detail_size", None) or 0)


def check_result(gaussians, args, model_source: str) -> None:
    """Raise unless the scene holds at least one Gaussian with only finite values.

    Options that legitimately empty it (--prune-opacity) are bad input; a model whose output is empty or
    non-finite under its own defaults is broken, and the failure names it."""
    fields = {"means": gaussians.means, "log_scales": gaussians.log_scales, "quats": gaussians.quats,
              "opacity_logits": gaussians.opacity_logits, "sh0": gaussians.sh0, "sh_rest": gaussians.sh_rest}
    bad = [name for name, t in fields.items() if t.numel() and not torch.isfinite(t).all()]
    if bad:
        raise ModelFailure(f"the model {model_source} produced non-finite values ({', '.join(bad)}): "
                           "its weights are damaged or it was trained unstably; export or download it again")
    if len(gaussians):
        return
    if args.prune_opacity is not None:
        raise InputError(f"--prune-opacity {args.prune_opacity} left no Gaussians",
                         "lower it (the model's default keeps those above its own threshold)")
    raise ModelFailure(f"the model {model_source} produced no usable Gaussians (all were non-finite or "
                       "fully transparent): its weights are damaged or untrained; export or download it again")
