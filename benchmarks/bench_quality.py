"""Novel-view quality on held-out synthetic scenes: PSNR / SSIM of views rendered from the produced
Gaussians against the ground-truth renders.

    .venv/bin/python benchmarks/bench_quality.py --data DIR --model NAME|DIR [--scenes N] [--steps S] [--levers]
                                                 [--known-distance]
                                                 [--data-4x DIR4] [--refiner FILE|MODEL_DIR]

DIR holds held-out scenes (tools/synthetic_scenes.py --split test; each with depth/0000.npy). Rows:
- full pipeline: generate() on frame 0 and the clip's cameras (image -> latents -> Gaussians), with the
  detail layer at its default size (backend/detail.py; capped at the photo's size, so at the test
  scenes' 96x64 it lifts the photo at the model's size), and again with the detail layer off (the paper's);
- LaLRM on ground-truth latents (upper bound of the pipeline): the clip's real frames, cropped like
  generate's input (wonderland.model_inputs), encoded with the model's VAE, then predict_gaussians;
- baselines: frame 0 on camera 0's fronto-parallel plane at the median depth of frame 0, and frame 0
  unchanged as the prediction for every view;
- a yardstick: frame 0 blurred as every view (PSNR rewards blur; a model that only blurs scores this);
- with --levers, the full pipeline again with each speed lever (what they cost in quality);
- with --known-distance, the full pipeline again told frame 0's true median depth as its Subject Distance
  (generate's subject_distance: what an artist who knows how far the subject is gets);
- with --refiner, the full pipeline again with that detail-layer refiner (backend/models/refiner.py) beside
  the model's own detail layer, side by side on the same latents (same seed).
The clip is the first 1 + (F - 1)k frames of a scene (F = the model's frame count, k as large as fits),
so every model frame has a ground-truth image; later frames are scored separately ("beyond").
Scores are averaged over all views of all scenes. Δ columns: novel-view scores minus each baseline's.
"Near" is frames 1-2 (the views next to the input). A third table gives, for the Gaussian methods, frame 0's
depth rendered at camera 0 (expected z, where alpha > 0.5) against the scene's depth/0000.npy where it shows a
surface (not the sky of open rooms, backend/data/depth.py): AbsRel and the share of pixels within 1.25x
(δ < 1.25). With --data-4x (the same test seeds rendered at 4x the model's size, e.g. --size 384x256), a
second table gives each Gaussian method's input-view PSNR / SSIM there, generate given the photo at that
size and rendered at camera 0 at that size.
"""
from __future__ import annotations

import argparse
import dataclasses
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
from backend.data.depth import surface_mask  # noqa: E402
from backend.data.latent_cache import encode_video  # noqa: E402
from backend.errors import InputError  # noqa: E402
from backend.evaluation import (EvalScene, SceneScores, blurred_baseline, evaluate_scene,  # noqa: E402
                                load_eval_scene, mean_scores, plane_method, render_views, unchanged_baseline)
from backend.gaussians import Gaussians  # noqa: E402
from backend.models.model_dir import read_part  # noqa: E402
from backend.models.refiner import Refiner  # noqa: E402
from backend.render import render  # noqa: E402
from backend.pipelines.wonderland import WonderlandPipeline, generate, load_pipeline, model_inputs  # noqa: E402
from backend.training.losses import DEPTH_MIN_ALPHA  # noqa: E402
from backend.training.metrics import image_metrics  # noqa: E402
from machine import device_name  # noqa: E402

PLANE, UNCHANGED = "plane baseline", "unchanged baseline"
FULL, DETAIL_OFF = "full pipeline (image → latents → Gaussians)", "full pipeline, detail layer off (the paper's)"
REFINED = "full pipeline, detail layer + the --refiner"
KNOWN = "full pipeline, Subject Distance = the truth's median depth"
NEAR_VIEWS = 2      # frames 1..2: the "near views" column
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


