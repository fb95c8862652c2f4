"""Renderer benchmark: the compiled CPU rasterizer beside the torch reference (and gsplat on CUDA).

Scenes:
- "random" (pixel-aligned-like): N Gaussians in front of a pinhole camera at the origin looking down +z
  (fx = fy = the image width, centred principal point): depth z uniform in [2, 6], x/z and y/z uniform in
  [-0.6, 0.6] (the view cone plus a 20% margin, so ~70% land on screen at 512x512); random rotations;
  log-scales ~ Normal(log 0.004, 0.3) per axis (a projected std-dev of ~0.3-1 pixel at 512 before gsplat's
  eps2d blur, ~10-30 pixels per Gaussian like the model's pixel-aligned output); opacity logits ~ Normal(0,
  1.5); SH degree 0 colours ~ Normal(0, 1). Seeded. At 1M Gaussians and 512x512 this is ~14M
  Gaussian-pixel pairs with alpha >= 1/255 (about 55 per pixel).
- "room": the shipped default model's Gaussians for tools/demo_inputs/room.png with a dolly-in camera
  move (the demo's), rendered from the first camera at 1920x1080 as F12 would.

Each row runs in a child process of its own, so its peak resident memory (the child's high-water mark:
torch, the scene and the renderer's buffers) is its own. Reported: wall-clock and CPU (user + system)
seconds per frame after one warm-up frame; on a shared machine wall time is inflated by other jobs, CPU
time much less. Ratios compare rows measured in this one run.

Usage: python benchmarks/bench_render.py [--quick] [--repeat 2] [--threads N]
       python benchmarks/bench_render.py --interleave 7   (the 1M row only, 7 pairs: on a shared machine the
       ratio of one pair swings with the neighbours' load; pairs measured back to back, and their median, do not)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.cameras import CameraBatch  # noqa: E402
from backend.gaussians import Gaussians  # noqa: E402
from backend.render import render  # noqa: E402
from machine import cpu_name  # noqa: E402

ROOM_FRAMES = 9


def scene(count: int, width: int, height: int | None = None, seed: int = 0,
          same_pixel_size: bool = False) -> tuple[Gaussians, CameraBatch]:
    """The random benchmark scene described at the top of this file; same_pixel_size: the Gaussians shrink
    with 512 / width so that each covers as many pixels as at 512 (the resolution rows)."""
    height = height or width
    gen = torch.Generator().manual_seed(seed)
    slope = (torch.rand(count, 2, generator=gen) * 2 - 1) * 0.6
    z = 2 + 4 * torch.rand(count, 1, generator=gen)
    means = torch.cat([slope * z, z], dim=1)
    gaussians = Gaussians(
        means=means,
        log_scales=math.log(0.004 * (512 / width if same_pixel_size else 1))
        + 0.3 * torch.randn(count, 3, generator=gen),
        quats=torch.randn(count, 4, generator=gen),
        opacity_logits=1.5 * torch.randn(count, generator=gen),
        sh0=torch.randn(count, 3, generator=gen),
        sh_rest=None)
    K = torch.tensor([[width, 0.0, width / 2], [0.0, width, height / 2], [0.0, 0.0, 1.0]])[None]
    return gaussians, CameraBatch(K, torch.eye(4)[None], width, height)


def room_cameras(width: int, height: int) -> CameraBatch:
    """The demo's dolly-in: a 50 mm lens on a 36 mm sensor moving 0.8 units forward (OpenCV axes)."""
    f = 50 / 36 * width
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]]).expand(ROOM_FRAMES, 3, 3)
    c2w = torch.eye(4).repeat(ROOM_FRAMES, 1, 1)
    c2w[:, 2, 3] = torch.linspace(0, 0.8, ROOM_FRAMES)
    return CameraBatch(K.clone(), c2w, width, height)


def room_generate(preview_count: int = 0):
    """The default model's result for the demo room picture (pipeline loaded and run in this process)."""
    from backend.images import load_rgb
    from backend.pipelines.wonderland import DEFAULT_MODEL, generate, load_pipeline
    image = load_rgb(ROOT / "tools" / "demo_inputs" / "room.png")
    cameras = room_cameras(image.shape[1], image.shape[0])
    return generate(load_pipeline(DEFAULT_MODEL), image, cameras, preview_count=preview_count), cameras


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_gb() -> float:
    scale = 2**30 if sys.platform == "darwin" else 2**20  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def measure(row: dict) -> dict:
    """One row, in this process: seconds per frame (wall, CPU), pairs per pixel of the scene, peak RSS."""
    from backend.render import compiled
    if row["backend"] == "compiled":
        compiled.set_threads(row.get("threads"))
        compiled.warm()
    else:
        torch.set_num_threads(row.get("threads") or torch.get_num_threads())
    if row["scene"] == "room":
        result, cameras = room_generate()
        gaussians, cameras = result.gaussians, cameras[0]
    else:
        gaussians, cameras = scene(row["count"], row["width"], row["height"], same_pixel_size=True)
    with torch.no_grad():
        render(gaussians, cameras, row["width"], row["height"], backend=row["backend"])
        start, start_cpu = time.perf_counter(), cpu_seconds()
        for _ in range(row["repeat"]):
            render(gaussians, cameras, row["width"], row["height"], backend=row["backend"])
    return {**row, "count": len(gaussians), "seconds": (time.perf_counter() - start) / row["repeat"],
            "cpu": (cpu_seconds() - start_cpu) / row["repeat"], "peak_gb": peak_gb(),
            "pairs_per_pixel": pairs_per_pixel(gaussians, cameras, row["width"], row["height"])}


