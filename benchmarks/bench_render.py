"""Renderer benchmark: seconds per frame and peak memory of the torch rasterizer (and gsplat on CUDA).

Scene: N Gaussians with centres uniform in the box x, y in [-1.2, 1.2] z, z in [2, 6] in front of a
512x512 pinhole camera (fx = fy = 512, so 53 degrees field of view) at the origin looking down +z;
random rotations; log-scales ~ Normal(log(0.006), 0.3) per axis, i.e. a projected standard deviation
of about 0.5-1.5 pixels, like the model's pixel-aligned Gaussians (each one covers a few pixels);
opacity logits ~ Normal(0, 1.5); SH degree 0 colours ~ Normal(0, 1). Seeded, so every run is the same.

Usage: python benchmarks/bench_render.py [--counts 100000 1000000] [--size 512] [--repeat 2]
"""
from __future__ import annotations

import argparse
import math
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.cameras import CameraBatch  # noqa: E402
from backend.gaussians import Gaussians  # noqa: E402
from backend.render import render  # noqa: E402


def scene(count: int, size: int, seed: int = 0) -> tuple[Gaussians, CameraBatch]:
    gen = torch.Generator().manual_seed(seed)
    xy = (torch.rand(count, 2, generator=gen) * 2 - 1) * 1.2 * torch.full((1, 2), 1.0)
    z = 2 + 4 * torch.rand(count, 1, generator=gen)
    means = torch.cat([xy * z / 2, z], dim=1)  # stay inside the view cone
    gaussians = Gaussians(
        means=means,
        log_scales=math.log(0.004) + 0.3 * torch.randn(count, 3, generator=gen),
        quats=torch.randn(count, 4, generator=gen),
        opacity_logits=1.5 * torch.randn(count, generator=gen),
        sh0=torch.randn(count, 3, generator=gen),
        sh_rest=None)
    K = torch.tensor([[size, 0.0, size / 2], [0.0, size, size / 2], [0.0, 0.0, 1.0]])[None]
    return gaussians, CameraBatch(K, torch.eye(4)[None], size, size)


def time_render(gaussians, cameras, backend: str, repeat: int) -> float:
    sync = torch.cuda.synchronize if gaussians.device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        render(gaussians, cameras, backend=backend)  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(repeat):
            render(gaussians, cameras, backend=backend)
        sync()
    return (time.perf_counter() - start) / repeat


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    print(f"CPU: {cpu_name()}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"{'count':>9} {'resolution':>10} {'s/frame':>8} {'peak RSS GB':>11}")
    for count in args.counts:
        gaussians, cameras = scene(count, args.size)
        seconds = time_render(gaussians, cameras, "torch", args.repeat)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{count:>9} {args.size:>4}x{args.size:<5} {seconds:>8.3f} {peak:>11.2f}")

    if torch.cuda.is_available():
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        print(f"{'count':>9} {'resolution':>10} {'torch s':>8} {'gsplat s':>9} {'ratio':>7}")
        for count in args.counts:
            gaussians, cameras = scene(count, args.size)
            gaussians, cameras = gaussians.to("cuda"), cameras.to("cuda")
            ours = time_render(gaussians, cameras, "torch", args.repeat)
            theirs = time_render(gaussians, cameras, "gsplat", args.repeat)
            print(f"{count:>9} {args.size:>4}x{args.size:<5} {ours:>8.4f} {theirs:>9.5f} "
                  f"{ours / theirs:>7.1f}")


if __name__ == "__main__":
    main()