def pipeline_method(pipe: WonderlandPipeline, steps: int | None, seed: int, device: torch.device,
                    known_distance: bool = False, **levers):
    """generate() on frame 0; `levers` are its speed options (controlnet_fraction, cache, ...). With
    `known_distance`, told frame 0's true median depth as its Subject Distance: what an artist who knows it gets."""
    def run(image: np.ndarray, cameras: CameraBatch, scene: EvalScene) -> Gaussians:
        return generate(pipe, image, cameras, steps=steps, seed=seed, preview_count=0, device=device,
                        subject_distance=scene.median_depth if known_distance else None, **levers).gaussians
    return run


def refiner_of(path: Path) -> Refiner:
    """--refiner: a refiner file, or the one of a model folder."""
    if path.is_dir():
        found = read_part(path, "refiner")
        if found is None:
            raise InputError(f"--refiner {path}: the model folder has no refiner", "give a refiner .safetensors")
        return found
    return Refiner.from_pretrained(path)


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
        cams_norm, normalization = normalize(fitted, by_path=pipe.config.lalrm_by_path)
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
    near = {m: mean_scores([v for s in r for v in s.novel[:NEAR_VIEWS]]) for m, r in results.items()}
    lines = ["| method | novel PSNR ↑ | novel SSIM ↑ | near (1–2) PSNR ↑ | beyond-clip PSNR ↑ "
             "| input-view PSNR ↑ | Δ novel PSNR / SSIM vs plane | Δ novel PSNR / SSIM vs unchanged |",
             "|---|---|---|---|---|---|---|---|"]
    for m in results:
        lines.append(f"| {m} | {fmt(novel[m]['psnr'])} | {fmt(novel[m]['ssim'], 3)} | {fmt(near[m]['psnr'])} "
                     f"| {fmt(beyond[m]['psnr'])} | {fmt(inputs[m]['psnr'])} | {delta(novel[m], novel[PLANE])} "
                     f"| {delta(novel[m], novel[UNCHANGED])} |")
    return "\n".join(lines)


def depth_scores(gaussians: Gaussians, scene: EvalScene, device: torch.device) -> dict[str, float]:
    """AbsRel and δ < 1.25 of the expected camera z at camera 0 against the scene's frame-0 depth."""
    with torch.no_grad():
        out = render(gaussians.to(device), scene.cameras[0].to(device))
    z, alpha = out.depth[0, ..., 0].cpu(), out.alpha[0, ..., 0].cpu()
    truth = torch.from_numpy(scene.depth0)
    # not the sky of open rooms, and only where the render shows something (the depth term's threshold)
    valid = (alpha > DEPTH_MIN_ALPHA) & torch.from_numpy(surface_mask(scene.depth0)) & (z > 0)
    if not valid.any():
        return {"absrel": math.nan, "delta": math.nan}
    z, truth = z[valid], truth[valid]
    return {"absrel": float(((z - truth).abs() / truth).mean()),
            "delta": float((torch.maximum(z / truth, truth / z) < 1.25).float().mean())}


def remembering(method):
    """The method, keeping its last prediction in `.last` (to score its depth without running it again)."""
    def run(image: np.ndarray, cameras: CameraBatch, scene: EvalScene):
        run.last = method(image, cameras, scene)
        return run.last
    return run