def pairs_per_pixel(gaussians: Gaussians, cameras: CameraBatch, width: int, height: int) -> float:
    """Mean number of Gaussians per pixel whose alpha reaches 1/255 (before early termination), roughly:
    each centred on screen covers its ellipse power <= ln(255 opacity), of area 2 pi ln(255 opacity)
    sqrt(det cov), with det cov = 1 / det conic."""
    from backend.render.reference import project
    scale = torch.tensor([[width / cameras.width], [height / cameras.height], [1.0]])
    with torch.no_grad():
        p = project(gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
                    torch.linalg.inv(cameras.c2w[0]), cameras.K[0] * scale, width, height)
        on_screen = (p.mean_x >= 0) & (p.mean_x < width) & (p.mean_y >= 0) & (p.mean_y < height)
        level = torch.log(p.opacity * 255).clamp_min(0)
        area = 2 * math.pi * level / torch.sqrt(p.conic_a * p.conic_c - p.conic_b ** 2)
    return float((area * on_screen).sum()) / (width * height)


def run_row(row: dict, timeout: float) -> dict | None:
    """measure(row) in a child process; None when it ran past `timeout` seconds."""
    try:
        out = subprocess.run([sys.executable, __file__, "--row", json.dumps(row)], capture_output=True,
                             text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                 [str(ROOT), os.environ.get("PYTHONPATH", "")])))
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise RuntimeError(f"row {row} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def preview_share() -> tuple[float, float, float]:
    """A default generate with its 8 previews (256 px, fast path): (total s, previews s, the same 8
    previews rendered by the torch reference s)."""
    from backend.cameras import resample
    start = time.perf_counter()
    result, cameras = room_generate(preview_count=8)
    total = time.perf_counter() - start
    views = resample(cameras, 8)
    scale = 256 / max(cameras.width, cameras.height)
    size = (round(cameras.width * scale), round(cameras.height * scale))
    ref_start = time.perf_counter()
    with torch.no_grad():
        for i in range(8):
            render(result.gaussians, views[i], *size, backend="torch")
    return total, result.info["timings_s"]["render"], time.perf_counter() - ref_start


def fmt(row: dict | None, key: str, spec: str) -> str:
    return "—" if row is None else format(row[key], spec)


def table_line(row: dict, ours: dict | None, ref: dict | None) -> str:
    """One row of the CPU table; `ours` or `ref` is None where that render ran past its timeout."""
    ratio = f"{ref['seconds'] / ours['seconds']:.1f}x" if ref and ours else "—"
    return (f"{row['scene']:>6} {fmt(ours, 'count', ','):>10} {row['width']:>5}x{row['height']:<4} "
            f"{fmt(ours, 'pairs_per_pixel', '.0f'):>8} {fmt(ours, 'seconds', '10.3f')} {fmt(ours, 'cpu', '7.2f')} "
            f"{fmt(ours, 'peak_gb', '7.2f')} {fmt(ref, 'seconds', '8.3f')} {fmt(ref, 'cpu', '7.2f')} "
            f"{fmt(ref, 'peak_gb', '7.2f')} {ratio:>6}")


def interleaved(pairs: int, repeat: int, threads: int | None, reference_timeout: float) -> list[dict]:
    """The 1M-Gaussian 512x512 row `pairs` times, reference then compiled, each in a fresh child process;
    prints each pair as it is measured and returns them."""
    row = {"repeat": repeat, "threads": threads, "scene": "random", "count": 1_000_000, "width": 512, "height": 512}
    print(f"\n{'pair':>4} {'torch s':>8} {'CPU s':>7} {'compiled s':>10} {'CPU s':>7} {'ratio':>6} {'CPU ratio':>9} "
          f"{'load':>5}")
    results = []
    for i in range(pairs):
        ref = run_row({**row, "backend": "torch", "repeat": 1}, reference_timeout)
        ours = run_row({**row, "backend": "compiled"}, timeout=600)
        if ref is None or ours is None:
            print(f"{i + 1:>4} timed out")
            continue
        pair = {"ratio": ref["seconds"] / ours["seconds"], "cpu_ratio": ref["cpu"] / ours["cpu"],
                "load": os.getloadavg()[0]}
        results.append(pair)
        print(f"{i + 1:>4} {ref['seconds']:8.3f} {ref['cpu']:7.2f} {ours['seconds']:10.3f} {ours['cpu']:7.2f} "
              f"{pair['ratio']:5.2f}x {pair['cpu_ratio']:8.2f}x {pair['load']:5.1f}", flush=True)
    return results


def machine_line(threads: int | None) -> str:
    return (f"CPU: {cpu_name()}, {os.cpu_count()} cores, threads: {threads or 'all'}, torch {torch.__version__}, "
            f"load average before: {os.getloadavg()[0]:.1f}")


def ratio_summary(values: list[float]) -> str:
    """Median, quartiles and range of per-pair ratios."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return (f"median {median:.2f}x (quartiles {q1:.2f}-{q3:.2f}x, range {min(values):.2f}-{max(values):.2f}x, "
            f"{len(values)} pairs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small counts and sizes only (a smoke run)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, help="render threads (default: all cores)")
    parser.add_argument("--reference-timeout", type=float, default=300,
                        help="seconds after which a reference row is given up (default 300)")
    parser.add_argument("--interleave", type=int, metavar="PAIRS",
                        help="only the 1M row at 512x512, PAIRS times, reference and compiled alternating; prints "
                             "the median and spread of the ratio")
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure(json.loads(args.row))))
        return
    if args.interleave:
        print(machine_line(args.threads))
        pairs = interleaved(args.interleave, args.repeat, args.threads, args.reference_timeout)
        if pairs:
            print(f"\nwall ratio: {ratio_summary([p['ratio'] for p in pairs])}")
            print(f"CPU ratio: {ratio_summary([p['cpu_ratio'] for p in pairs])}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        return

    print(machine_line(args.threads))
    counts = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000, 4_200_000]
    sizes = [(128, 128), (256, 256)] if args.quick else [(512, 512), (1024, 1024), (1920, 1080), (3840, 2160)]
    base = {"repeat": args.repeat, "threads": args.threads}
    count_rows = [{**base, "scene": "random", "count": n, "width": sizes[0][0], "height": sizes[0][1]}
                  for n in counts]
    size_rows = [{**base, "scene": "random", "count": counts[-2], "width": w, "height": h} for w, h in sizes[1:]]
    room = {**base, "scene": "room", "count": 0, "width": 1920, "height": 1080}
    if args.quick:
        room.update(width=192, height=108)

    print(f"\n{'scene':>6} {'Gaussians':>10} {'resolution':>10} {'pairs/px':>8} {'compiled s':>10} {'CPU s':>7} "
          f"{'peak GB':>7} {'torch s':>8} {'CPU s':>7} {'peak GB':>7} {'ratio':>6}")
    for row in count_rows + size_rows + [room]:
        ours = run_row({**row, "backend": "compiled"}, timeout=600)
        # The reference only where it finishes in reasonable time: up to 1M Gaussians at 512x512, and the room.
        small = row["count"] <= 1_000_000 and row["width"] * row["height"] <= 512 * 512
        ref = run_row({**row, "backend": "torch", "repeat": 1}, args.reference_timeout) \
            if small or row["scene"] == "room" else None
        print(table_line(row, ours, ref), flush=True)

    total, previews, reference = preview_share()
    print(f"\ndefault generate of the room with 8 previews at 256 px: {total:.1f} s, previews {previews:.2f} s "
          f"({100 * previews / total:.0f}%); the same previews with the torch reference: {reference:.2f} s "
          f"(would be {100 * reference / (total - previews + reference):.0f}%)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if torch.cuda.is_available():
        gpu_table(counts[:-1], args.repeat)


def gpu_table(counts: list[int], repeat: int) -> None:
    """On CUDA: the torch reference vs gsplat, same scene, in this process."""
    print(f"\nGPU: {torch.cuda.get_device_name()}")
    print(f"{'count':>9} {'resolution':>10} {'torch s':>8} {'gsplat s':>9} {'ratio':>7}")
    for count in counts:
        gaussians, cameras = scene(count, 512)
        gaussians, cameras = gaussians.to("cuda"), cameras.to("cuda")
        times = []
        for backend in ("torch", "gsplat"):
            with torch.no_grad():
                render(gaussians, cameras, backend=backend)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(repeat):
                    render(gaussians, cameras, backend=backend)
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / repeat)
        print(f"{count:>9} {512:>4}x{512:<5} {times[0]:>8.4f} {times[1]:>9.5f} {times[0] / times[1]:>7.1f}")


if __name__ == "__main__":
    main()
