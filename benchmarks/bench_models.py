"""Model speed and memory: our camera-controlled transformer vs stock diffusers CogVideoX, and the LaLRM.

    .venv/bin/python benchmarks/bench_models.py [--shape paper|small|tiny] [--steps 50] [--dtype bf16|fp32]
        [--compile [BACKEND]]
    .venv/bin/python benchmarks/bench_models.py --flops [--shape paper] [--steps 50]

Random weights at the chosen shape (`paper` = CogVideoX-5B-I2V: 49x480x720, latents 13x60x90; the
default on CUDA; `tiny` on CPU, where the paper shape does not fit a 2-core machine). Every ratio
is measured side by side in this one run. Rows:
- one denoising step: stock `CogVideoXTransformer3DModel` vs ours (ControlNet on / off);
- a full generation of --steps steps: stock `CogVideoXImageToVideoPipeline` (fed prompt_embeds, no
  text encoder, output_type="latent") vs `sample_video_latents` with each speed lever;
- the LaLRM forward at the shape's latents (paper: 13x60x90): seconds and peak memory;
- a whole `generate` (encode, denoise, LaLRM, previews) with `offload`: seconds and peak memory;
- with --compile, ControlNet 40% + CFG 20% with torch.compile'd transformer blocks (not with PAB,
  whose hooks discard the compiled graphs on every run).

--flops counts instead of timing, on the meta device (no weights are made and nothing is computed),
so it runs at the paper shape anywhere: floating-point operations of the matmuls, convolutions and
attention (torch's FlopCounterMode) per step and per generation, and each component's weight size in
the dtype (the largest is what `offload` keeps on the GPU). Our generations run the real sampler, so
the ControlNet, guidance and cache levers count as they act. The stock pipeline's scheduler cannot run
on meta tensors (it compares timesteps), so its generation is counted as what it runs: one image
encode plus --steps transformer calls at the guidance batch of 2.
"""
from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Iterator

import numpy as np
import torch
from diffusers import CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel
from torch.utils.flop_counter import FlopCounterMode

from backend.cameras import CameraBatch
from backend.models.config import NAMED_CONFIGS, ModelConfig
from backend.models.lalrm import LaLRM
from backend.models.video import CameraControlledTransformer, build_scheduler, build_vae
from backend.pipelines.camera_i2v import compile_blocks, encode_image, rotary_embeddings, sample_video_latents
from backend.pipelines.wonderland import WonderlandPipeline, generate
from machine import device_name

GUIDANCE = 6.0  # the stock pipeline's default: both sides run classifier-free guidance at every shape

# each speed lever of `sample_video_latents`, alone and stacked, as generate's options set them
LEVERS = [("all steps with ControlNet", dict(controlnet_fraction=1.0)),
          ("ControlNet first 40% (AC3D)", dict(controlnet_fraction=0.4)),
          ("ControlNet 40% + CFG first 50%", dict(controlnet_fraction=0.4, guidance_fraction=0.5)),
          ("ControlNet 40% + CFG 50% + pyramid attention broadcast",
           dict(controlnet_fraction=0.4, guidance_fraction=0.5, cache="pab")),
          ("ControlNet 40% + CFG first 20% + pyramid attention broadcast",
           dict(controlnet_fraction=0.4, guidance_fraction=0.2, cache="pab"))]
COMPILED = ("ControlNet 40% + CFG first 20% + torch.compile'd blocks",
            dict(controlnet_fraction=0.4, guidance_fraction=0.2))


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


