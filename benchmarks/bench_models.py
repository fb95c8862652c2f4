"""Model speed and memory: our camera-controlled transformer vs stock diffusers CogVideoX, and the LaLRM.

    .venv/bin/python benchmarks/bench_models.py [--shape paper|tiny] [--steps 50] [--dtype bf16|fp32]

Random weights at the chosen shape (`paper` = CogVideoX-5B-I2V: 49x480x720, latents 13x60x90; the
default on CUDA; `tiny` on CPU, where the paper shape does not fit a 2-core machine). Every ratio
is measured side by side in this one run. Rows:
- one denoising step: stock `CogVideoXTransformer3DModel` vs ours (ControlNet on / off);
- a full generation of --steps steps: stock `CogVideoXImageToVideoPipeline` (fed prompt_embeds, no
  text encoder, output_type="latent") vs `sample_video_latents` with each speed lever;
- the LaLRM forward at the shape's latents (paper: 13x60x90): seconds and peak memory.
"""
from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time

import torch
from diffusers import CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel

from backend.models.config import NAMED_CONFIGS
from backend.models.lalrm import LaLRM
from backend.models.video import CameraControlledTransformer, build_scheduler, build_vae
from backend.pipelines.camera_i2v import encode_image, rotary_embeddings, sample_video_latents
from machine import device_name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--shape", choices=list(NAMED_CONFIGS), default="paper" if cuda else "tiny")
    parser.add_argument("--steps", type=int, default=50 if cuda else 8)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16" if cuda else "fp32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    config = NAMED_CONFIGS[args.shape]()
    vcfg = config.video
    torch.manual_seed(0)
    print(f"device: {device_name(device)}; shape: {args.shape} ({vcfg.num_frames}x{vcfg.height}x{vcfg.width}, "
          f"latents {vcfg.latent_shape}); dtype: {args.dtype}; steps: {args.steps}")
    rows: list[tuple[str, float, str]] = []

    t, c, h, w = vcfg.latent_shape
    text_len, text_dim = vcfg.text_shape
    x = torch.randn(2, t, 2 * c, h, w, device=device, dtype=dtype)
    text = torch.randn(2, text_len, text_dim, device=device, dtype=dtype) * 0.1
    step_t = torch.full((2,), 500, device=device)
    plucker = torch.randn(2, vcfg.num_frames, 6, h, w, device=device, dtype=dtype)

    with torch.device(device):
        stock = CogVideoXTransformer3DModel(**vcfg.transformer).to(dtype).eval()
    rotary = rotary_embeddings(stock, h, w, t, device)
    with torch.no_grad():
        stock_step = timed(lambda: stock(hidden_states=x, encoder_hidden_states=text, timestep=step_t,
                                         image_rotary_emb=rotary, return_dict=False), device, args.repeats)
    rows.append(("1 step, stock CogVideoX transformer (CFG batch 2)", stock_step, "1.00x"))

    vae = build_vae(vcfg).to(device=device, dtype=dtype).eval()
    scheduler = build_scheduler(vcfg)
    image = torch.rand(1, 3, vcfg.height, vcfg.width, device=device, dtype=dtype) * 2 - 1
    stock_pipe = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=stock,
                                               scheduler=scheduler)
    stock_pipe.set_progress_bar_config(disable=True)

    def run_stock():
        stock_pipe(image=(image + 1) / 2, prompt_embeds=text[:1], negative_prompt_embeds=text[1:], height=vcfg.height,
                   width=vcfg.width, num_frames=vcfg.num_frames, num_inference_steps=args.steps,
                   guidance_scale=vcfg.guidance_scale, output_type="latent",
                   generator=torch.Generator(device).manual_seed(0))

    with torch.no_grad():
        stock_full = timed(run_stock, device, 1)
    rows.append((f"{args.steps} steps, stock CogVideoXImageToVideoPipeline", stock_full, "1.00x"))
    del stock_pipe, stock
    reset_peak(device)

    with torch.device(device):
        ours = CameraControlledTransformer(vcfg).to(dtype).eval()
    with torch.no_grad():
        for p in ours.camera_parameters():  # non-zero camera branches, as after training
            p.normal_(0, 1e-3)
        for use in (True, False):
            s = timed(lambda: ours(x, text, step_t, plucker, image_rotary_emb=rotary, use_controlnet=use),
                      device, args.repeats)
            rows.append((f"1 step, ours, ControlNet {'on' if use else 'off'}", s, f"{stock_step / s:.2f}x"))
        levers = [("all steps with ControlNet", dict(controlnet_fraction=1.0)),
                  ("ControlNet first 40% (AC3D)", dict(controlnet_fraction=0.4)),
                  ("ControlNet 40% + CFG first 50%", dict(controlnet_fraction=0.4, guidance_fraction=0.5)),
                  ("ControlNet 40% + CFG 50% + pyramid attention broadcast",
                   dict(controlnet_fraction=0.4, guidance_fraction=0.5, cache="pab"))]
        for name, lever in levers:
            def run_ours():  # the image encode is inside, as it is in the stock pipeline's call
                generator = torch.Generator(device).manual_seed(0)
                image_latents = encode_image(vae, image, generator=generator)
                sample_video_latents(ours, scheduler, image_latents, plucker[:1], steps=args.steps,
                                     guidance_scale=vcfg.guidance_scale, prompt_embeds=text[1:],
                                     negative_prompt_embeds=text[:1],
                                     generator=generator, **lever)
            s = timed(run_ours, device, 1)
            rows.append((f"{args.steps} steps, ours: {name}", s, f"{stock_full / s:.2f}x"))
    del ours, vae
    reset_peak(device)

    with torch.device(device):
        lalrm = LaLRM(config.lalrm).to(dtype).eval()
    latents = torch.randn(1, *config.lalrm.latent_shape, device=device, dtype=dtype)
    full_plucker = torch.randn(1, config.lalrm.num_frames, 6, config.lalrm.height, config.lalrm.width,
                               device=device, dtype=dtype)
    reset_peak(device)
    with torch.no_grad():
        s = timed(lambda: lalrm(latents, full_plucker), device, args.repeats)
    tag = "peak GPU GB" if device.type == "cuda" else "peak RSS GB (process)"
    rows.append((f"LaLRM forward, latents {tuple(latents.shape[1:])} ({tag} {peak_memory_gb(device):.2f})", s, ""))

    width = max(len(r[0]) for r in rows)
    print(f"\n{'what':<{width}}  {'seconds':>9}  {'speed-up vs stock':>17}")
    for name, seconds, ratio in rows:
        print(f"{name:<{width}}  {seconds:>9.3f}  {ratio:>17}")


if __name__ == "__main__":
    main()
