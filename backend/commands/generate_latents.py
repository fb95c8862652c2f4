"""`python -m backend generate-latents`: the video model's latents for every clip of a VAE latent cache
(backend/data/generated_latents.py), so that train-lrm can fine-tune the LaLRM on what it reads at
inference: `train-lrm --latent-cache VAE_CACHE GENERATED_CACHE --init MODEL_DIR …`.
"""
from __future__ import annotations

import argparse

from backend.devices import DEVICES, DTYPES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a model folder or a shipped model's name (its video model samples)")
    p.add_argument("--latent-cache", required=True, metavar="PATH",
                   help="the VAE latent cache of the real clips (train-video / train-lrm --latent-cache)")
    p.add_argument("--out", required=True, metavar="PATH", help="the new cache folder (an interrupted build resumes)")
    p.add_argument("--samples", type=int, default=1, help="sampled videos per clip (different noise)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's, as generate uses)")
    p.add_argument("--batch-size", type=int, default=8, help="clips denoised together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--dtype", choices=list(DTYPES), default="auto")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backend.data.generated_latents import build_generated_cache
    from backend.data.latent_cache import LatentCacheDataset
    from backend.devices import pick_device, pick_dtype
    from backend.pipelines.wonderland import load_pipeline

    device = pick_device(args.device)
    pipe = load_pipeline(args.model, pick_dtype(args.dtype, device))
    source = LatentCacheDataset(args.latent_cache, vae=pipe.vae, num_frames=pipe.config.frames)
    bar = tqdm(unit="clip", desc="generate-latents", disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    pipe.transformer.to(device)
    build_generated_cache(pipe.transformer, pipe.scheduler, source, args.out, samples=args.samples,
                          steps=args.steps, batch_size=args.batch_size, seed=args.seed, on_progress=progress)
    bar.close()
    print(f"wrote {len(source) * args.samples} generated clips to {args.out}")
    return 0