def input_view_at_size(scene: EvalScene, method, clip: int, device: torch.device) -> dict[str, float]:
    """PSNR / SSIM at camera 0 of a Gaussian method given the scene's photo at the scene's own size."""
    image = scene.image(0)
    rendered = render_views(method(image, scene.cameras[0:clip], scene), scene.cameras[0], device)[0]
    return image_metrics(torch.from_numpy(rendered).permute(2, 0, 1)[None],
                         torch.from_numpy(image).permute(2, 0, 1)[None])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of held-out scene folders")
    parser.add_argument("--model", required=True, help="model folder, shipped model name, or `tiny` (random)")
    parser.add_argument("--scenes", type=int, default=None, help="first N scenes (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levers", action="store_true",
                        help="add full-pipeline rows with the speed levers that apply without guidance")
    parser.add_argument("--data-4x", type=Path, default=None,
                        help="the same test scenes rendered at 4x the model's size: input-view scores there")
    parser.add_argument("--known-distance", action="store_true",
                        help="also the full pipeline given frame 0's true median depth as --subject-distance")
    parser.add_argument("--refiner", type=Path, default=None,
                        help="a refiner .safetensors (or a model folder with one): a full-pipeline row with it")
    args = parser.parse_args(argv)
    folders = sorted(p.parent for p in args.data.glob("*/cameras.json"))[:args.scenes]
    if not folders:
        parser.error(f"no scene folders (with cameras.json) in {args.data}: render some with "
                     "tools/synthetic_scenes.py --split test")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(args.model).to(device)
    methods = {FULL: pipeline_method(pipe, args.steps, args.seed, device),
               DETAIL_OFF: pipeline_method(pipe, args.steps, args.seed, device, detail_size=0),
               "LaLRM on ground-truth latents (upper bound)": gt_latents_method(pipe, args.seed, device),
               PLANE: plane_method, UNCHANGED: unchanged_baseline,
               "blurred input (a yardstick: what blur alone scores)": blurred_baseline}
    if args.refiner is not None:
        refined = dataclasses.replace(pipe, refiner=refiner_of(args.refiner).to(device))
        methods[REFINED] = pipeline_method(refined, args.steps, args.seed, device)
    if args.known_distance:
        methods[KNOWN] = pipeline_method(pipe, args.steps, args.seed, device, known_distance=True)
    if args.levers:
        for name, levers in SPEED_LEVERS.items():
            methods[f"full pipeline, {name}"] = pipeline_method(pipe, args.steps, args.seed, device, **levers)
    methods = {name: remembering(method) for name, method in methods.items()}
    results: dict[str, list[SceneScores]] = {m: [] for m in methods}
    depths: dict[str, list[dict[str, float]]] = {}
    t0 = time.perf_counter()
    for folder in folders:
        scene = load_eval_scene(folder)
        clip = clip_length(len(scene.frames), pipe.config.frames)
        for name, method in methods.items():
            results[name].append(evaluate_scene(scene, method, clip, device))
            if isinstance(getattr(method, "last", None), Gaussians):
                depths.setdefault(name, []).append(depth_scores(method.last, scene, device))
        print(f"{scene.name}: {len(scene.frames)} frames, clip {clip}", flush=True)
    weights = f"{pipe.source.upper()}: the numbers are meaningless" if pipe.random_weights else pipe.source
    print(f"\nModel: {args.model} ({weights}). Scenes: {len(folders)} from {args.data}. "
          f"Device: {device_name(device)}. {time.perf_counter() - t0:.1f} s.\n")
    print(table(results))
    print(f"\nFrame-0 depth rendered at camera 0 against the scenes' depth ({len(folders)} scenes):\n")
    print("| method | depth AbsRel ↓ | δ < 1.25 ↑ |\n|---|---|---|")
    for name, values in depths.items():
        print(f"| {name} | {fmt(float(np.nanmean([v['absrel'] for v in values])), 3)} "
              f"| {fmt(float(np.nanmean([v['delta'] for v in values])), 3)} |")
    if args.data_4x is not None:
        print(large_input_table(args.data_4x, [f.name for f in folders], pipe,
                                {m: methods[m] for m in (FULL, DETAIL_OFF, REFINED, PLANE) if m in methods}, device))
    return 0


def large_input_table(data: Path, names: list[str], pipe: WonderlandPipeline, methods: dict,
                      device: torch.device) -> str:
    """Input-view scores on the scenes of `data` named like the test scenes (those rendered so far)."""
    folders = [data / n for n in names if (data / n / "cameras.json").is_file()]
    if not folders:
        raise InputError(f"none of the test scenes is in {data}",
                         "render them with tools/synthetic_scenes.py --split test --size 384x256")
    scores: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    size = ""
    for folder in folders:
        scene = load_eval_scene(folder)
        size = f"{scene.cameras.width}×{scene.cameras.height}"
        clip = clip_length(len(scene.frames), pipe.config.frames)
        for name, method in methods.items():
            scores[name].append(input_view_at_size(scene, method, clip, device))
    lines = [f"\nInput view at {size}, the photo given at that size ({len(folders)} scenes from {data}):\n",
             "| method | input-view PSNR ↑ | input-view SSIM ↑ |", "|---|---|---|"]
    for name, values in scores.items():
        mean = mean_scores(values)
        lines.append(f"| {name} | {fmt(mean['psnr'])} | {fmt(mean['ssim'], 3)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
