"""`python -m backend train-video`: train the camera-controlled video model (backend/training/train_video.py).

Several GPUs / nodes: `accelerate launch [--multi_gpu --num_processes N] -m backend train-video …` or
`torchrun --nproc_per_node N -m backend train-video …`. Paper recipe (paper.md), base frozen:
  --model-config paper --base CogVideoX-5b-I2V/ --steps 40000 --lr 2e-5 --mixed-precision bf16
  --gradient-checkpointing --data RealEstate10K/ ACID/ DL3DV/
A small model from scratch: --model-config tiny --train-base --vae MODEL_DIR (from train-vae --export).
"""
from __future__ import annotations

import argparse

from backend.commands.training_options import add_training_arguments, data_options, run_training, train_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    add_training_arguments(p, model_configs="tiny | small | paper | a VideoModelConfig JSON file", lr=2e-5, lr_min=0.0,
                           export="write the trained video model into this model folder")
    p.add_argument("--base", metavar="DIR",
                   help="the pretrained base: a local CogVideoX-5b-I2V folder (diffusers' layout) or a model folder")
    p.add_argument("--init", metavar="MODEL_DIR",
                   help="start from a model folder's video model (base and camera branches), e.g. to train the "
                        "shipped default further; with --train-base the base trains too")
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


def run(args: argparse.Namespace) -> int:
    from backend.training.train_video import Dropout, VideoRun, train_video, video_model_config

    return run_training(train_video, VideoRun(
        train=train_config(args), model=video_model_config(args.model_config), scenes=data_options(args),
        base=args.base, vae=args.vae, latent_cache=args.latent_cache, prompt_embeds=args.prompt_embeds,
        train_base=args.train_base, dropout=Dropout(args.text_dropout, args.image_dropout, args.camera_dropout),
        resume=args.resume, export=args.export, init=args.init))
