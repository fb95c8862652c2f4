"""Import speed of 3DGS PLYs into Blender point clouds: seconds and peak memory for 1M and 4.2M Gaussians.

    .venv/bin/python benchmarks/bench_blender.py [--sizes 1000000 4200000] [--sh-degree 0]

Each size is written by the add-on's writer (random Gaussians), then imported by
`wonderland.import_gaussians` in a fresh process, so peak memory is that import's alone.
Goal (gaussians.md): 4.2M Gaussians in ≤ 2 s on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_description  # noqa: E402  (benchmarks/ is the script's folder)


def write_random(path: Path, n: int, sh_degree: int) -> None:
    import numpy as np
    from wonderland_blender.plyio import Splats, write_ply
    rng = np.random.default_rng(0)
    k = (sh_degree + 1) ** 2 - 1
    f = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    write_ply(path, Splats(f(n, 3), f(n, 3), f(n, k, 3), f(n), f(n, 3) - 3, f(n, 4)))


def child(path: str) -> None:
    """Import one file and print a JSON line with the timings and peak memory (this process only)."""
    import bpy
    from wonderland_blender import ops_io
    from wonderland_blender.plyio import read_ply
    bpy.ops.wm.read_factory_settings(use_empty=True)
    ops_io.register()
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    read_ply(path)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    bpy.ops.wonderland.import_gaussians(filepath=path)
    t_import = time.perf_counter() - t0
    n = len(bpy.context.active_object.data.points)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "read_s": t_read, "import_s": t_import, "peak_mb": peak_mb,
                      "base_mb": base_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_200_000])
    parser.add_argument("--sh-degree", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"{n}.ply"
            write_random(path, n, args.sh_degree)
            size_mb = path.stat().st_size / 2**20
            out = subprocess.run([sys.executable, __file__, "--child", str(path)], check=True,
                                 capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            rows.append((n, size_mb, result))
            path.unlink()
    print(f"device: {cpu_description()}; SH degree {args.sh_degree}; Blender {__import__('bpy').app.version_string}")
    print(f"{'Gaussians':>10} {'file MB':>8} {'read s':>7} {'import s':>9} {'peak MB':>8} {'+ over bpy MB':>13}")
    for n, size_mb, r in rows:
        print(f"{r['n']:>10,} {size_mb:>8.0f} {r['read_s']:>7.2f} {r['import_s']:>9.2f} {r['peak_mb']:>8.0f} "
              f"{r['peak_mb'] - r['base_mb']:>13.0f}")


if __name__ == "__main__":
    main()
