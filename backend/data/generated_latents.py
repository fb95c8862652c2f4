"""Latent caches whose latents come from the video model instead of the VAE: the LaLRM's input at inference.

A LaLRM trained only on VAE latents of real videos meets something else at inference: the video model's
samples, which miss detail and drift from the true scene. Fine-tuning on generated latents (still
supervised by the real frames) teaches it to read them. `build_generated_cache` takes a finished VAE
latent cache (backend.data.latent_cache) and, for every clip, samples `samples` videos from the clip's
frame 0 and cameras exactly as `generate` does: the condition is the cached latent frame 0 (the causal
VAE encodes frame 0 alone), the cameras are normalized and turned into Plücker maps at the latent grid,
and `sample_video_latents` denoises with the model's scheduler and step count.

The result is a latent cache in the same layout (LatentCacheDataset reads it, train-lrm trains on it):
its signature is the source's (same VAE, clip size, frames and depth maps) plus a "generated" record (the video
model's weights fingerprint, steps, samples, seed), and each clip file keeps the source clip's cameras,
frames and depth maps. Latent frame 0 is the cached condition itself, as `generate` keeps it. Clip `i`'s sample
`s` is entry `i * samples + s`, drawn with generators seeded by (seed, entry), so the latents do not
depend on the batch size. Like the VAE cache, a build first removes the manifest and resumes by
re-using every clip file that already holds its entry.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from diffusers import CogVideoXDPMScheduler

from backend.data.latent_cache import (LatentCacheDataset, clip_file, clip_generator, weights_fingerprint,
                                       write_cache)
from backend.errors import InputError
from backend.models.video import CameraControlledTransformer
from backend.models.weights import read_metadata
from backend.pipelines.camera_i2v import sample_video_latents
from backend.training.diffusion import clip_plucker


def generated_signature(source: LatentCacheDataset, transformer: CameraControlledTransformer, steps: int,
                        samples: int, seed: int) -> dict:
    return {**source.signature, "generated": {"video_weights": weights_fingerprint(transformer),
                                              "steps": steps, "samples": samples, "seed": seed}}


@torch.no_grad()
def build_generated_cache(transformer: CameraControlledTransformer, scheduler: CogVideoXDPMScheduler,
                          source: LatentCacheDataset, path, *, samples: int = 1, steps: int | None = None,
                          batch_size: int = 8, seed: int = 0,
                          on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Sample `samples` latent videos per clip of `source` into the cache folder `path`; returns it.

    steps: denoising steps (default: the model's own, as `generate` uses). on_progress(done, total)
    runs before the first batch (counting re-used entries) and after each; it may raise to stop.
    """
    cfg = transformer.config
    steps = steps or cfg.num_inference_steps
    if samples < 1 or batch_size < 1 or steps < 1:
        raise InputError(f"samples {samples}, batch size {batch_size}, steps {steps}",
                         "use at least 1 sample per clip, 1 clip per batch and 1 denoising step")
    if tuple(source.latent_shape) != cfg.latent_shape or (source.height, source.width) != (cfg.height, cfg.width):
        raise InputError(f"the latent cache {source.path} holds latents {tuple(source.latent_shape)} of "
                         f"{source.width}x{source.height} clips; this video model makes {cfg.latent_shape} at "
                         f"{cfg.width}x{cfg.height}", "build the source cache with this model's VAE and size")
    if "generated" in source.signature:
        raise InputError(f"{source.path} already holds generated latents",
                         "give the VAE's latent cache of the real clips as the source")
    if Path(path).resolve() == source.path.resolve():
        raise InputError(f"the output {path} is the source cache", "write the generated latents to a new folder")
    signature = generated_signature(source, transformer, steps, samples, seed)
    device = next(transformer.parameters()).device
    entries, frame_indices = [], []
    for number, clip in enumerate(source.clips):
        indices = json.loads(read_metadata(source.path / clip["file"])["frame_indices"])  # one header per clip
        for sample in range(samples):
            index = number * samples + sample
            entries.append({"file": clip_file(index), "scene": clip["scene"], "index": index,
                            "source_index": clip["index"], "sample": sample})
            frame_indices.append(indices)

    def generate_batch(chunk: list[int]) -> list[tuple[dict, torch.Tensor | None, str]]:
        loaded = {i: source[i] for i in sorted({index // samples for index in chunk})}  # each clip file once
        items = [loaded[index // samples] for index in chunk]
        K, c2w = torch.stack([it["K"] for it in items]), torch.stack([it["c2w"] for it in items])
        plucker = clip_plucker(K, c2w, source.width, source.height, cfg.latent_height, cfg.latent_width)
        image_latents = torch.stack([it["latents"][:1] for it in items]).to(device)
        latents = sample_video_latents(transformer, scheduler, image_latents, plucker.to(device), steps=steps,
                                       generator=[clip_generator(seed, i) for i in chunk],
                                       keep_image_frame=True).float().cpu()
        return [({"latents": latents[j], "K": item["K"], "c2w": item["c2w"], "frame_indices": item["frame_indices"],
                  **({"depth": item["depth"]} if "depth" in item else {})},
                 item.get("frames"), item["scene"]) for j, item in enumerate(items)]

    return write_cache(path, signature, list(source.latent_shape), entries, frame_indices, generate_batch, batch_size,
                       on_progress)
