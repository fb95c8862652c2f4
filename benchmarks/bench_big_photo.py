"""Reading a large photo for `generate`: a full decode vs the reduced decode generate uses (issue 16 item 6).

Each row loads the image in a fresh child process (Linux: its peak RSS from /proc, less that of the imports
alone, torch included) and prints wall time and peak memory, side by side in one run:

    python benchmarks/bench_big_photo.py [--width 6000 --height 4500] [--formats jpg png]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_description  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
from backend.images import load_rgb
started = time.perf_counter()
rgb = load_rgb(sys.argv[1], min_side=int(sys.argv[2]) or None)
seconds = time.perf_counter() - started
# VmHWM, not ru_maxrss: the latter keeps the forking parent's size across exec
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"s": seconds, "shape": list(rgb.shape), "peak_gb": hwm / 2**20}))
"""


def make_photo(path: Path, width: int, height: int) -> None:
    """A smooth picture with some texture: photo-like for the codecs, quick to make."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 37.0) * np.cos(y / 53.0)], axis=-1)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path, quality=90)


def measure(path: Path, min_side: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(min_side)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4500)
    parser.add_argument("--formats", nargs="+", default=["jpg", "png"])
    parser.add_argument("--min-side", type=int, default=1024, help="generate's decode minimum (shorter side)")
    args = parser.parse_args()
    print(f"device: {cpu_description()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        make_photo(Path(tmp) / "small.png", 16, 16)
        base = measure(Path(tmp) / "small.png", 0)["peak_gb"]  # the imports (torch) without a picture
        print(f"peak RSS of the imports alone: {base:.2f} GB; the table adds what the decode took on top\n")
        print("| format | photo | decode | shape | s | peak RSS above imports (GB) |\n|---|---|---|---|---:|---:|")
        for fmt in args.formats:
            path = Path(tmp) / f"photo.{fmt}"
            make_photo(path, args.width, args.height)
            for label, min_side in (("full", 0), (f"reduced (≥ {args.min_side})", args.min_side)):
                r = measure(path, min_side)
                shape = "×".join(map(str, r["shape"][:2][::-1]))
                print(f"| {fmt} | {args.width}×{args.height} | {label} | {shape} | {r['s']:.2f} | "
                      f"{r['peak_gb'] - base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
