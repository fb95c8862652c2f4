"""`generate`: image + cameras.json -> scene.ply, preview/*.png, meta.json, events.jsonl in --out.

Every output but events.jsonl is written atomically; after a cancel or an error none of scene.ply
and preview/ is left in the folder, and events.jsonl ends with exactly one final event.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from backend.atomic import atomic_write_text
from backend.detail_size import DEFAULT_DETAIL_SIZE, MAX_DETAIL_SIZE, check_detail_size
from backend.devices import DEVICES, DTYPES
from backend.commands.generate_checks import check_args, check_result, decode_min_side, ground_z
from backend.errors import InputError
from backend.job import CancelWatch, EventLog, job_folder

OUTPUTS = ("scene.ply", "preview", "meta.json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="the input picture (anything Pillow reads)")
    p.add_argument("--cameras", required=True, help="cameras.json; camera 0 is the picture's camera")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--model", default="default",
                   help="a model folder, a shipped model's name, or 'tiny' (random weights, for tests)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--dtype", choices=list(DTYPES), default="auto")
    p.add_argument("--prompt-embeds", metavar="FILE.safetensors",
                   help="precomputed text embeddings [L, D] (e.g. T5 of a prompt); guidance then uses them")
    p.add_argument("--prompt", help="describe the scene (needs --text-encoder with local T5 weights)")
    p.add_argument("--text-encoder", metavar="DIR", help="a folder with text_encoder/ and tokenizer/ (T5)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (<= 1 turns it off)")
    p.add_argument("--controlnet-fraction", type=float,
                   help="run the camera ControlNet only for this first share of the steps (e.g. 0.4)")
    p.add_argument("--guidance-fraction", type=float, default=1.0,
                   help="guide (CFG) only this first share of the steps, e.g. 0.5; the rest run one pass")
    p.add_argument("--cache", choices=["pab"], help="diffusers' pyramid attention broadcast cache")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    p.add_argument("--offload", action="store_true",
                   help="keep the models on the CPU and move each to the GPU only for its stage (less VRAM)")
    p.add_argument("--previews", type=int, default=8, help="preview renders along the trajectory (0: none)")
    p.add_argument("--preview-size", type=int, default=256, help="long side of the previews in pixels")
    p.add_argument("--video-preview", action="store_true",
                   help="also decode the generated video with the VAE into preview/video/0000.png … (not needed "
                        "for the 3D scene; a look at what the video model made)")
    p.add_argument("--vae-tiling", action="store_true",
                   help="decode the video preview in tiles: far less memory at 480x720, soft tile seams")
    p.add_argument("--max-gaussians", type=int, help="keep at most this many (the most opaque)")
    p.add_argument("--prune-opacity", type=float, help="drop Gaussians less opaque than this")
    p.add_argument("--detail-size", default=DEFAULT_DETAIL_SIZE, metavar="PX",
                   help=f"long side of the detail layer, the photo lifted into Gaussians at its own resolution "
                        f"(default {DEFAULT_DETAIL_SIZE}, at most {MAX_DETAIL_SIZE} and the photo's size; 0: off, "
                        "the paper's behaviour)")
    p.add_argument("--subject-distance", type=float, metavar="D",
                   help="how far the picture's subject is from its camera, in the cameras' units (metres for "
                        "a Blender scene in metres): the result is scaled about the first camera so that the "
                        "median depth of its view is D. Default: the model's own guess")
    p.add_argument("--ground-z", type=float, metavar="Z",
                   help="the world Z of the ground the first camera stands over, in the cameras' units (default 0: "
                        "Blender's floor grid); a model whose depth prior reads the ground sizes the scene by the "
                        "camera's height over it")
    p.add_argument("--no-ground", action="store_true",
                   help="no ground under the first camera is known (e.g. the scene's floor is not at a known Z): "
                        "the size is judged from the picture alone")


def _prompt_embeds(args, video_config):
    """[L, D] text embeddings from --prompt-embeds or --prompt + --text-encoder; None: unguided, empty text."""
    if args.prompt and args.prompt_embeds:
        raise InputError("--prompt and --prompt-embeds both given", "give one of them")
    if args.prompt_embeds:
        from backend.pipelines.camera_i2v import load_prompt_embeds
        return load_prompt_embeds(args.prompt_embeds, video_config)
    if args.prompt:
        if not args.text_encoder:
            raise InputError("--prompt needs a text encoder", "add --text-encoder DIR (a folder with "
                             "text_encoder/ and tokenizer/), or pass precomputed --prompt-embeds")
        from backend.pipelines.text import encode_prompt
        return encode_prompt(args.prompt, args.text_encoder, video_config.text_shape)
    return None


def _versions() -> dict:
    from importlib.metadata import version

    import torch

    import backend
    return {"backend": backend.__version__, "torch": torch.__version__, "diffusers": version("diffusers"),
            "gsplat": version("gsplat"), "peft": version("peft"), "python": platform.python_version()}


def run(args) -> int:
    with job_folder(args.out, OUTPUTS) as (out, events, watch):
        result_event = _generate(args, out, events, watch)
    print(f"done: {result_event['count']} Gaussians in {result_event['ply']}")
    return 0


def _generate(args, out: Path, events: EventLog, watch: CancelWatch) -> dict:
    from tqdm import tqdm

    from backend.cameras import load_cameras
    from backend.devices import pick_device, pick_dtype
    from backend.images import load_rgb, save_png

    check_args(args)  # bad input fails fast, before the heavy imports below
    args.detail_size = check_detail_size(args.detail_size)
    image = load_rgb(args.image, min_side=decode_min_side(args))
    cameras = load_cameras(args.cameras)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)

    from backend.pipelines.wonderland import generate, load_pipeline
    from backend.ply import write_ply
    started = time.perf_counter()
    watch.check()
    pipe = load_pipeline(args.model, dtype=dtype)
    if pipe.random_weights:
        print(f"warning: --model {args.model} has no trained weights here: using {pipe.source}; "
              "the result is noise, for smoke tests only", file=sys.stderr)
    prompt_embeds = _prompt_embeds(args, pipe.config.video)
    pipe.to("cpu" if args.offload else device, dtype)
    load_s = time.perf_counter() - started

    bars: dict[str, tqdm] = {}

    def on_progress(stage: str, step: int, total: int) -> None:
        events.stage(stage, step, total)
        bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, unit="step", disable=None))
        bar.n = step
        bar.refresh()

    try:
        result = generate(pipe, image, cameras, steps=args.steps, seed=args.seed, guidance_scale=args.guidance,
                          controlnet_fraction=args.controlnet_fraction, guidance_fraction=args.guidance_fraction,
                          cache=args.cache, compile=args.compile,
                          preview_count=args.previews, preview_size=args.preview_size,
                          video_preview=args.video_preview, vae_tiling=args.vae_tiling,
                          prune_opacity=args.prune_opacity, max_gaussians=args.max_gaussians,
                          detail_size=args.detail_size, subject_distance=args.subject_distance,
                          ground_z=ground_z(args),
                          prompt_embeds=prompt_embeds, device=device,
                          offload=args.offload, on_progress=on_progress, should_cancel=watch.requested)
    finally:
        for bar in bars.values():
            bar.close()
    for warning in result.info["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)

    watch.check()
    check_result(result.gaussians, args, pipe.source)
    images = [("preview", i, rgb) for i, rgb in enumerate(result.previews)]
    images += [("preview/video", i, rgb) for i, rgb in enumerate(result.video)]
    total_writes = 2 + len(images)
    events.stage("write", 0, total_writes)
    ply = out / "scene.ply"
    write_ply(ply, result.gaussians)
    events.stage("write", 1, total_writes)
    written: dict[str, list[str]] = {"preview": [], "preview/video": []}
    for n, (folder, i, rgb) in enumerate(images):
        path = out / folder / f"{i:04d}.png"
        save_png(path, rgb)
        written[folder].append(str(path))
        events.stage("write", 2 + n, total_writes)
    meta = {"model": args.model, "model_config": pipe.config.name, "model_source": pipe.source,
            "random_weights": pipe.random_weights, "device": str(device), "dtype": str(dtype).split(".")[-1],
            "load_s": round(load_s, 3), "total_s": round(time.perf_counter() - started, 3),
            "image": str(Path(args.image).resolve()), "cameras": str(Path(args.cameras).resolve()),
            "versions": _versions(), **result.info}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=1))
    events.stage("write", total_writes, total_writes)
    done = {"ply": str(ply), "previews": written["preview"], "count": len(result.gaussians),
            "detail": result.info["detail"],
            "meta": str(out / "meta.json"), "seconds": meta["total_s"]}
    if result.video:
        done["video"] = written["preview/video"]
    events.emit("done", **done)
    return done
