"""Video latents computed once: the frozen VAE encodes every fixed clip a single time, and both trainings
(video model, LaLRM) read the latents back instead of running the VAE each step.

Layout of a cache folder:

    CACHE/clip_000000.safetensors   one file per clip (written atomically): "latents" [T, C, h, w]
                                    float32, scaled like the sampler's latents; "K" [F, 3, 3] and
                                    "c2w" [F, 4, 4] of the clip (pixels of the clip size, OpenCV);
                                    "frame_indices" [F]; "frames" [F, 3, H, W] uint8 (the clip's
                                    pixels, the LaLRM's supervision) unless built with store_frames=False;
                                    "depth" [F, H, W] float32 when the clips have depth (ClipDataset)
    CACHE/cache.json                the manifest, written last: the signature and the clip list

The signature records the VAE (hash of its full config, scaling factor, a fingerprint of its
weights), the clip size and the clip sampling; `LatentCacheDataset` refuses a cache whose signature
does not match what the caller expects. A build first removes the manifest, so an interrupted build
is never read; building again resumes, re-using every clip file whose signature and frames match.

Latents are a sample of the VAE's latent distribution (as CogVideoX training and
backend.pipelines.camera_i2v.encode_image use), drawn with a generator seeded by (seed, clip index):
the same clip gets the same latents whatever the batch size.
Large VAEs: call `vae.enable_tiling()` / `enable_slicing()` before building to bound memory.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from backend.atomic import atomic_write_text
from backend.data.clips import ClipDataset, collate
from backend.errors import InputError
from backend.models.weights import load_state_dict, read_metadata, save_state_dict

MANIFEST = "cache.json"
CACHE_FORMAT = "wonderland-latent-cache"
CACHE_VERSION = 1
FINGERPRINT_VALUES = 256  # leading values of each VAE parameter that go into the weights fingerprint


def vae_config_hash(vae: AutoencoderKLCogVideoX | Mapping) -> str:
    """sha256 of the VAE's full constructor config (defaults filled in), from a model or a config dict
    (e.g. VideoModelConfig.vae), so both give the same hash for the same architecture."""
    given = dict(vae.config) if isinstance(vae, AutoencoderKLCogVideoX) else dict(vae)
    params = inspect.signature(AutoencoderKLCogVideoX.__init__).parameters
    full = {k: p.default for k, p in params.items() if k != "self"}
    full.update({k: v for k, v in given.items() if k in full})
    return hashlib.sha256(json.dumps(full, sort_keys=True, default=list).encode("utf-8")).hexdigest()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter's name, shape and first values rounded to bfloat16 (so the same
    weights loaded in float32 or bfloat16 agree): tells a random model from a trained one, cheaply."""
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        values = p.detach().flatten()[:FINGERPRINT_VALUES].to(torch.bfloat16).float().cpu().numpy()
        digest.update(f"{name}{tuple(p.shape)}".encode("utf-8"))
        digest.update(values.tobytes())
    return digest.hexdigest()


def clip_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator that draws the latent sample of clip `index`."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@torch.no_grad()
def encode_video(vae: AutoencoderKLCogVideoX, frames: Tensor,
                 generator: torch.Generator | list[torch.Generator] | None = None) -> Tensor:
    """Frames [B, F, 3, H, W] in [0, 1] -> scaled latents [B, T, C, H/8, W/8], T = 1 + (F - 1) / 4, like
    camera_i2v.encode_image for a video. A list of generators draws each clip's sample separately."""
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise InputError(f"encode_video expects frames [B, F, 3, H, W], got {tuple(frames.shape)}",
                         "stack clips with backend.data.clips.collate")
    x = (frames.to(device=vae.device, dtype=vae.dtype) * 2 - 1).permute(0, 2, 1, 3, 4)   # [B, 3, F, H, W]
    latents = vae.encode(x).latent_dist.sample(generator).permute(0, 2, 1, 3, 4)
    scale = vae.config.scaling_factor
    return latents / scale if vae.config.invert_scale_latents else latents * scale


def cache_signature(vae: AutoencoderKLCogVideoX, dataset: ClipDataset, seed: int, store_frames: bool) -> dict:
    return {"vae_config_sha256": vae_config_hash(vae), "vae_weights": weights_fingerprint(vae),
            "scaling_factor": float(vae.config.scaling_factor), "num_frames": dataset.num_frames,
            "height": dataset.height, "width": dataset.width, "stride": dataset.stride[0],
            "clips_per_scene": dataset.clips_per_scene, "seed": seed, "frames_stored": store_frames,
            "depth_stored": dataset.has_depth}


