"""Novel-view quality on held-out synthetic scenes: PSNR / SSIM of views rendered from the produced
Gaussians against the ground-truth renders.

    .venv/bin/python benchmarks/bench_quality.py --data DIR --model NAME|DIR [--scenes N] [--steps S] [--levers]

DIR holds held-out scenes (tools/synthetic_scenes.py --split test; each with depth/0000.npy). Rows:
- full pipeline: generate() on frame 0 and the clip's cameras (image -> latents -> Gaussians);
- LaLRM on ground-truth latents (upper bound of the pipeline): the clip's real frames, cropped like
  generate's input (wonderland.model_inputs), encoded with the model's VAE, then predict_gaussians;
- baselines: frame 0 on camera 0's fronto-parallel plane at the median depth of frame 0, and frame 0
  unchanged as the prediction for every view;
- a yardstick: frame 0 blurred as every view (PSNR rewards blur; a model that only blurs scores this);
- with --levers, the full pipeline again with each speed lever (what they cost in quality).
The clip is the first 1 + (F - 1)k frames of a scene (F = the model's frame count, k as large as fits),
so every model frame has a ground-truth image; later frames are scored separately ("beyond").
Scores are averaged over all views of all scenes. Δ columns: novel-view scores minus each baseline's.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.cameras import CameraBatch, normalize  # noqa: E402
from backend.data.latent_cache import encode_video  # noqa: E402
from backend.errors import InputError  # noqa: E402
from backend.evaluation import (EvalScene, SceneScores, blurred_baseline, evaluate_scene,  # noqa: E402
                                load_eval_scene, mean_scores, plane_method, unchanged_baseline)
from backend.gaussians import Gaussians  # noqa: E402
from backend.pipelines.wonderland import WonderlandPipeline, generate, load_pipeline, model_inputs  # noqa: E402
from machine import device_name  # noqa: E402

PLANE, UNCHANGED = "plane baseline", "unchanged baseline"
# generate's speed levers that act on an unguided model (guidance_fraction needs prompt embeddings)
SPEED_LEVERS = {"ControlNet first 40%": dict(controlnet_fraction=0.4),
                "pyramid attention broadcast": dict(cache="pab"),
                "ControlNet 40% + pyramid attention broadcast": dict(controlnet_fraction=0.4, cache="pab")}


def clip_length(scene_frames: int, model_frames: int) -> int:
    """The longest 1 + (model_frames - 1)k <= scene_frames: resampling it to the model lands on real frames."""
    if scene_frames < model_frames:
        raise InputError(f"a scene of {scene_frames} frames is shorter than the model's {model_frames}",
                         f"render held-out scenes with --frames {model_frames} or more")
    return 1 + (model_frames - 1) * ((scene_frames - 1) // (model_frames - 1))


def pipeline_method(pipe: WonderlandPipeline, steps: int | None, seed: int, device: torch.device, **levers):
    """generate() on frame 0; `levers` are its speed options (controlnet_fraction, cache, ...)."""
    def run(image: np.ndarray, cameras: CameraBatch, scene: EvalScene) -> Gaussians:
        return generate(pipe, image, cameras, steps=steps, seed=seed, preview_count=0, device=device,
                        **levers).gaussians
    return run


def gt_latents_method(pipe: WonderlandPipeline, seed: int, device: torch.device):
    """The LaLRM on the VAE latents of the real frames at the model's frames (cropped as generate crops)."""
    def run(image: np.ndarray, cameras: CameraBatch, scene: EvalScene) -> Gaussians:
        frames = pipe.config.frames
        step = (len(cameras) - 1) // (frames - 1)
        pixels = []
        for i in range(0, len(cameras), step):
            crop, fitted, _ = model_inputs(pipe, scene.image(i), cameras)
            pixels.append(torch.from_numpy(crop).permute(2, 0, 1))
        video = torch.stack(pixels)[None]                                         # [1, F, 3, H, W]
        cams_norm, normalization = normalize(fitted)
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            latents = encode_video(pipe.vae, video, generator).to(pipe.lalrm.dtype)
            local = pipe.lalrm.predict_gaussians(latents[0], cams_norm, prune_opacity=pipe.config.prune_opacity,
                                                 max_count=pipe.config.max_gaussians)
            return normalization.gaussians_to_world(local).detach().to("cpu", torch.float32)
    return run


def fmt(value: float, digits: int = 2, signed: bool = False) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def delta(scores: dict[str, float], baseline: dict[str, float]) -> str:
    return (f"{fmt(scores['psnr'] - baseline['psnr'], signed=True)} dB / "
            f"{fmt(scores['ssim'] - baseline['ssim'], 3, signed=True)}")


def table(results: dict[str, list[SceneScores]]) -> str:
    """The markdown table: per method, mean novel / beyond / input scores and Δ novel PSNR vs baselines."""
    novel = {m: mean_scores([v for s in r for v in s.novel]) for m, r in results.items()}
    beyond = {m: mean_scores([v for s in r for v in s.beyond]) for m, r in results.items()}
    inputs = {m: mean_scores([s.input for s in r]) for m, r in results.items()}
    lines = ["| method | novel PSNR ↑ | novel SSIM ↑ | beyond-clip PSNR ↑ | input-view PSNR ↑ "
             "| Δ novel PSNR / SSIM vs plane | Δ novel PSNR / SSIM vs unchanged |",
             "|---|---|---|---|---|---|---|"]
    for m in results:
        lines.append(f"| {m} | {fmt(novel[m]['psnr'])} | {fmt(novel[m]['ssim'], 3)} | {fmt(beyond[m]['psnr'])} "
                     f"| {fmt(inputs[m]['psnr'])} | {delta(novel[m], novel[PLANE])} "
                     f"| {delta(novel[m], novel[UNCHANGED])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of held-out scene folders")
    parser.add_argument("--model", required=True, help="model folder, shipped model name, or `tiny` (random)")
    parser.add_argument("--scenes", type=int, default=None, help="first N scenes (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levers", action="store_true",
                        help="add full-pipeline rows with the speed levers that apply without guidance")
    args = parser.parse_args(argv)
    folders = sorted(p.parent for p in args.data.glob("*/cameras.json"))[:args.scenes]
    if not folders:
        parser.error(f"no scene folders (with cameras.json) in {args.data}: render some with "
                     "tools/synthetic_scenes.py --split test")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(args.model).to(device)
    methods = {"full pipeline (image → latents → Gaussians)": pipeline_method(pipe, args.steps, args.seed, device),
               "LaLRM on ground-truth latents (upper bound)": gt_latents_method(pipe, args.seed, device),
               PLANE: plane_method, UNCHANGED: unchanged_baseline,
               "blurred input (a yardstick: what blur alone scores)": blurred_baseline}
    if args.levers:
        for name, levers in SPEED_LEVERS.items():
            methods[f"full pipeline, {name}"] = pipeline_method(pipe, args.steps, args.seed, device, **levers)
    results: dict[str, list[SceneScores]] = {m: [] for m in methods}
    t0 = time.perf_counter()
    for folder in folders:
        scene = load_eval_scene(folder)
        clip = clip_length(len(scene.frames), pipe.config.frames)
        for name, method in methods.items():
            results[name].append(evaluate_scene(scene, method, clip, device))
        print(f"{scene.name}: {len(scene.frames)} frames, clip {clip}", flush=True)
    weights = f"{pipe.source.upper()}: the numbers are meaningless" if pipe.random_weights else pipe.source
    print(f"\nModel: {args.model} ({weights}). Scenes: {len(folders)} from {args.data}. "
          f"Device: {device_name(device)}. {time.perf_counter() - t0:.1f} s.\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
