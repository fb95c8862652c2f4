"""`python -m backend train-vae`: train a small CogVideoX-style VAE for small video configs
(backend/training/train_vae.py). Paper-scale configs use CogVideoX-5B-I2V's VAE and are refused.

Example: --model-config tiny --data scenes/ --out runs/vae --steps 20000 --lr 1e-4 --export models/tiny
"""
from __future__ import annotations

import argparse

from backend.commands.training_options import add_training_arguments, data_options, run_training, train_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    add_training_arguments(p, model_configs="tiny | small | paper | a VideoModelConfig JSON file", lr=1e-4, lr_min=0.0,
                           export="write the trained VAE into this model folder (vae/)")
    p.add_argument("--reconstruction", choices=("l1", "mse"), default="l1", help="reconstruction loss")
    p.add_argument("--kl-weight", type=float, default=1e-6, help="weight of the per-element KL term")
    p.add_argument("--frames", type=int, help="clip frames, 1 + 8k (default: the model config's)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="clip size in pixels, multiples of 8 (default: the model config's)")


def run(args: argparse.Namespace) -> int:
    from backend.training.train_vae import VAERun, train_vae
    from backend.training.train_video import video_model_config

    height, width = args.size or (None, None)
    return run_training(train_vae, VAERun(
        train=train_config(args), model=video_model_config(args.model_config), model_name=args.model_config,
        scenes=data_options(args), reconstruction=args.reconstruction, kl_weight=args.kl_weight,
        frames=args.frames, height=height, width=width, resume=args.resume, export=args.export))
