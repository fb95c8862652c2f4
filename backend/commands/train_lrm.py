"""`python -m backend train-lrm`: train the LaLRM on posed videos (backend/training/train_lrm.py).

Several GPUs / nodes: `accelerate launch [--multi_gpu --num_processes N] -m backend train-lrm …` or
`torchrun --nproc_per_node N -m backend train-lrm …`. Paper recipe (paper.md):
  --model-config paper --stages '[[200000, 256, 384], [100000, 480, 720]]' --steps 300000 --lr 4e-4
  --lr-min 1e-5 --mixed-precision bf16 --gradient-checkpointing --perceptual-weight 0.5 --vgg19 vgg19.safetensors
"""
from __future__ import annotations

import argparse
import json

from backend.commands.training_options import add_training_arguments, data_options, run_training, train_config
from backend.errors import InputError
from backend.models.config import SCENE_SCALES
from backend.render import DIFFERENTIABLE_BACKENDS

DEFAULT_STAGES_HELP = ("progressive stages as JSON [[steps, height, width], ...] or [{\"steps\":..., \"height\":..., "
                       "\"width\":..., \"render_height\":..., \"render_width\":...}, ...]; the last stage runs until "
                       "--steps. Default: one stage at the model config's size")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    add_training_arguments(p, model_configs="tiny | small | paper | paper_low_res | a LaLRMConfig JSON file", lr=4e-4,
                           lr_min=1e-5, export="write the trained LaLRM into this model folder")
    p.add_argument("--vae", metavar="DIR", help="a model folder with vae/, or a diffusers CogVideoX VAE folder")
    p.add_argument("--latent-cache", metavar="PATH", nargs="+",
                   help="latent cache folder: read it, or build it from --data with --vae when it does not exist; "
                        "more folders (e.g. generate-latents' video-model latents of the same clips) train together")
    p.add_argument("--init", metavar="MODEL_DIR|FILE",
                   help="start from these LaLRM weights (a model folder or a lalrm .safetensors), e.g. to fine-tune "
                        "on generated latents; a checkpoint found by --resume takes precedence")
    p.add_argument("--stages", help=DEFAULT_STAGES_HELP)
    p.add_argument("--views", type=int, default=4, help="supervision views rendered per clip and step")
    p.add_argument("--input-stride", type=int, default=1,
                   help="input video = every s-th frame of the clip; supervision also sees the frames between")
    p.add_argument("--extra-frames", type=int, default=0, help="clip frames beyond the input video (supervision only)")
    p.add_argument("--render-size", type=int, nargs=2, metavar=("H", "W"),
                   help="supervision render size (default: the stage's pixel size)")
    p.add_argument("--renderer", choices=DIFFERENTIABLE_BACKENDS, default="auto",
                   help="supervision renders: auto = gsplat on CUDA, our torch rasterizer elsewhere; torch on CUDA "
                        "needs no gsplat build (a GPU machine without nvcc, or minutes saved on a short lease)")
    p.add_argument("--scene-scale", choices=SCENE_SCALES, default="path",
                   help="the frame the LaLRM learns in: path = normalized by the camera move (the paper's), "
                        "metric = the data's own unit (metres in our synthetic scenes); --export writes it into "
                        "the model folder's wonderland.json")
    p.add_argument("--perceptual-weight", type=float, default=0.5,
                   help="VGG-19 perceptual loss weight (needs --vgg19); 0 turns it off")
    p.add_argument("--vgg19", metavar="FILE.safetensors", help="torchvision vgg19 weights converted to safetensors")
    p.add_argument("--ssim-weight", type=float, default=0.0, help="weight of (1 - SSIM)")
    p.add_argument("--scale-weight", type=float, default=0.01)
    p.add_argument("--opacity-weight", type=float, default=0.01)
    p.add_argument("--depth-weight", type=float, default=0.0,
                   help="weight of the log-depth L1 between the rendered depth and the scenes' depth/ maps "
                        "(backend/training/losses.py); scenes without depth maps train as with 0")


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
    from backend.training.losses import LossWeights
    from backend.training.train_lrm import LRMData, LRMRun, lalrm_config, stage_config, train_lrm

    model = lalrm_config(args.model_config)
    stages = parse_stages(args.stages)
    for stage in stages:
        stage_config(model, stage)  # a size the model cannot take is an InputError now, not hours later
    render_h, render_w = args.render_size or (None, None)
    data = LRMData(views=args.views, input_stride=args.input_stride, extra_frames=args.extra_frames,
                   render_height=render_h, render_width=render_w, renderer=args.renderer,
                   scene_scale=args.scene_scale)
    weights = LossWeights(perceptual=args.perceptual_weight, ssim=args.ssim_weight, scale=args.scale_weight,
                          opacity=args.opacity_weight, depth=args.depth_weight)
    return run_training(train_lrm, LRMRun(
        train=train_config(args, stages), model=model, data=data, weights=weights, scenes=data_options(args),
        vae=args.vae, latent_cache=args.latent_cache, init=args.init, vgg19=args.vgg19, resume=args.resume,
        export=args.export))
