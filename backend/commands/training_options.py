"""The options the train-* commands share, and what they become: the engine's TrainConfig, the trainers'
DataOptions, an optional model part's config. Each command adds its own options after these."""
from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Callable


def parse_size(text: str) -> tuple[int, int]:
    """argparse type of a WIDTHxHEIGHT size in pixels, e.g. 96x64."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT in pixels, like 96x64, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def add_training_arguments(p: argparse.ArgumentParser, *, model_configs: str, lr: float, lr_min: float,
                           export: str) -> None:
    """Add the shared options. Per command: `model_configs` (--model-config's help: the names it takes),
    the --lr and --lr-min defaults, and `export` (--export's help: what it writes)."""
    p.add_argument("--data", nargs="+", default=[], metavar="ROOT",
                   help="folders of scenes (RealEstate10K, nerfstudio, or our cameras.json + frames/ layout)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder: config, checkpoints, logs")
    p.add_argument("--model-config", default="tiny", help=model_configs)
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps in all (default 1000)")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--lr-min", type=float, default=lr_min, help="end of the cosine schedule")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 = off")
    p.add_argument("--batch-size", type=int, default=1, help="clips per process and micro-batch")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--stride", type=int, nargs=2, default=(1, 4), metavar=("MIN", "MAX"), help="frame stride range")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--ema-decay", type=float, help="keep an EMA of the weights (exported when on), e.g. 0.9999")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of scenes held out for validation")
    p.add_argument("--val-clips", type=int, default=8)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--validate-every", type=int, default=1000)
    p.add_argument("--keep-checkpoints", type=int, default=3)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--export", metavar="MODEL_DIR", help=export)


def add_part_training_arguments(p: argparse.ArgumentParser, *, part: str, config_file: str, export: str) -> None:
    """add_training_arguments for the trainer of an optional model part, whose --model-config and --init
    part_config reads: `part` names it in the help, `config_file` says what its config file is."""
    add_training_arguments(p, model_configs=f"the {part}'s config: `default` or {config_file}; left out: --init's "
                           "config, else `default`", lr=1e-3, lr_min=1e-5, export=export)
    p.set_defaults(model_config=None)
    p.add_argument("--init", metavar="FILE|MODEL_DIR", help=f"start from this {part} (a --resume checkpoint wins)")


def train_config(args: argparse.Namespace, stages: list[dict] | None = None):
    """The engine's TrainConfig of the shared options (lr_min capped at lr, --grad-clip 0 = off)."""
    from backend.training.engine import TrainConfig
    return TrainConfig(
        output_dir=args.out, max_steps=args.steps, lr=args.lr, lr_min=min(args.lr_min, args.lr),
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, grad_clip=args.grad_clip or None,
        mixed_precision=args.mixed_precision, batch_size=args.batch_size, grad_accum=args.grad_accum,
        num_workers=args.num_workers, seed=args.seed, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every, validate_every=args.validate_every, ema_decay=args.ema_decay,
        gradient_checkpointing=args.gradient_checkpointing, keep_checkpoints=args.keep_checkpoints,
        stages=stages or [])


def part_config(key: str, name: str | None, init: str | None):
    """--model-config of an optional model part (backend.models.model_dir.OPTIONAL_PARTS' `key`): `default`
    or a JSON file of its config's fields; left out, the --init part's config (so a run continues it), else
    `default`."""
    from backend.models.model_dir import OPTIONAL_PARTS, part_file
    from backend.models.weights import named_or_file_config
    cls = OPTIONAL_PARTS[key][1]
    config_cls = cls.config_class
    if name is None:
        return config_cls() if init is None else cls.pretrained_config(part_file(init, key))
    return named_or_file_config(name, {"default": config_cls}, config_cls)


def data_options(args: argparse.Namespace):
    """The trainers' DataOptions of --data, --val-fraction, --val-clips and --stride."""
    from backend.data.scenes import DataOptions
    return DataOptions(roots=args.data, val_fraction=args.val_fraction, val_clips=args.val_clips,
                       stride=tuple(args.stride))


def run_training(train: Callable[[Any], dict], run: Any) -> int:
    """Log at INFO, train, print the result as one JSON line on stdout; the command's exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    print(json.dumps(train(run)))
    return 0
