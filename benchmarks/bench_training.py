"""LaLRM training-step benchmark: seconds per step and peak memory.

One step = what `train-lrm` does per clip (backend/training/train_lrm.py, LaLRMObjective): Plücker maps,
LaLRM forward (autocast when bf16), Gaussians, `views` supervision renders (gsplat on CUDA, the torch
rasterizer on CPU), MSE + SSIM + regularizers, backward, gradient clipping, AdamW. Latents and target
frames are seeded random tensors (the latent cache path: no VAE in the step). The camera path is a
sideways dolly of length 1 (normalized units).

Configurations:
- CPU: the `tiny` LaLRM (9 frames, 64×96 px, 13,824 Gaussians), renders at 32×48.
- CUDA (when present): the paper LaLRM at its low-resolution stage (49 frames at 256×384, 24 blocks of
  1024, 1.2M Gaussians; LaLRMConfig.paper_low_res), batch 1, bf16, gradient checkpointing off and on,
  renders at 256×384.
Peak memory: the process's peak resident set on CPU (includes Python and libraries), peak allocated
CUDA memory on the GPU (torch.cuda.max_memory_allocated).

Usage: python benchmarks/bench_training.py [--steps 3] [--views 4] [--cuda-views 8]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.models.config import ModelConfig  # noqa: E402
from backend.models.lalrm import LaLRM, LaLRMConfig  # noqa: E402
from backend.training.losses import LossWeights, ReconstructionLoss  # noqa: E402
from backend.training.train_lrm import LaLRMObjective, LRMData  # noqa: E402
from machine import cpu_name  # noqa: E402


def clip(config: LaLRMConfig, device: torch.device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    F, H, W = config.num_frames, config.height, config.width
    c2w = torch.eye(4).repeat(F, 1, 1)
    c2w[:, 0, 3] = torch.linspace(0, 1, F)
    K = torch.tensor([[0.8 * W, 0, W / 2], [0, 0.8 * W, H / 2], [0, 0, 1]]).repeat(F, 1, 1)
    batch = {"latents": torch.randn(1, *config.latent_shape, generator=g),
             "frames": torch.rand(1, F, 3, H, W, generator=g), "K": K[None], "c2w": c2w[None]}
    return {k: v.to(device) for k, v in batch.items()}


def bench(config: LaLRMConfig, device: torch.device, steps: int, views: int, render_hw: tuple[int, int],
          bf16: bool, checkpointing: bool) -> tuple[float, float]:
    """(median seconds per step after one warm-up step, peak memory in GB)."""
    torch.manual_seed(0)
    model = LaLRM(config, gradient_checkpointing=checkpointing).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-4)
    objective = LaLRMObjective(model, ReconstructionLoss(LossWeights(perceptual=0, ssim=0.2)),
                               LRMData(views=views, render_height=render_hw[0], render_width=render_hw[1]))
    batch = clip(config, device)

    def forward(latents, plucker):  # autocast the LaLRM only, as the engine does; renders stay float32
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(latents, plucker)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model_out = objective(forward, batch, {})
        model_out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 1e9
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    return sorted(times[1:])[len(times[1:]) // 2], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--cuda-views", type=int, default=8)
    args = parser.parse_args()
    header = (f"{'config':>14} {'device':>6} {'dtype':>5} {'ckpt':>5} {'views':>5} {'render':>9} {'s/step':>8} "
              f"{'peak GB':>8}")

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}")
    print(header)
    tiny = ModelConfig.tiny().lalrm
    seconds, peak = bench(tiny, torch.device("cpu"), args.steps, args.views, (32, 48), bf16=False, checkpointing=False)
    print(f"{'tiny':>14} {'cpu':>6} {'fp32':>5} {'off':>5} {args.views:>5} {'32x48':>9} {seconds:>8.3f} {peak:>8.2f}")

    if torch.cuda.is_available():
        device = torch.device("cuda")
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        print(header)
        paper = LaLRMConfig.paper_low_res()
        for checkpointing in (False, True):
            try:
                seconds, peak = bench(paper, device, args.steps, args.cuda_views, (paper.height, paper.width),
                                      bf16=True, checkpointing=checkpointing)
                row = f"{seconds:>8.3f} {peak:>8.2f}"
            except torch.OutOfMemoryError:
                row = f"{'out of memory':>17}"
            torch.cuda.empty_cache()
            print(f"{'paper_low_res':>14} {'cuda':>6} {'bf16':>5} {'on' if checkpointing else 'off':>5} "
                  f"{args.cuda_views:>5} {f'{paper.height}x{paper.width}':>9} {row}")


if __name__ == "__main__":
    main()