def counted(fn) -> float:
    """TFLOP of one call (matmuls, convolutions, attention), as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e12


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def memory_tag(device: torch.device) -> str:
    return "peak GPU GB" if device.type == "cuda" else "peak RSS GB (process)"


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_inputs(config: ModelConfig, device: torch.device, dtype: torch.dtype) -> SimpleNamespace:
    """One step's transformer inputs at the CFG batch of 2, the conditioning image and the LaLRM's inputs."""
    vcfg, lcfg = config.video, config.lalrm
    t, c, h, w = vcfg.latent_shape
    text_len, text_dim = vcfg.text_shape
    return SimpleNamespace(
        x=torch.randn(2, t, 2 * c, h, w, device=device, dtype=dtype),
        text=torch.randn(2, text_len, text_dim, device=device, dtype=dtype) * 0.1,
        step_t=torch.full((2,), 500, device=device),
        plucker=torch.randn(2, vcfg.num_frames, 6, h, w, device=device, dtype=dtype),
        image=torch.rand(1, 3, vcfg.height, vcfg.width, device=device, dtype=dtype) * 2 - 1,
        latents=torch.randn(1, *lcfg.latent_shape, device=device, dtype=dtype),
        full_plucker=torch.randn(1, lcfg.num_frames, 6, lcfg.height, lcfg.width, device=device, dtype=dtype))


def build_models(config: ModelConfig, device: torch.device, dtype: torch.dtype, stock: bool = True) -> SimpleNamespace:
    """Random weights made directly on `device` (the paper shape's fp32 weights take ~34 GB and minutes on a CPU)."""
    with torch.device(device):
        models = SimpleNamespace(stock=CogVideoXTransformer3DModel(**config.video.transformer).to(dtype).eval()
                                 if stock else None,
                                 ours=CameraControlledTransformer(config.video).to(dtype).eval(),
                                 vae=build_vae(config.video).to(dtype).eval(),
                                 lalrm=LaLRM(config.lalrm).to(dtype).eval())
    if device.type != "meta":
        with torch.no_grad():
            for p in models.ours.camera_parameters():  # non-zero camera branches, as after training
                p.normal_(0, 1e-3)
    return models


def stock_step(stock, inp, rotary):
    return stock(hidden_states=inp.x, encoder_hidden_states=inp.text, timestep=inp.step_t, image_rotary_emb=rotary,
                 return_dict=False)


def ours_step(ours, inp, rotary, use_controlnet: bool):
    return ours(inp.x, inp.text, inp.step_t, inp.plucker, image_rotary_emb=rotary, use_controlnet=use_controlnet)


def ours_generation(models, scheduler, inp, config: ModelConfig, steps: int, lever: dict,
                    generator: torch.Generator | None):
    """What `generate` runs up to the latents: the image encode inside, as in the stock pipeline's call."""
    image_latents = encode_image(models.vae, inp.image, generator=generator)
    return sample_video_latents(models.ours, scheduler, image_latents, inp.plucker[:1], steps=steps,
                                guidance_scale=GUIDANCE, prompt_embeds=inp.text[1:],
                                negative_prompt_embeds=inp.text[:1], generator=generator, **lever)


def dolly(config: ModelConfig) -> CameraBatch:
    """The model's frame count moving forward 0.05 per frame, 60° across."""
    vcfg, n = config.video, config.video.num_frames
    K = torch.tensor([[vcfg.width * 0.866, 0, vcfg.width / 2], [0, vcfg.width * 0.866, vcfg.height / 2], [0, 0, 1]])
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, 2, 3] = torch.arange(n) * 0.05
    return CameraBatch(K.repeat(n, 1, 1), c2w, vcfg.width, vcfg.height)


def timed_rows(config: ModelConfig, args, device: torch.device, dtype: torch.dtype, levers=LEVERS,
               whole_generate: bool = True) -> Iterator[tuple[str, float, str]]:
    """The timed rows, each yielded as soon as it is measured (tools/gpu_check.py records them one by one)."""
    vcfg = config.video
    inp = bench_inputs(config, device, dtype)
    models = build_models(config, device, dtype)
    scheduler = build_scheduler(vcfg)
    rotary = rotary_embeddings(models.stock, vcfg.latent_height, vcfg.latent_width, vcfg.latent_shape[0], device)
    with torch.no_grad():
        stock_s = timed(lambda: stock_step(models.stock, inp, rotary), device, args.repeats)
        yield "1 step, stock CogVideoX transformer (CFG batch 2)", stock_s, "1.00x"
        stock_pipe = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=models.vae,
                                                   transformer=models.stock, scheduler=scheduler)
        stock_pipe.set_progress_bar_config(disable=True)
        stock_full = timed(lambda: stock_pipe(
            image=(inp.image + 1) / 2, prompt_embeds=inp.text[:1], negative_prompt_embeds=inp.text[1:],
            height=vcfg.height, width=vcfg.width, num_frames=vcfg.num_frames, num_inference_steps=args.steps,
            guidance_scale=GUIDANCE, output_type="latent",
            generator=torch.Generator(device).manual_seed(0)), device, 1)
        yield f"{args.steps} steps, stock CogVideoXImageToVideoPipeline", stock_full, "1.00x"
        del stock_pipe, models.stock
        reset_peak(device)
        for use in (True, False):
            s = timed(lambda: ours_step(models.ours, inp, rotary, use), device, args.repeats)
            yield f"1 step, ours, ControlNet {'on' if use else 'off'}", s, f"{stock_s / s:.2f}x"
        for name, lever in levers:
            s = timed(lambda: ours_generation(models, scheduler, inp, config, args.steps, lever,
                                              torch.Generator(device).manual_seed(0)), device, 1)
            yield f"{args.steps} steps, ours: {name}", s, f"{stock_full / s:.2f}x"
        if args.compile:  # the warm-up call compiles; PAB would discard the graphs on every run
            compile_blocks(models.ours, backend=args.compile)
            name, lever = COMPILED
            s = timed(lambda: ours_generation(models, scheduler, inp, config, args.steps, lever,
                                              torch.Generator(device).manual_seed(0)), device, 1)
            yield f"{args.steps} steps, ours: {name}", s, f"{stock_full / s:.2f}x"
        reset_peak(device)
        s = timed(lambda: models.lalrm(inp.latents, inp.full_plucker), device, args.repeats)
        yield (f"LaLRM forward, latents {tuple(inp.latents.shape[1:])} "
               f"({memory_tag(device)} {peak_memory_gb(device):.2f})", s, "")
    if whole_generate:
        yield generate_row(config, args, device, models, inp.text[1])


