"""`python -m backend train-video`: train the camera-controlled video model (backend/training/train_video.py).

Several GPUs / nodes: `accelerate launch [--multi_gpu --num_processes N] -m backend train-video …` or
`torchrun --nproc_per_node N -m backend train-video …`. Paper recipe (paper.md), base frozen:
  --model-config paper --base CogVideoX-5b-I2V/ --steps 40000 --lr 2e-5 --mixed-precision bf16
  --gradient-checkpointing --data RealEstate10K/ ACID/ DL3DV/
A small model from scratch: --model-config tiny --train-base --vae MODEL_DIR (from train-vae --export).
"""
from __future__ import annotations

import argparse
import json
import logging


def add_run_arguments(p: argparse.ArgumentParser, lr: float, val_fraction: float = 0.05) -> None:
    """The options every trainer of this family shares with train-lrm."""
    p.add_argument("--data", nargs="+", default=[], metavar="ROOT",
                   help="folders of scenes (RealEstate10K, nerfstudio, or our cameras.json + frames/ layout)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder: config, checkpoints, logs")
    p.add_argument("--model-config", default="tiny", help="tiny | paper | a VideoModelConfig JSON file")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps in all (default 1000)")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--lr-min", type=float, default=0.0, help="end of the cosine schedule")
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
    p.add_argument("--val-fraction", type=float, default=val_fraction, help="share of scenes held out for validation")
    p.add_argument("--val-clips", type=int, default=8)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--validate-every", type=int, default=1000)
    p.add_argument("--keep-checkpoints", type=int, default=3)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")


def train_config(args: argparse.Namespace):
    from backend.training.engine import TrainConfig
    return TrainConfig(
        output_dir=args.out, max_steps=args.steps, lr=args.lr, lr_min=min(args.lr_min, args.lr),
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, grad_clip=args.grad_clip or None,
        mixed_precision=args.mixed_precision, batch_size=args.batch_size, grad_accum=args.grad_accum,
        num_workers=args.num_workers, seed=args.seed, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every, validate_every=args.validate_every, ema_decay=args.ema_decay,
        gradient_checkpointing=args.gradient_checkpointing, keep_checkpoints=args.keep_checkpoints)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    add_run_arguments(p, lr=2e-5)
    p.add_argument("--base", metavar="DIR",
                   help="the pretrained base: a local CogVideoX-5b-I2V folder (diffusers' layout) or a model folder")
    p.add_argument("--train-base", action="store_true",
                   help="train the whole model (small configs from scratch); default: only the camera branches")
    p.add_argument("--vae", metavar="DIR",
                   help="a model folder with vae/ or a diffusers VAE folder (default: --base's)")
    p.add_argument("--latent-cache", metavar="PATH",
                   help="latent cache folder: read it, or build it from --data with the VAE when it does not exist")
    p.add_argument("--prompt-embeds", metavar="FILE.safetensors",
                   help="one [L, D] tensor of text embeddings for every clip (default: zeros, as the sampler)")
    p.add_argument("--text-dropout", type=float, default=0.1,
                   help="probability of zero text embeddings (the sampler's unconditional branch)")
    p.add_argument("--image-dropout", type=float, default=0.0, help="probability of zero image latents")
    p.add_argument("--camera-dropout", type=float, default=0.0, help="probability of zero Plücker maps")
    p.add_argument("--export", metavar="MODEL_DIR", help="write the trained video model into this model folder")


def run(args: argparse.Namespace) -> int:
    from backend.training.train_video import Dropout, VideoRun, train_video, video_model_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    result = train_video(VideoRun(
        train=train_config(args), model=video_model_config(args.model_config), data_roots=args.data,
        base=args.base, vae=args.vae, latent_cache=args.latent_cache, prompt_embeds=args.prompt_embeds,
        train_base=args.train_base, dropout=Dropout(args.text_dropout, args.image_dropout, args.camera_dropout),
        resume=args.resume, export=args.export, val_fraction=args.val_fraction, val_clips=args.val_clips,
        stride=tuple(args.stride)))
    print(json.dumps(result))
    return 0
