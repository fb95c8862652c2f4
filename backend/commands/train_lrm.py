"""`python -m backend train-lrm`: train the LaLRM on posed videos (backend/training/train_lrm.py).

Several GPUs / nodes: `accelerate launch [--multi_gpu --num_processes N] -m backend train-lrm …` or
`torchrun --nproc_per_node N -m backend train-lrm …`. Paper recipe (paper.md):
  --model-config paper --stages '[[200000, 256, 384], [100000, 480, 720]]' --steps 300000 --lr 4e-4
  --lr-min 1e-5 --mixed-precision bf16 --gradient-checkpointing --perceptual-weight 0.5 --vgg19 vgg19.safetensors
"""
from __future__ import annotations

import argparse
import json
import logging

from backend.errors import InputError

DEFAULT_STAGES_HELP = ("progressive stages as JSON [[steps, height, width], ...] or [{\"steps\":..., \"height\":..., "
                       "\"width\":..., \"render_height\":..., \"render_width\":...}, ...]; the last stage runs until "
                       "--steps. Default: one stage at the model config's size")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--data", nargs="+", default=[], metavar="ROOT",
                   help="folders of scenes (RealEstate10K, nerfstudio, or our cameras.json + frames/ layout)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder: config, checkpoints, logs")
    p.add_argument("--model-config", default="tiny", help="tiny | paper | paper_low_res | a LaLRMConfig JSON file")
    p.add_argument("--vae", metavar="DIR", help="a model folder with vae/, or a diffusers CogVideoX VAE folder")
    p.add_argument("--latent-cache", metavar="PATH",
                   help="latent cache folder: read it, or build it from --data with --vae when it does not exist")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps in all (default 1000)")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--lr-min", type=float, default=1e-5, help="end of the cosine schedule")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 = off")
    p.add_argument("--batch-size", type=int, default=1, help="clips per process and micro-batch")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--stages", help=DEFAULT_STAGES_HELP)
    p.add_argument("--views", type=int, default=4, help="supervision views rendered per clip and step")
    p.add_argument("--input-stride", type=int, default=1,
                   help="input video = every s-th frame of the clip; supervision also sees the frames between")
    p.add_argument("--extra-frames", type=int, default=0, help="clip frames beyond the input video (supervision only)")
    p.add_argument("--render-size", type=int, nargs=2, metavar=("H", "W"),
                   help="supervision render size (default: the stage's pixel size)")
    p.add_argument("--stride", type=int, nargs=2, default=(1, 4), metavar=("MIN", "MAX"), help="frame stride range")
    p.add_argument("--perceptual-weight", type=float, default=0.5,
                   help="VGG-19 perceptual loss weight (needs --vgg19); 0 turns it off")
    p.add_argument("--vgg19", metavar="FILE.safetensors", help="torchvision vgg19 weights converted to safetensors")
    p.add_argument("--ssim-weight", type=float, default=0.0, help="weight of (1 - SSIM)")
    p.add_argument("--scale-weight", type=float, default=0.01)
    p.add_argument("--opacity-weight", type=float, default=0.01)
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
    p.add_argument("--export", metavar="MODEL_DIR", help="write the trained LaLRM into this model folder")


def parse_stages(text: str | None) -> list[dict]:
    if not text:
        return []
    try:
        stages = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"--stages is not valid JSON: {e}", DEFAULT_STAGES_HELP) from e
    if not isinstance(stages, list) or not stages:
        raise InputError("--stages must be a non-empty JSON list", DEFAULT_STAGES_HELP)
    out = []
    for stage in stages:
        if isinstance(stage, list) and len(stage) == 3:
            stage = {"steps": stage[0], "height": stage[1], "width": stage[2]}
        if not isinstance(stage, dict):
            raise InputError(f"stage {stage!r} is neither [steps, height, width] nor an object", DEFAULT_STAGES_HELP)
        out.append(stage)
    return out


def run(args: argparse.Namespace) -> int:
    from backend.training.engine import TrainConfig
    from backend.training.losses import LossWeights
    from backend.training.train_lrm import LRMData, LRMRun, lalrm_config, stage_config, train_lrm

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    model = lalrm_config(args.model_config)
    stages = parse_stages(args.stages)
    for stage in stages:
        stage_config(model, stage)  # a size the model cannot take is an InputError now, not hours later
    train = TrainConfig(
        output_dir=args.out, max_steps=args.steps, lr=args.lr, lr_min=min(args.lr_min, args.lr),
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, grad_clip=args.grad_clip or None,
        mixed_precision=args.mixed_precision, batch_size=args.batch_size, grad_accum=args.grad_accum,
        num_workers=args.num_workers, seed=args.seed, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every, validate_every=args.validate_every, ema_decay=args.ema_decay,
        gradient_checkpointing=args.gradient_checkpointing, keep_checkpoints=args.keep_checkpoints, stages=stages)
    render_h, render_w = args.render_size or (None, None)
    data = LRMData(views=args.views, input_stride=args.input_stride, extra_frames=args.extra_frames,
                   render_height=render_h, render_width=render_w)
    weights = LossWeights(perceptual=args.perceptual_weight, ssim=args.ssim_weight, scale=args.scale_weight,
                          opacity=args.opacity_weight)
    result = train_lrm(LRMRun(train=train, model=model, data=data, weights=weights, data_roots=args.data,
                              vae=args.vae, latent_cache=args.latent_cache, vgg19=args.vgg19, resume=args.resume,
                              export=args.export, val_fraction=args.val_fraction, val_clips=args.val_clips,
                              stride=tuple(args.stride)))
    print(json.dumps(result))
    return 0
