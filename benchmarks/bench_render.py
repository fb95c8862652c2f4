"""Renderer benchmark: seconds per frame and peak memory of the torch rasterizer (and gsplat on CUDA).

Scene ("pixel-aligned-like"): N Gaussians in front of a SIZE x SIZE pinhole camera at the origin
looking down +z (fx = fy = SIZE, cx = cy = SIZE/2, a 53 degree field of view): depth z uniform in
[2, 6], x/z and y/z uniform in [-0.6, 0.6] (the view cone plus a 20% margin, so ~70% land on screen);
random rotations; log-scales ~ Normal(log 0.004, 0.3) per axis, i.e. a projected std-dev of ~0.3-1
pixel before gsplat's eps2d blur (median 2D std-dev along x or y, whichever is larger: 0.8 px), so each
Gaussian covers ~10-30 pixels, like the model's pixel-aligned output; opacity logits ~ Normal(0, 1.5); SH
degree 0 colours ~ Normal(0, 1). Seeded: every run renders the same scene. At 1M Gaussians and 512x512
this is ~14M Gaussian-pixel pairs with alpha >= 1/255 (about 55 layers per pixel).

Reported: wall-clock seconds per frame, CPU seconds per frame (the process's user + system time; on a
shared machine the wall time is inflated by other jobs, the CPU time much less) and the process's
peak resident memory. On machines shared with other jobs, OMP_WAIT_POLICY=PASSIVE avoids OpenMP
threads spinning while their sibling waits for a core.

Usage: python benchmarks/bench_render.py [--counts 100000 1000000] [--size 512] [--repeat 2]
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from pathlib import Path

# OpenMP reads its wait policy when torch loads; the backend's own default (PASSIVE, backend/__init__.py)
# comes too late here, so this script measures what its environment says.
OMP_POLICY = os.environ.get("OMP_WAIT_POLICY", "unset (spin)")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.cameras import CameraBatch  # noqa: E402
from backend.gaussians import Gaussians  # noqa: E402
from backend.render import render  # noqa: E402
from machine import cpu_name  # noqa: E402


def scene(count: int, size: int, seed: int = 0) -> tuple[Gaussians, CameraBatch]:
    """The benchmark scene described at the top of this file."""
    gen = torch.Generator().manual_seed(seed)
    slope = (torch.rand(count, 2, generator=gen) * 2 - 1) * 0.6
    z = 2 + 4 * torch.rand(count, 1, generator=gen)
    means = torch.cat([slope * z, z], dim=1)
    gaussians = Gaussians(
        means=means,
        log_scales=math.log(0.004) + 0.3 * torch.randn(count, 3, generator=gen),
        quats=torch.randn(count, 4, generator=gen),
        opacity_logits=1.5 * torch.randn(count, generator=gen),
        sh0=torch.randn(count, 3, generator=gen),
        sh_rest=None)
    K = torch.tensor([[size, 0.0, size / 2], [0.0, size, size / 2], [0.0, 0.0, 1.0]])[None]
    return gaussians, CameraBatch(K, torch.eye(4)[None], size, size)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_render(gaussians, cameras, backend: str, repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds per frame, after one warm-up frame."""
    sync = torch.cuda.synchronize if gaussians.device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        render(gaussians, cameras, backend=backend)
        sync()
        start, start_cpu = time.perf_counter(), cpu_seconds()
        for _ in range(repeat):
            render(gaussians, cameras, backend=backend)
        sync()
    return (time.perf_counter() - start) / repeat, (cpu_seconds() - start_cpu) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch threads: {torch.get_num_threads()}, "
          f"torch {torch.__version__}, OMP_WAIT_POLICY {OMP_POLICY}, "
          f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'count':>9} {'resolution':>10} {'s/frame':>8} {'CPU s/frame':>11} {'peak RSS GB':>11}")
    for count in args.counts:
        gaussians, cameras = scene(count, args.size)
        seconds, cpu = time_render(gaussians, cameras, "torch", args.repeat)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{count:>9} {args.size:>4}x{args.size:<5} {seconds:>8.3f} {cpu:>11.3f} {peak:>11.2f}")

    if torch.cuda.is_available():
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        print(f"{'count':>9} {'resolution':>10} {'torch s':>8} {'gsplat s':>9} {'ratio':>7}")
        for count in args.counts:
            gaussians, cameras = scene(count, args.size)
            gaussians, cameras = gaussians.to("cuda"), cameras.to("cuda")
            ours = time_render(gaussians, cameras, "torch", args.repeat)[0]
            theirs = time_render(gaussians, cameras, "gsplat", args.repeat)[0]
            print(f"{count:>9} {args.size:>4}x{args.size:<5} {ours:>8.4f} {theirs:>9.5f} "
                  f"{ours / theirs:>7.1f}")


if __name__ == "__main__":
    main()
