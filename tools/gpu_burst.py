"""A GPU training burst for the default model: minutes of a lent GPU machine train its video model further
(the weak part), then fine-tune its LaLRM on that model's own samples, and send the weights back for the
CPU side to score with benchmarks/bench_checkpoints.py.

On the CPU, before (the latent cache of the training scenes, packed with a size check):
    .venv/bin/python tools/synthetic_scenes.py --out data/train --count 1000 --split train --frames 9 --size 96x64
    .venv/bin/python tools/gpu_wheels.py --burst                    # diffusers, peft, plyfile: 7 MiB
    .venv/bin/python tools/gpu_burst.py pack --data data/train [--model default] [--max-scenes N]
On the GPU machine, one call of the device's `run` with carry [".whl", ".burst"] (≤ 9 minutes):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site:$PWD python3 tools/gpu_burst.py run --out $OUT
Back on the CPU (FILES = the folder the device's files came back in):
    .venv/bin/python tools/gpu_burst.py unpack --results FILES --out models/burst --run runs/burst-lrm
    .venv/bin/python benchmarks/bench_checkpoints.py --model models/burst --run runs/burst-lrm --data data/val

`pack` sends every training clip's VAE latents (17 KiB a clip xz-compressed) for the video model, and the
frames of the first --lrm-scenes scenes (110 KiB a clip) for the LaLRM: frames are what fills 64 MiB.
1,000 scenes with 150 of them framed pack into ~34 MiB; with the 20 MiB tree and 7 MiB of wheels, 61 MiB.
`run` has three stages, each a backend command in its own process with a share of --budget (killed at
it; tools/budgeted.py): train-video --init (the packed model's video model, whole model trained, on all
clips' latents), generate-latents (the new video model's samples of the clips with frames), train-lrm
--init on their VAE and generated latents (--renderer torch: no gsplat build). A training stage cut
short is exported from its latest checkpoint (burst.json names it). The results, written as they come: burst.json (stages, steps,
seconds per step, losses, the device), video.tar (the video model), lalrm.safetensors (the LaLRM at the
end), lrm_step_*.tar (the LaLRM checkpoints, for bench_checkpoints) and logs.tar (the runs' metrics).
--dry-run runs every stage for 2 steps on the CPU (tests/test_gpu_burst.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from backend.atomic import atomic_path, atomic_write_text  # noqa: E402
from budgeted import run_budgeted  # noqa: E402
from gpu_wheels import size_report  # noqa: E402

PACK = ROOT / ".burst"
CACHE_ARCHIVE = "latents.tar.xz"
MANIFEST = "burst.json"
SHARES = {"video": 0.45, "samples": 0.15, "lrm": 0.33}  # of --budget; the rest packs the results
MAX_CHECKPOINTS = 4  # LaLRM checkpoints sent back (the device returns 8 files of 16 MiB at most)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def model_folder(model: str) -> Path:
    from backend.pipelines.wonderland import SHIPPED_DIR
    path = Path(model).expanduser()
    folder = path if path.is_dir() else SHIPPED_DIR / model
    if not (folder / "wonderland.json").is_file():
        raise SystemExit(f"--model {model}: not a model folder or a shipped model's name (no wonderland.json)")
    return folder.resolve()


# --- pack (CPU) --------------------------------------------------------------------------------------
def pack(args) -> int:
    """Build the VAE latent caches of the training scenes (train-video's split and clips) and compress them
    into .burst/: every clip's latents (what the video model trains on) and, for the first --lrm-scenes
    scenes, latents with frames (the LaLRM's targets); note the model; check what would travel."""
    from backend.data.latent_cache import build_latent_cache
    from backend.data.scenes import DataOptions
    from backend.models.model_dir import load_vae, read_config
    folder = model_folder(args.model)
    video = read_config(folder).video
    options = DataOptions(roots=[str(r) for r in args.data], val_fraction=args.val_fraction)
    train, _ = options.split(args.seed, "the GPU burst")
    train = train[:args.max_scenes] if args.max_scenes else train
    vae = load_vae(folder)
    for name, scenes, frames in (("latents", train, False), ("lrm", train[:args.lrm_scenes], True)):
        clips = options.cache_clips(scenes, video.num_frames, video.height, video.width, args.seed)
        build_latent_cache(vae, clips, args.work / name, seed=args.seed, store_frames=frames)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / CACHE_ARCHIVE) as tmp, tarfile.open(tmp, "w:xz") as tar:
        for name in ("latents", "lrm"):
            tar.add(args.work / name, arcname=name)
    try:  # the model travels with the working tree when it is part of it, else in the pack
        model = str(folder.relative_to(ROOT))
    except ValueError:
        shutil.copytree(folder, args.out / "model", dirs_exist_ok=True)
        model = "model"
    counts = {name: len(json.loads((args.work / name / "cache.json").read_text())["clips"])
              for name in ("latents", "lrm")}
    atomic_write_text(args.out / MANIFEST, json.dumps({"model": model, "clips": counts, "scenes": len(train),
                                                       "data": [str(r) for r in args.data], "seed": args.seed,
                                                       "packed": now()}, indent=1) + "\n")
    archive = (args.out / CACHE_ARCHIVE).stat().st_size
    print(f"packed {counts['latents']} clips for the video model, {counts['lrm']} of them with frames for the "
          f"LaLRM: {archive / 2 ** 20:.1f} MiB compressed; model {model}")
    line, fits = size_report([p for p in (ROOT / ".whl", args.out) if p.exists()])
    print(line)
    if not fits:
        print("pack fewer scenes with frames (--lrm-scenes) or in all (--max-scenes) so that it fits", file=sys.stderr)
    return 0 if fits else 1


# --- run (GPU) ---------------------------------------------------------------------------------------
def device_name() -> str:
    smi = shutil.which("nvidia-smi")
    out = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip() if smi else ""
    return out or f"CPU: {platform.processor() or platform.machine()}"


def stage_commands(args, work: Path) -> dict[str, list[str]]:
    """The three backend commands (module docstring); --dry-run shrinks them to 2 steps on the CPU."""
    dry = args.dry_run
    py = [sys.executable, "-m", "backend"]
    video_steps, lrm_steps = (2, 2) if dry else (args.video_steps, args.lrm_steps)
    common = ["--log-every", "1" if dry else "25", "--validate-every", "0", "--num-workers", "0" if dry else "4"]
    scale = scene_scale(work)   # the packed model's LaLRM keeps its frame (a metric default stays metric)
    return {
        "video": py + ["train-video", "--latent-cache", str(work / "latents"), "--model-config",
                       str(work / "video_config.json"), "--train-base", "--init", str(work / "model"),
                       "--vae", str(work / "model"), "--out", str(work / "runs" / "video"),
                       "--steps", str(video_steps), "--batch-size", "2" if dry else str(args.video_batch),
                       "--lr", str(args.video_lr), "--lr-min", str(args.video_lr / 10),
                       "--warmup-steps", str(video_steps // 20), "--text-dropout", "0",
                       "--checkpoint-every", str(max(1, video_steps // 4)), "--keep-checkpoints", "1",
                       "--seed", str(args.seed), "--export", str(work / "model"), *common],
        "samples": py + ["generate-latents", "--model", str(work / "model"), "--latent-cache", str(work / "lrm"),
                         "--out", str(work / "generated"), "--samples", "1" if dry else str(args.samples),
                         "--batch-size", "2" if dry else "64", "--seed", str(args.seed),
                         *(["--steps", "2"] if dry else [])],
        "lrm": py + ["train-lrm", "--latent-cache", str(work / "lrm"), str(work / "generated"),
                     "--model-config", str(work / "lalrm_config.json"), "--vae", str(work / "model"),
                     "--init", str(work / "model"), "--renderer", "torch", "--perceptual-weight", "0",
                     "--ssim-weight", "0.2", "--views", "4", "--batch-size", "2" if dry else str(args.lrm_batch),
                     "--lr", str(args.lrm_lr), "--lr-min", str(args.lrm_lr / 10),
                     "--warmup-steps", str(lrm_steps // 20), "--steps", str(lrm_steps),
                     "--checkpoint-every", str(max(1, lrm_steps // MAX_CHECKPOINTS)),
                     "--keep-checkpoints", str(MAX_CHECKPOINTS), "--seed", str(args.seed),
                     "--scene-scale", scale, "--out", str(work / "runs" / "lrm"), "--export", str(work / "model"),
                     *common]}


def scene_scale(work: Path) -> str:
    """The packed model's scene_scale (its config's rule: "path" without the key)."""
    from backend.models.model_dir import read_config
    return read_config(work / "model").scene_scale


def prepare_work(args, work: Path) -> dict:
    """Unpack the cache, copy the packed model into work/model, write its two part configs."""
    if not (args.pack / MANIFEST).is_file() or not (args.pack / CACHE_ARCHIVE).is_file():
        raise SystemExit(f"--pack {args.pack} holds no pack ({MANIFEST}, {CACHE_ARCHIVE}): run `tools/gpu_burst.py "
                         "pack` on the CPU first, and name .burst in the device call's carry")
    manifest = json.loads((args.pack / MANIFEST).read_text())
    source = args.pack / "model" if manifest["model"] == "model" else ROOT / manifest["model"]
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    with tarfile.open(args.pack / CACHE_ARCHIVE) as tar:
        tar.extractall(work, filter="data")
    shutil.copytree(source, work / "model", ignore=shutil.ignore_patterns("curves", "training", "MODEL_CARD.md"))
    config = json.loads((work / "model" / "wonderland.json").read_text())
    (work / "video_config.json").write_text(json.dumps(config["video"]))
    (work / "lalrm_config.json").write_text(json.dumps(config["lalrm"]))
    return manifest


def run_metrics(run_dir: Path) -> dict:
    """Steps done, the last logged loss and the median logged seconds per step of a train-* run folder."""
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    steps = [r for r in records if "loss" in r]
    times = sorted(r["step_time_s"] for r in steps if "step_time_s" in r)
    return {"steps_done": steps[-1]["step"] if steps else 0, "last_loss": steps[-1]["loss"] if steps else None,
            "median_step_s": times[len(times) // 2] if times else None}


def export_latest_checkpoint(work: Path, part: str) -> str | None:
    """A stage cut short ("video" or "lrm"): write its run's latest checkpoint into work/model as its --export
    would have; returns the checkpoint's name, or None when it wrote none (work/model keeps the packed part)."""
    from backend.models.lalrm import LaLRM, LaLRMConfig
    from backend.models.model_dir import write_lalrm, write_video
    from backend.models.video import CameraControlledTransformer, VideoModelConfig, build_scheduler
    from backend.models.weights import load_state_dict
    from backend.training.engine import checkpoint_weights, latest_checkpoint
    checkpoint = latest_checkpoint(work / "runs" / part)
    if checkpoint is None:
        return None
    weights = load_state_dict(checkpoint_weights(checkpoint))
    if part == "video":
        config = VideoModelConfig.from_dict(json.loads((work / "video_config.json").read_text()))
        model = CameraControlledTransformer(config)
        model.load_state_dict(weights)
        write_video(work / "model", model, build_scheduler(config))
    else:
        lalrm = LaLRM(LaLRMConfig.from_dict(json.loads((work / "lalrm_config.json").read_text())))
        lalrm.load_state_dict(weights)
        write_lalrm(work / "model", lalrm, scene_scale(work))
    return checkpoint.name


def send_back(work: Path, out: Path) -> list[str]:
    """The weights and logs into `out`, at most 8 files (the device's limit), each written atomically."""
    model = work / "model"

    def tar(name: str, members: list[tuple[Path, str]]) -> None:
        with atomic_path(out / name) as tmp, tarfile.open(tmp, "w") as archive:
            for path, arcname in members:
                if path.exists():
                    archive.add(path, arcname=arcname)

    tar("video.tar", [(model / part, part) for part in ("transformer", "scheduler", "camera_branches.safetensors",
                                                          "wonderland.json")])
    with atomic_path(out / "lalrm.safetensors") as tmp:
        shutil.copyfile(model / "lalrm.safetensors", tmp)
    checkpoints = sorted((work / "runs" / "lrm" / "checkpoints").glob("step_*"))[-MAX_CHECKPOINTS:]
    for checkpoint in checkpoints:
        tar(f"lrm_{checkpoint.name}.tar", [(checkpoint / name, f"{checkpoint.name}/{name}")
                                            for name in ("model.safetensors", "ema.safetensors", "trainer_state.json")])
    tar("logs.tar", [(work / "runs" / run / name, f"{run}/{name}") for run in ("video", "lrm")
                     for name in ("metrics.jsonl", "train_config.json")])
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


def run(args) -> int:
    work = args.work
    manifest = prepare_work(args, work)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"tool": "tools/gpu_burst.py run", "dry_run": args.dry_run, "device": device_name(),
               "budget_s": args.budget, "pack": manifest, "started": now(), "stages": [], "finished": None}

    def save() -> None:
        atomic_write_text(args.out / MANIFEST, json.dumps(results, indent=1) + "\n")

    save()
    for name, command in stage_commands(args, work).items():
        if name == "lrm" and not (work / "generated" / "cache.json").is_file():
            command.remove(str(work / "generated"))  # no samples: the VAE latents alone
        stage = {"name": name, "budget_s": round(SHARES[name] * args.budget, 1), "command": command[2:]}
        results["stages"].append(stage)
        save()
        outcome = run_budgeted(command, stage["budget_s"], ROOT)
        stage.update(status=outcome.status, seconds=outcome.seconds, log_tail=outcome.log_tail)
        if name in ("video", "lrm"):
            stage.update(run_metrics(work / "runs" / name))
        if name in ("video", "lrm") and outcome.status != "ok":
            stage["exported_checkpoint"] = export_latest_checkpoint(work, name)
        save()
        print(f"{name:>8}: {outcome.status} in {outcome.seconds:.0f} s", flush=True)
    results["files"] = send_back(work, args.out)
    results["finished"] = now()
    save()
    return 0 if all(s["status"] == "ok" for s in results["stages"]) else 1


# --- unpack (CPU) ------------------------------------------------------------------------------------
def unpack(args) -> int:
    """The burst's model folder (the packed model with the new video model and LaLRM) and a train-lrm-like
    run folder of its LaLRM checkpoints, which bench_checkpoints.py scores."""
    missing = [name for name in (MANIFEST, "video.tar", "lalrm.safetensors") if not (args.results / name).is_file()]
    if missing:
        raise SystemExit(f"--results {args.results} lacks {', '.join(missing)}: point it at the folder the device "
                         "call's files came back in (its files_at)")
    results = json.loads((args.results / MANIFEST).read_text())
    source = model_folder(args.model or results["pack"]["model"])
    if args.out.exists():
        raise SystemExit(f"--out {args.out} exists: name a new folder for the burst's model")
    tmp = args.out.with_name(f".{args.out.name}.tmp")  # complete, then renamed: never a half model folder
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("curves", "training", "MODEL_CARD.md"))
    with tarfile.open(args.results / "video.tar") as tar:
        tar.extractall(tmp, filter="data")
    shutil.copyfile(args.results / "lalrm.safetensors", tmp / "lalrm.safetensors")
    (tmp / MANIFEST).write_text(json.dumps(results, indent=1) + "\n")
    tmp.rename(args.out)
    checkpoints = sorted(args.results.glob("lrm_step_*.tar"))
    for archive in checkpoints:
        with tarfile.open(archive) as tar:
            tar.extractall(args.run / "checkpoints", filter="data")
    print(f"model folder {args.out} (device: {results['device']}); {len(checkpoints)} LaLRM checkpoints in "
          f"{args.run}\nscore them: .venv/bin/python benchmarks/bench_checkpoints.py --model {args.out} "
          f"--run {args.run} --data data/val")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="CPU: latent cache of the training scenes, compressed into .burst/")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="training scene roots")
    p.add_argument("--model", default="default", help="the model folder or shipped model to train further")
    p.add_argument("--out", type=Path, default=PACK)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "burst-pack", help="where the cache is built")
    p.add_argument("--max-scenes", type=int, help="pack at most this many training scenes (to fit 64 MiB)")
    p.add_argument("--lrm-scenes", type=int, default=150,
                   help="scenes whose frames travel, for the LaLRM (110 KiB each compressed; default 150)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="as train-video's: held-out scenes")
    p.add_argument("--seed", type=int, default=0, help="the split and clips' seed (the default's runs: 0)")
    p = sub.add_parser("run", help="GPU: the three stages within --budget seconds, results into --out")
    p.add_argument("--out", type=Path, required=True, help="results folder ($OUT on the device)")
    p.add_argument("--pack", type=Path, default=PACK)
    p.add_argument("--work", type=Path, default=Path("/tmp/wonderland-burst"))
    p.add_argument("--budget", type=float, default=520, help="seconds for all stages (default 520)")
    p.add_argument("--video-steps", type=int, default=4000)
    p.add_argument("--video-batch", type=int, default=64)
    p.add_argument("--video-lr", type=float, default=1e-4)
    p.add_argument("--samples", type=int, default=2, help="generated samples per clip")
    p.add_argument("--lrm-steps", type=int, default=1500)
    p.add_argument("--lrm-batch", type=int, default=8)
    p.add_argument("--lrm-lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=1, help="the runs' seed (data order, noise)")
    p.add_argument("--dry-run", action="store_true", help="2 steps a stage on the CPU: test the plumbing")
    p = sub.add_parser("unpack", help="CPU: a model folder and a checkpoint run folder from the results")
    p.add_argument("--results", type=Path, required=True, help="the folder the device's files came back in")
    p.add_argument("--out", type=Path, required=True, help="the new model folder")
    p.add_argument("--run", type=Path, required=True, help="the new run folder of the LaLRM checkpoints")
    p.add_argument("--model", help="the packed model, if not where the pack said")
    args = parser.parse_args(argv)
    return {"pack": pack, "run": run, "unpack": unpack}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