def clip_file(index: int) -> str:
    return f"clip_{index:06d}.safetensors"


def _is_current(file: Path, signature: str, scene: str, indices: list[int]) -> bool:
    """Whether a clip file from an earlier (interrupted) build holds this very clip."""
    if not file.is_file():
        return False
    try:
        meta = read_metadata(file)
    except InputError:
        return False
    return meta.get("signature") == signature and meta.get("scene") == scene and \
        meta.get("frame_indices") == json.dumps(indices)


def build_latent_cache(vae: AutoencoderKLCogVideoX, dataset: ClipDataset, path, batch_size: int = 1,
                       on_progress: Callable[[int, int], None] | None = None, store_frames: bool = True,
                       seed: int = 0) -> Path:
    """Encode every clip of a fixed ClipDataset into the cache folder `path`; returns the folder.

    on_progress(done, total) runs after each batch (and once before the first, counting clips re-used
    from an interrupted build); it may raise (e.g. backend.errors.Cancelled) to stop the build.
    """
    if not dataset.fixed:
        raise InputError("the latent cache needs a deterministic clip dataset",
                         "build the ClipDataset with fixed=True (random crops come from the uncached path)")
    temporal = int(vae.config.temporal_compression_ratio)
    if (dataset.num_frames - 1) % temporal:
        raise InputError(f"clips of {dataset.num_frames} frames do not encode to whole latent frames",
                         f"use 1 + {temporal}k frames, e.g. 49 (paper) or 9 (tiny)")
    if batch_size < 1:
        raise InputError(f"batch_size = {batch_size}", "use 1 or more clips per VAE call")
    signature = cache_signature(vae, dataset, seed, store_frames)
    entries, frame_indices = [], []
    for index in range(len(dataset)):
        scene, indices, _ = dataset.plan(index)
        entries.append({"file": clip_file(index), "scene": scene.name, "index": index})
        frame_indices.append(indices)

    def encode(chunk: list[int]) -> list[tuple[dict, Tensor | None, str]]:
        batch = collate([dataset[i] for i in chunk])
        latents = encode_video(vae, batch["frames"], [clip_generator(seed, i) for i in chunk]).float().cpu()
        depth = {"depth": batch["depth"]} if "depth" in batch else {}
        return [({"latents": latents[j], "K": batch["K"][j], "c2w": batch["c2w"][j],
                  "frame_indices": batch["frame_indices"][j], **{k: v[j] for k, v in depth.items()}},
                 batch["frames"][j] if store_frames else None, batch["scene"][j]) for j in range(len(chunk))]

    spatial = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_shape = [(dataset.num_frames - 1) // temporal + 1, int(vae.config.latent_channels),
                    dataset.height // spatial, dataset.width // spatial]
    return write_cache(path, signature, latent_shape, entries, frame_indices, encode, batch_size, on_progress)


def write_cache(path, signature: dict, latent_shape: list[int], entries: list[dict], frame_indices: list[list[int]],
                make: Callable[[list[int]], list[tuple[dict, Tensor | None, str]]], batch_size: int,
                on_progress: Callable[[int, int], None] | None) -> Path:
    """The build every latent cache shares; returns the folder.

    The manifest goes first and comes back last (atomically: a cache without it is never read). Clip
    files of an interrupted build that hold their entry (`_is_current`) are re-used; the others ("index"
    of `entries`) are made `batch_size` at a time by make(indices) -> per index (tensors "latents", "K",
    "c2w", "frame_indices"; frames [F, 3, H, W] in [0, 1] or None; scene name). on_progress(done, total)
    runs before the first batch (counting re-used clips) and after each; it may raise to stop the build.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST).unlink(missing_ok=True)
    signature_text = json.dumps(signature, sort_keys=True)
    todo = [entry["index"] for entry, indices in zip(entries, frame_indices)
            if not _is_current(path / entry["file"], signature_text, entry["scene"], indices)]
    done, total = len(entries) - len(todo), len(entries)
    if on_progress is not None:
        on_progress(done, total)
    for first in range(0, len(todo), batch_size):
        chunk = todo[first:first + batch_size]
        for index, (tensors, frames, scene) in zip(chunk, make(chunk)):
            if frames is not None:
                tensors = {**tensors, "frames": (frames * 255).round().to(torch.uint8)}
            save_state_dict(tensors, path / clip_file(index),
                            metadata={"signature": signature_text, "scene": scene,
                                      "frame_indices": json.dumps(tensors["frame_indices"].tolist())})
        done += len(chunk)
        if on_progress is not None:
            on_progress(done, total)
    manifest = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "signature": signature,
                "latent_shape": list(latent_shape), "clips": entries}
    atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return path


class LatentCacheDataset(Dataset):
    """The clips of a finished latent cache: {"latents" [T, C, h, w], "K", "c2w", "frame_indices",
    "frames" [F, 3, H, W] float in [0, 1] (when stored), "depth" [F, H, W] (when stored), "scene", "index"},
    like ClipDataset's items.

    vae (a model, or a config dict such as VideoModelConfig.vae) and num_frames / height / width, when
    given, must match what the cache was built with; a mismatch is an InputError that says to rebuild.
    A model is also checked by its weights fingerprint and scaling factor.

    `pad_depth` (set by `latent_caches`): yield "depth" even when the cache stores none, all zeros (no depth:
    the depth term skips it, like ClipDataset's scenes without depth/), so that caches of both kinds mix in
    one run (the items of one batch must have the same keys). Off, "depth" comes only from caches that store it.
    """

    def __init__(self, path, vae: AutoencoderKLCogVideoX | Mapping | None = None, num_frames: int | None = None,
                 height: int | None = None, width: int | None = None):
        self.path = Path(path)
        self.pad_depth = False
        rebuild = "build it with backend.data.latent_cache.build_latent_cache (an interrupted build resumes)"
        try:
            manifest = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{self.path} holds no finished latent cache ({MANIFEST} is missing)", rebuild) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read latent cache manifest {self.path / MANIFEST}: {e}", rebuild) from None
        if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
            raise InputError(f"{self.path / MANIFEST} is not a version {CACHE_VERSION} latent cache", rebuild)
        self.signature: dict = manifest["signature"]
        self.latent_shape: tuple[int, ...] = tuple(manifest["latent_shape"])
        self.clips: list[dict] = manifest["clips"]
        expected = {"num_frames": num_frames, "height": height, "width": width}
        if vae is not None:
            expected["vae_config_sha256"] = vae_config_hash(vae)
            if isinstance(vae, AutoencoderKLCogVideoX):
                expected["scaling_factor"] = float(vae.config.scaling_factor)
                expected["vae_weights"] = weights_fingerprint(vae)
        wrong = [f"{k} is {self.signature.get(k)!r} in the cache, {v!r} expected"
                 for k, v in expected.items() if v is not None and self.signature.get(k) != v]
        if wrong:
            raise InputError(f"latent cache {self.path} was built for another VAE or clip size: "
                             + "; ".join(wrong),
                             "build the cache again with this model's VAE and clip size, into a new folder")

    @property
    def num_frames(self) -> int:
        return int(self.signature["num_frames"])

    @property
    def height(self) -> int:
        return int(self.signature["height"])

    @property
    def width(self) -> int:
        return int(self.signature["width"])

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        tensors = load_state_dict(self.path / clip["file"])
        item = {"latents": tensors["latents"], "K": tensors["K"], "c2w": tensors["c2w"],
                "frame_indices": tensors["frame_indices"], "scene": clip["scene"], "index": clip["index"]}
        if "frames" in tensors:
            item["frames"] = tensors["frames"].float() / 255.0
        if "depth" in tensors:
            item["depth"] = tensors["depth"]
        elif self.pad_depth:
            item["depth"] = torch.zeros(self.num_frames, self.height, self.width)
        return item


def latent_caches(paths, vae: AutoencoderKLCogVideoX | Mapping | None = None, num_frames: int | None = None
                  ) -> ConcatDataset:
    """The caches of one training run as one dataset: when any stores depth maps, every one yields "depth"
    (zeros where its cache has none), so batches that mix them collate."""
    sets = [LatentCacheDataset(p, vae=vae, num_frames=num_frames) for p in paths]
    with_depth = any(d.signature.get("depth_stored") for d in sets)
    for data in sets:
        data.pad_depth = with_depth
    return ConcatDataset(sets)
