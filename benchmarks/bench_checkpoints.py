"""Which LaLRM checkpoint to ship: the full pipeline's novel-view PSNR / SSIM on held-out scenes for every
checkpoint of train-lrm runs, each put into a model folder's pipeline in place of its LaLRM.

    .venv/bin/python benchmarks/bench_checkpoints.py --model DIR|NAME --run RUN_DIR [RUN_DIR ...] --data DIR

The trainer validates on VAE latents of held-out clips; what ships is judged on what the pipeline feeds
the LaLRM, the video model's samples, so the choice is made here, on scenes outside the test table
(the default's model card: test-split seeds 1,000,016-1,000,051). The model folder's own LaLRM and the
unchanged-input baseline are the first rows. Checkpoints with EMA weights are scored on those (the
trainer exports them). The last column is bench_quality's frame-0 depth AbsRel (rendered depth at camera 0).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.evaluation import evaluate_scene, load_eval_scene, mean_scores, unchanged_baseline  # noqa: E402
from backend.models.weights import load_state_dict  # noqa: E402
from backend.pipelines.wonderland import load_pipeline  # noqa: E402
from backend.training.engine import checkpoint_weights, list_checkpoints  # noqa: E402
from bench_quality import clip_length, depth_scores, fmt, pipeline_method, remembering  # noqa: E402
from machine import device_name  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder or shipped model name: the VAE and video model")
    parser.add_argument("--run", nargs="+", type=Path, required=True, help="train-lrm run folders")
    parser.add_argument("--data", type=Path, required=True, help="folder of held-out scene folders")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    scenes = [load_eval_scene(p.parent) for p in sorted(args.data.glob("*/cameras.json"))]
    checkpoints = [c for run in args.run for c in list_checkpoints(run)]
    if not scenes or not checkpoints:
        parser.error(f"found {len(scenes)} scenes in {args.data} and {len(checkpoints)} checkpoints in "
                     f"{', '.join(map(str, args.run))}: render scenes with tools/synthetic_scenes.py --split test, "
                     "and point --run at train-lrm --out folders")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(args.model).to(device)
    clips = [clip_length(len(s.frames), pipe.config.frames) for s in scenes]

    def score(method) -> str:
        results, depths = [], []
        for scene, clip in zip(scenes, clips):
            results.append(evaluate_scene(scene, method, clip, device))
            if hasattr(method, "last"):
                depths.append(depth_scores(method.last, scene, device)["absrel"])
        novel, inputs = mean_scores([v for r in results for v in r.novel]), mean_scores([r.input for r in results])
        depth = fmt(sum(depths) / len(depths), 3) if depths else "–"
        return f"{fmt(novel['psnr'])} | {fmt(novel['ssim'], 3)} | {fmt(inputs['psnr'])} | {depth}"

    t0 = time.perf_counter()
    lines = ["| LaLRM | novel PSNR ↑ | novel SSIM ↑ | input-view PSNR ↑ | frame-0 depth AbsRel ↓ |",
             "|---|---:|---:|---:|---:|", f"| unchanged baseline | {score(unchanged_baseline)} |"]
    method = remembering(pipeline_method(pipe, args.steps, args.seed, device))
    lines.append(f"| {args.model} (its own) | {score(method)} |")
    for checkpoint in checkpoints:
        pipe.lalrm.load_state_dict(load_state_dict(checkpoint_weights(checkpoint)))
        lines.append(f"| {checkpoint.parent.parent.name}/{checkpoint.name} | {score(method)} |")
        print(lines[-1], flush=True)
    print(f"\nVideo model: {args.model}. Scenes: {len(scenes)} from {args.data}. Device: {device_name(device)}. "
          f"{time.perf_counter() - t0:.1f} s.\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