def generate_row(config: ModelConfig, args, device: torch.device, models: SimpleNamespace,
                 prompt_embeds: torch.Tensor) -> tuple[str, float, str]:
    """A whole `generate` with `offload` (encode, denoise, LaLRM, previews): seconds and peak memory."""
    vcfg = config.video
    pipe = WonderlandPipeline(config, models.vae.cpu(), models.ours.cpu(), build_scheduler(vcfg), models.lalrm.cpu(),
                              source="random weights")
    image = np.random.default_rng(0).random((vcfg.height, vcfg.width, 3), dtype=np.float32)
    reset_peak(device)
    start = time.perf_counter()
    generate(pipe, image, dolly(config), steps=args.steps, guidance_scale=GUIDANCE, prompt_embeds=prompt_embeds,
             device=device, offload=True)
    sync(device)
    compiled = ", compiled blocks" if args.compile else ""  # they stay compiled after the --compile row
    return (f"whole generate, {args.steps} steps, offload{compiled} ({memory_tag(device)} "
            f"{peak_memory_gb(device):.2f})", time.perf_counter() - start, "")


def flop_rows(config: ModelConfig, args, dtype: torch.dtype) -> tuple[list, list]:
    """The timed rows' operation counts on the meta device, and the components' weight sizes."""
    vcfg, meta = config.video, torch.device("meta")
    inp = bench_inputs(config, meta, dtype)
    models = build_models(config, meta, dtype)
    scheduler = build_scheduler(vcfg)
    rotary = rotary_embeddings(models.stock, vcfg.latent_height, vcfg.latent_width, vcfg.latent_shape[0], meta)
    rows = []
    with torch.no_grad():
        stock_tf = counted(lambda: stock_step(models.stock, inp, rotary))
        rows.append(("1 step, stock CogVideoX transformer (CFG batch 2)", stock_tf, "1.00x"))
        stock_full = counted(lambda: encode_image(models.vae, inp.image)) + args.steps * stock_tf
        rows.append((f"{args.steps} steps, stock CogVideoXImageToVideoPipeline", stock_full, "1.00x"))
        for use in (True, False):
            tf = counted(lambda: ours_step(models.ours, inp, rotary, use))
            rows.append((f"1 step, ours, ControlNet {'on' if use else 'off'}", tf, f"{stock_tf / tf:.2f}x"))
        for name, lever in LEVERS:
            tf = counted(lambda: ours_generation(models, scheduler, inp, config, args.steps, lever, None))
            rows.append((f"{args.steps} steps, ours: {name}", tf, f"{stock_full / tf:.2f}x"))
        rows.append((f"LaLRM forward, latents {tuple(inp.latents.shape[1:])}",
                     counted(lambda: models.lalrm(inp.latents, inp.full_plucker)), ""))
    return rows, weight_rows(models, dtype)


def weight_rows(models, dtype: torch.dtype) -> list[tuple[str, float, str]]:
    """Parameters (billions) and GB in `dtype` of each component; `offload` keeps the largest on the GPU."""
    size = torch.finfo(dtype).bits // 8

    def row(name, params):
        count = sum(p.numel() for p in params)
        return name, count / 1e9, f"{count * size / 2 ** 30:.2f} GB"

    camera = list(models.ours.camera_parameters())
    return [row("stock CogVideoX transformer", models.stock.parameters()),
            row("ours: camera branches (ControlNet, LoRA, camera tokens)", camera),
            row("ours: whole (the largest component under offload)", models.ours.parameters()),
            row("VAE", models.vae.parameters()),
            row("LaLRM", models.lalrm.parameters())]


def print_table(rows, unit: str, ratio: str) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n{'what':<{width}}  {unit:>10}  {ratio:>17}")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10.3f}  {note:>17}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--shape", choices=list(NAMED_CONFIGS))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], help="default: bf16 on CUDA or when counting")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                        help="add a row with torch.compile'd blocks (default backend: inductor)")
    parser.add_argument("--flops", action="store_true", help="count operations on the meta device instead of timing")
    args = parser.parse_args(argv)
    big = cuda or args.flops  # the paper shape runs on a GPU, or anywhere when only counting
    args.shape = args.shape or ("paper" if big else "tiny")
    args.steps = args.steps or (50 if big else 8)
    args.dtype = args.dtype or ("bf16" if big else "fp32")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    config = NAMED_CONFIGS[args.shape]()
    device = torch.device("meta" if args.flops else "cuda" if cuda else "cpu")
    torch.manual_seed(0)
    vcfg = config.video
    print(f"device: {'meta (counting, nothing computed)' if args.flops else device_name(device)}; shape: "
          f"{args.shape} ({vcfg.num_frames}x{vcfg.height}x{vcfg.width}, latents {vcfg.latent_shape}); "
          f"dtype: {args.dtype}; steps: {args.steps}")
    if args.flops:
        rows, weights = flop_rows(config, args, dtype)
        print_table(rows, "TFLOP", "fewer than stock")
        print_table(weights, "B params", f"weights in {args.dtype}")
    else:
        print_table(list(timed_rows(config, args, device, dtype)), "seconds", "speed-up vs stock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
