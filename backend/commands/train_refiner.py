"""`python -m backend train-refiner`: train the detail layer's refiner with the LaLRM frozen
(backend/training/train_refiner.py). E.g., on the caches train-lrm built from scene folders with depth:
  --model backend/weights/default --latent-cache CACHE [GENERATED] --depth-weight 0.1 --steps 2000 --out RUN
  --export MODEL_DIR
"""
from __future__ import annotations

import argparse
from pathlib import Path

from backend.commands.training_options import add_part_training_arguments, part_config, run_training, train_config
from backend.errors import InputError
from backend.render import DIFFERENTIABLE_BACKENDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    add_part_training_arguments(p, part="refiner", config_file="a RefinerConfig JSON file (backend/models/refiner.py)",
                                export="write the trained refiner into this model folder (refiner.safetensors and "
                                       "wonderland.json's \"refiner\" entry)")
    p.set_defaults(val_fraction=None, val_clips=None, validate_every=None)   # see run()
    p.add_argument("--model", default="default",
                   help="model folder (or shipped model name) whose LaLRM, frozen, the refiner corrects")
    p.add_argument("--latent-cache", metavar="PATH", nargs="+", required=True,
                   help="latent caches that store frames (and depth: train-lrm --latent-cache builds them)")
    p.add_argument("--views", type=int, default=4, help="views rendered per clip and step, the input view among them")
    p.add_argument("--renderer", choices=DIFFERENTIABLE_BACKENDS, default="auto",
                   help="auto = gsplat on CUDA, our torch rasterizer elsewhere")
    p.add_argument("--ssim-weight", type=float, default=0.0, help="weight of (1 - SSIM)")
    p.add_argument("--depth-weight", type=float, default=0.1,
                   help="weight of the log-depth L1 against the caches' depth maps; 0 = photometric only")


def model_folder(name: str) -> Path:
    """--model as a folder: a path, or the name of a shipped model."""
    from backend.pipelines.wonderland import SHIPPED_DIR
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if (SHIPPED_DIR / name).is_dir():
        return SHIPPED_DIR / name
    raise InputError(f"--model {name!r} is neither a folder nor a shipped model",
                     "give a model folder with a trained LaLRM, e.g. backend/weights/default")


def run(args: argparse.Namespace) -> int:
    from backend.training.losses import LossWeights
    from backend.training.train_refiner import RefinerRun, train_refiner
    if args.data:
        raise InputError("train-refiner reads latent caches, not scene folders",
                         "build a cache from the scenes with train-lrm --latent-cache PATH --data …, then pass it "
                         "as --latent-cache")
    held_out = [f"--{name.replace('_', '-')}" for name in ("val_fraction", "val_clips", "validate_every")
                if getattr(args, name) is not None]
    if held_out:
        raise InputError(f"train-refiner does not validate on held-out clips: {', '.join(held_out)} would do nothing",
                         "leave them out; score the exported refiner on held-out scenes with "
                         "benchmarks/bench_quality.py --data DIR --model MODEL --refiner MODEL_DIR")
    args.validate_every = 0
    weights = LossWeights(perceptual=0, ssim=args.ssim_weight, scale=0, opacity=0, depth=args.depth_weight)
    return run_training(train_refiner, RefinerRun(
        train=train_config(args), model=str(model_folder(args.model)), latent_cache=args.latent_cache,
        refiner=part_config("refiner", args.model_config, args.init), weights=weights, views=args.views,
        renderer=args.renderer, init=args.init, resume=args.resume, export=args.export))
