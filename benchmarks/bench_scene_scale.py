"""Scene scale: how predictable a scene's depth is in metres versus in the path-normalized frame.

    .venv/bin/python benchmarks/bench_scene_scale.py --data DIR [DIR ...] [--model NAME|DIR] [--scenes N]

The model sees cameras normalized by the move (backend.cameras.normalize: the farthest camera is 1 unit from
camera 0), so the depth it must predict is the metric depth divided by the move's length s. For each scene
folder with depth/0000.npy this prints the spread over scenes of frame 0's median depth in metres and in
normalized units (standard deviation of its log, and the mean AbsRel of the geometric-mean constant, the
geometric mean over scenes: what a model that knew nothing but the unit would score on the median). Scenes
whose cameras do not move (a pan: normalize then keeps scale 1.0, which is no move length) are skipped. With
--model it adds the model's own median scale error: its rendered depth at camera 0 (detail layer off) against
the truth, median to median, from the video model's latents (the full pipeline) and from the real frames'
latents (the LaLRM alone), and where its scale comes from: the exponent b of median depth ∝ k^b when every
camera's offset from camera 0 is scaled by k (½ and 2, real frames' latents). b = 1 reads the move's length
(a path-scale model, by construction; or a metric one that reads parallax), b = 0 guesses from appearance.
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

from backend.cameras import MIN_TRANSLATION, CameraBatch, normalize  # noqa: E402
from backend.data.depth import silhouette_mask  # noqa: E402
from backend.evaluation import EvalScene, load_eval_scene  # noqa: E402
from backend.gaussians import Gaussians  # noqa: E402
from backend.pipelines.wonderland import load_pipeline  # noqa: E402
from backend.render import render  # noqa: E402
from bench_quality import clip_length, gt_latents_method, pipeline_method  # noqa: E402
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


def moved_by(cameras: CameraBatch, k: float) -> CameraBatch:
    """The same cameras with every centre's offset from camera 0 scaled by k (a k-times longer move)."""
    c2w = cameras.c2w.clone()
    c2w[:, :3, 3] = c2w[0, :3, 3] + k * (c2w[:, :3, 3] - c2w[0, :3, 3])
    return CameraBatch(cameras.K, c2w, cameras.width, cameras.height, list(cameras.frames))


def log_median_depth(gaussians: Gaussians, scene: EvalScene) -> float:
    """log(median rendered depth / median true depth) at camera 0, where both show a surface."""
    with torch.no_grad():
        out = render(gaussians, scene.cameras[0])
    z, alpha = out.depth[0, ..., 0].numpy(), out.alpha[0, ..., 0].numpy()
    valid = (alpha > 0.5) & silhouette_mask(scene.depth0)
    return math.log(np.median(z[valid]) / np.median(scene.depth0[valid]))


def model_medians(model: str, scenes: list[EvalScene]) -> dict[str, np.ndarray]:
    """Per scene: the log median ratios of the full pipeline ("generated") and of the LaLRM on the real frames'
    latents ("true"), and the exponent b of the true-latent median's response to the move's length ("b")."""
    pipe = load_pipeline(model)
    device = torch.device("cpu")
    full, real = pipeline_method(pipe, None, 0, device, detail_size=0), gt_latents_method(pipe, 0, device)
    found = {"generated": [], "true": [], "b": []}
    for scene in scenes:
        clip = scene.cameras[0:clip_length(len(scene.frames), pipe.config.frames)]
        image = scene.image(0)
        found["generated"].append(log_median_depth(full(image, clip, scene), scene))
        found["true"].append(log_median_depth(real(image, clip, scene), scene))
        half, double = (log_median_depth(real(image, moved_by(clip, k), scene), scene) for k in (0.5, 2.0))
        found["b"].append((double - half) / math.log(4.0))
    return {key: np.array(values) for key, values in found.items()}


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
        found = model_medians(args.model, scenes)
        print(f"\n{args.model}, detail layer off: median rendered depth at camera 0 / median true depth\n")
        print("| latents the LaLRM reads | ratio, geometric mean | mean \\|log ratio\\| | off by, on average |")
        print("|---|---:|---:|---:|")
        for name, key in (("the video model's (full pipeline)", "generated"), ("the real frames'", "true")):
            errors = found[key]
            print(f"| {name} | {math.exp(errors.mean()):.3f} | {np.abs(errors).mean():.3f} | "
                  f"×{math.exp(np.abs(errors).mean()):.2f} |")
        b = found["b"]
        print(f"\ncorrelation of the two log ratios over scenes: "
              f"{np.corrcoef(found['generated'], found['true'])[0, 1]:.2f}" if len(scenes) > 1 else "")
        print(f"response to the move's length (median ∝ k^b, k = ½ and 2, real frames' latents): b = {b.mean():.3f} "
              f"(range {b.min():.3f} to {b.max():.3f}; 1: reads the move, 0: guesses from appearance)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
