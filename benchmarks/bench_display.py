"""The splat display in Blender: EEVEE and Cycles against the Wonderland engine, and EEVEE's cost at scale.

    .venv/bin/python benchmarks/bench_display.py --blend demo_out/room/scene.blend [--sizes 100000]

`--blend`: a .blend with a Gaussian object and a camera (tools/demo.py writes one per input). Frame 1 is
rendered by the Wonderland engine (the backend's splat renderer), EEVEE (the "Wonderland Splats" quads) and
Cycles, over a black World with the Standard view transform, and each pair's PSNR is printed, with the
frame times. `--sizes`: random Gaussians imported (the operator's own code path, display included) and
rendered by EEVEE at 256² and 16 samples, first frame (shader compilation included) and second, then once
at 1 sample. Every run is a fresh
process. Headless EEVEE here runs on software OpenGL (llvmpipe): its times say nothing about a GPU.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_description  # noqa: E402  (benchmarks/ is the script's folder)

ENGINES = ("WONDERLAND_GAUSSIANS", "BLENDER_EEVEE", "CYCLES")


def _black_standard_scene(scene) -> None:
    import bpy
    scene.view_settings.view_transform, scene.view_settings.look = 'Standard', 'None'
    scene.render.film_transparent = False
    scene.world = bpy.data.worlds.new("Black")
    scene.world.color = (0.0, 0.0, 0.0)
    for node in scene.world.node_tree.nodes if scene.world.node_tree else []:
        if node.type == 'BACKGROUND':
            node.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)


def _render(scene, engine: str, path: Path):
    import bpy
    import numpy as np
    from PIL import Image
    scene.render.engine = engine
    scene.render.filepath = str(path)
    start = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    seconds = time.perf_counter() - start
    return np.asarray(Image.open(path).convert("RGB"), np.float64) / 255, seconds


def child_compare(blend: str, out: str) -> dict:
    import bpy  # first: it puts addon_utils on sys.path
    import addon_utils
    import numpy as np
    from wonderland_blender import render_engine
    addon_utils.enable("wonderland_blender", default_set=True, handle_error=None)
    bpy.ops.wm.open_mainfile(filepath=blend)  # with the add-on on: an older display is brought up to date
    scene = bpy.context.scene
    scene.frame_set(scene.frame_start)
    _black_standard_scene(scene)
    scene.eevee.taa_render_samples, scene.cycles.samples, scene.cycles.device = 16, 32, 'CPU'
    images, seconds = {}, {}
    for engine in ENGINES:
        images[engine], seconds[engine] = _render(scene, engine, Path(out) / f"{engine.lower()}.png")
    render_engine.shutdown()
    psnr = {f"{a} vs {b}": float(10 * np.log10(1 / np.mean((images[a] - images[b]) ** 2)))
            for i, a in enumerate(ENGINES) for b in ENGINES[i + 1:]}
    points = sum(len(o.data.points) for o in scene.objects if o.type == 'POINTCLOUD')
    return {"gaussians": points, "size": [scene.render.resolution_x, scene.render.resolution_y],
            "seconds": seconds, "psnr": psnr}


def child_scale(n: int, out: str) -> dict:
    import math
    import bpy
    import numpy as np
    from wonderland_blender import ops_io
    from wonderland_blender.plyio import Splats, write_ply
    bpy.ops.wm.read_factory_settings(use_empty=True)
    ops_io.register()
    rng = np.random.default_rng(0)
    path = Path(out) / f"random-{n}.ply"
    write_ply(path, Splats(rng.uniform(-1, 1, (n, 3)).astype(np.float32),
                           rng.normal(0, 1, (n, 3)).astype(np.float32), np.zeros((n, 0, 3), np.float32),
                           rng.normal(-2, 1.5, n).astype(np.float32),
                           np.log(rng.uniform(0.005, 0.03, (n, 3))).astype(np.float32),
                           rng.normal(size=(n, 4)).astype(np.float32)))
    scene = bpy.context.scene
    start = time.perf_counter()
    bpy.ops.wonderland.import_gaussians(filepath=str(path))
    bpy.context.evaluated_depsgraph_get()  # the viewport evaluation of the display modifier
    import_seconds = time.perf_counter() - start
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    cam.location, cam.rotation_euler = (0.0, -3.5, 0.0), (math.pi / 2, 0.0, 0.0)
    scene.collection.objects.link(cam)
    scene.camera = cam
    scene.render.resolution_x = scene.render.resolution_y = 256
    scene.eevee.taa_render_samples = 16
    _black_standard_scene(scene)
    _, first = _render(scene, 'BLENDER_EEVEE', Path(out) / f"eevee-{n}.png")
    _, second = _render(scene, 'BLENDER_EEVEE', Path(out) / f"eevee-{n}.png")
    scene.eevee.taa_render_samples = 1  # sorted Blended quads are right in one sample; more only antialias
    _, one_sample = _render(scene, 'BLENDER_EEVEE', Path(out) / f"eevee-{n}-1spp.png")
    return {"gaussians": n, "import_s": import_seconds, "eevee_first_s": first, "eevee_second_s": second,
            "eevee_one_sample_s": one_sample}


def run_child(out: str, *args: str) -> dict:
    """A child run of this script: its renders go to `out`, as the parent's do."""
    done = subprocess.run([sys.executable, __file__, "--child", *args, "--out", out], capture_output=True, text=True,
                          cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blend", help="a .blend with Gaussians and a camera (e.g. demo_out/room/scene.blend)")
    p.add_argument("--sizes", type=int, nargs="*", default=[100_000], help="random Gaussians for the timing rows")
    p.add_argument("--out", default="/tmp/wonderland-bench-display", help="where the renders are written")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, value = args.child
        result = child_compare(value, args.out) if kind == "compare" else child_scale(int(value), args.out)
        print(json.dumps(result))
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print(f"device: {cpu_description()}; EEVEE on software OpenGL (headless bpy 5.0.1); renders in {args.out}")
    if args.blend:
        r = run_child(args.out, "compare", args.blend)
        print(f"\n{r['gaussians']:,} Gaussians at {r['size'][0]}×{r['size'][1]}, frame 1, black World, Standard\n")
        print("| renderer | frame s |\n|---|---:|")
        for engine, seconds in r["seconds"].items():
            print(f"| {engine} | {seconds:.1f} |")
        print("\n| pair | PSNR dB |\n|---|---:|")
        for pair, value in r["psnr"].items():
            print(f"| {pair} | {value:.2f} |")
    print("\n| Gaussians | import + display eval s | EEVEE 1st frame s | EEVEE 2nd frame s | 2nd at 1 sample s |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        r = run_child(args.out, "scale", str(n))
        print(f"| {n:,} | {r['import_s']:.2f} | {r['eevee_first_s']:.1f} | {r['eevee_second_s']:.1f} | "
              f"{r['eevee_one_sample_s']:.1f} |")


if __name__ == "__main__":
    main()
