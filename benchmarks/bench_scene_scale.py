"""Scene scale: how predictable a scene's depth is in metres versus in the path-normalized frame.

    .venv/bin/python benchmarks/bench_scene_scale.py --data DIR [DIR ...] [--model NAME|DIR] [--scenes N]

The model sees cameras normalized by the move (backend.cameras.normalize: the farthest camera is 1 unit from
camera 0), so the depth it must predict is the metric depth divided by the move's length s. For each scene
folder with depth/0000.npy this prints the spread over scenes of frame 0's median depth in metres and in
normalized units (standard deviation of its log, and the mean AbsRel of the geometric-mean constant, the
geometric mean over scenes: what a model that knew nothing but the unit would score on the median). Scenes
whose cameras do not move (a pan: normalize then keeps scale 1.0, which is no move length) are skipped. With
--model it adds the model's own median scale error in each unit: its rendered depth at camera 0 (detail
layer off) against the truth, median to median, in normalized units as predicted and after the world
mapping (the same number: the pipeline maps its normalized depth to metres with the move's s).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.cameras import MIN_TRANSLATION, normalize  # noqa: E402
from backend.data.depth import silhouette_mask  # noqa: E402
from backend.evaluation import load_eval_scene  # noqa: E402
from machine import cpu_description  # noqa: E402


def spread(log_medians: np.ndarray) -> tuple[float, float]:
    """(std of log median depth, mean AbsRel of the geometric-mean constant: the geometric mean of the medians)."""
    constant = math.exp(float(np.mean(log_medians)))
    medians = np.exp(log_medians)
    return float(np.std(log_medians)), float(np.mean(np.abs(constant - medians) / medians))


def moved(cameras) -> bool:
    """Whether the farthest camera is at least normalize's MIN_TRANSLATION from camera 0 (else a pan)."""
    centres = cameras.c2w[:, :3, 3].cpu().double()
    return float((centres - centres[0]).norm(dim=-1).max()) >= MIN_TRANSLATION


def model_medians(model: str, scenes: list) -> np.ndarray:
    """log(median rendered depth / median true depth) per scene, the model's detail layer off."""
    from backend.pipelines.wonderland import generate, load_pipeline
    from backend.render import render
    pipe = load_pipeline(model)
    errors = []
    for scene in scenes:
        step = max(1, (len(scene.frames) - 1) // (pipe.config.frames - 1))
        clip = scene.cameras[0:1 + step * (pipe.config.frames - 1)]
        result = generate(pipe, scene.image(0), clip, preview_count=0, detail_size=0)
        with torch.no_grad():
            out = render(result.gaussians, scene.cameras[0])
        z, alpha = out.depth[0, ..., 0].numpy(), out.alpha[0, ..., 0].numpy()
        valid = (alpha > 0.5) & silhouette_mask(scene.depth0)
        errors.append(math.log(np.median(z[valid]) / np.median(scene.depth0[valid])))
    return np.array(errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="folders of scene folders with depth/")
    parser.add_argument("--model", help="also measure this model's median scale error (e.g. default)")
    parser.add_argument("--scenes", type=int, default=None, help="first N scenes of each folder (default: all)")
    args = parser.parse_args(argv)
    folders = [f for d in args.data for f in sorted(p.parent.parent for p in d.glob("*/depth/0000.npy"))[:args.scenes]]
    if not folders:
        parser.error(f"no scene folders with depth/0000.npy in {', '.join(map(str, args.data))}: render some with "
                     "tools/synthetic_scenes.py")
    scenes = [load_eval_scene(f) for f in folders]
    moving = [s for s in scenes if moved(s.cameras)]
    skipped = len(scenes) - len(moving)
    scenes = moving
    if not scenes:
        parser.error("no scene with a camera move (all are pans): the move's length is undefined")
    metric, normalized, moves = [], [], []
    for scene in scenes:
        _, norm = normalize(scene.cameras)
        median = float(np.median(scene.depth0[silhouette_mask(scene.depth0)]))
        metric.append(math.log(median))
        normalized.append(math.log(median / norm.scale))
        moves.append(norm.scale)
    print(f"{len(scenes)} scenes from {', '.join(map(str, args.data))} ({skipped} skipped: their cameras do not "
          f"move, a pan). CPU: {cpu_description()}.\n")
    print(f"camera move (farthest camera from camera 0): median {np.median(moves):.3g} m, "
          f"range {min(moves):.3g}–{max(moves):.3g} m\n")
    print("| unit | median depth, geometric mean | std of log median | AbsRel of the geometric-mean constant |")
    print("|---|---:|---:|---:|")
    for name, values in (("metres", np.array(metric)), ("normalized by the move", np.array(normalized))):
        std, absrel = spread(values)
        print(f"| {name} | {math.exp(values.mean()):.3g} | {std:.3f} | {absrel:.3f} |")
    if args.model:
        errors = model_medians(args.model, scenes)
        print(f"\n{args.model}, detail layer off: median rendered depth at camera 0 / median true depth: geometric "
              f"mean {math.exp(errors.mean()):.3f}, mean |log ratio| {np.abs(errors).mean():.3f} "
              f"(a ratio off by ×{math.exp(np.abs(errors).mean()):.2f} on average), std of log ratio "
              f"{errors.std():.3f}; correlation of its log median with the truth's (normalized units) "
              f"{np.corrcoef(np.array(normalized) + errors, normalized)[0, 1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
