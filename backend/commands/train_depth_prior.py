"""`python -m backend train-depth-prior`: train the depth prior, the photo's metric depth net
(backend/training/train_depth_prior.py). E.g., on scene folders with depth maps, into a metric model folder:
  --data data/train_v2 data/train --size 96x64 --batch-size 16 --steps 3000 --out RUN --export MODEL_DIR
"""
from __future__ import annotations

import argparse

from backend.commands.training_options import (add_part_training_arguments, data_options, parse_size, part_config,
                                               run_training, train_config)
from backend.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    add_part_training_arguments(p, part="depth prior",
                                config_file="a DepthPriorConfig JSON file (backend/models/depth_prior.py)",
                                export="write the trained prior into this metric model folder (depth_prior.safetensors "
                                       "and wonderland.json's \"depth_prior\" entry)")
    p.add_argument("--size", type=parse_size, default=(96, 64), metavar="WxH",
                   help="frames are cropped and resized to this: the model's size (default 96x64, `small`)")
    p.add_argument("--frames-per-scene", type=int, default=9, help="random frames per scene and epoch (default 9)")


def run(args: argparse.Namespace) -> int:
    from backend.training.train_depth_prior import DepthPriorRun, train_depth_prior
    if not args.data:
        raise InputError("train-depth-prior needs scene folders with depth maps",
                         "pass --data ROOT... (tools/synthetic_scenes.py renders scenes with depth)")
    return run_training(train_depth_prior, DepthPriorRun(
        train=train_config(args), scenes=data_options(args), size=args.size,
        prior=part_config("depth_prior", args.model_config, args.init), frames_per_scene=args.frames_per_scene,
        init=args.init, resume=args.resume, export=args.export))
