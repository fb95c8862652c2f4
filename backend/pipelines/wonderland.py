"""The Wonderland pipeline: image + camera trajectory -> video latents -> 3D Gaussians in the caller's world.

Its components come from a model folder (backend/models/model_dir.py), a shipped model, or a named
config with seeded random weights (`tiny`, for tests and smoke runs).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler

from backend.cameras import CameraBatch, center_crop_box, fit_cameras, normalize, resample
from backend.coverage import opaque_along
from backend.detail import detail_layer, model_view
from backend.detail_size import DEFAULT_DETAIL_SIZE, check_detail_size, detail_grid
from backend.errors import Cancelled, InputError
from backend.gaussians import Gaussians
from backend.images import crop_resize
from backend.models.config import NAMED_CONFIGS, ModelConfig
from backend.models.depth_prior import DepthPrior, camera_height
from backend.models.lalrm import LaLRM
from backend.models.video import CameraControlledTransformer, build_scheduler, build_vae
from backend.models.model_dir import CONFIG_FILE, read_model, read_part, write_model
from backend.models.refiner import Refiner
from backend.palette import matched_to_photo
from backend.pipelines.camera_i2v import (check_tiling, compile_blocks, decode_latents, encode_image,
                                          sample_video_latents)
from backend.plucker import plucker_embedding
from backend.prior_scale import (check_ground_z, check_subject_distance, distance_ratio, photo_depth, prior_field,
                                 scaled, warped)
from backend.render import render

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"  # models the project ships, by name
DEFAULT_MODEL = "default"
ASPECT_TOLERANCE = 0.01

ProgressFn = Callable[[str, int, int], None]


@dataclass
class WonderlandPipeline:
    config: ModelConfig
    vae: AutoencoderKLCogVideoX
    transformer: CameraControlledTransformer
    scheduler: CogVideoXDPMScheduler
    lalrm: LaLRM
    source: str                      # the directory it came from, or how its random weights were made
    random_weights: bool = False
    refiner: Refiner | None = None   # the detail layer's learned refiner, when the model folder has one
    depth_prior: DepthPrior | None = None   # the photo's metric depth net, when the (metric) folder has one

    def __post_init__(self) -> None:
        if self.depth_prior is not None and self.config.scene_scale != "metric":
            raise InputError(f"model {self.source}: a depth prior gives metres, but the LaLRM's scene scale is "
                             f"{self.config.scene_scale!r}", "use a depth prior with a metric-scale model only "
                             "(remove the \"depth_prior\" key from wonderland.json)")

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ModelConfig, seed: int = 0) -> "WonderlandPipeline":
        """Seeded random weights: for smoke runs and tests, never for results."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = build_vae(config.video)
            # float32 throughout, as a saved and reloaded model is (diffusers makes a float64 buffer)
            transformer = CameraControlledTransformer(config.video).float()
            lalrm = LaLRM(config.lalrm)
        return cls(config, vae.eval(), transformer.eval(), build_scheduler(config.video), lalrm.eval(),
                   source=f"random weights (seed {seed})", random_weights=True)

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32) -> "WonderlandPipeline":
        config, vae, transformer, scheduler, lalrm = read_model(directory, dtype)
        return cls(config, vae, transformer, scheduler, lalrm, source=str(directory),
                   refiner=read_part(directory, "refiner"), depth_prior=read_part(directory, "depth_prior"))

    def save_pretrained(self, directory: str | Path) -> None:
        write_model(directory, self.config, self.vae, self.transformer, self.scheduler, self.lalrm, self.refiner,
                    self.depth_prior)

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> "WonderlandPipeline":
        """Moves the models; the refiner and the depth prior stay float32 (they work on float32 photos)."""
        for module in (self.refiner, self.depth_prior):
            if module is not None:
                module.to(device=device)
        for module in (self.vae, self.transformer, self.lalrm):
            module.to(device=device)
            if dtype is not None and next(module.parameters()).dtype != dtype:
                module.to(dtype=dtype)  # only when needed: diffusers warns about every dtype cast
        return self

    @property
    def device(self) -> torch.device:
        return self.lalrm.fuse.weight.device


def shipped_models() -> list[str]:
    return sorted(p.name for p in SHIPPED_DIR.glob("*") if (p / CONFIG_FILE).is_file())


def load_pipeline(model: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> WonderlandPipeline:
    """`model` is a model folder, the name of a shipped model, or a named config: `tiny` builds seeded
    random weights (for tests and smoke runs); `paper` needs real weights, so it refuses."""
    path = Path(model).expanduser()
    if path.is_dir():
        return WonderlandPipeline.from_pretrained(path, dtype)
    if (SHIPPED_DIR / model / CONFIG_FILE).is_file():
        return WonderlandPipeline.from_pretrained(SHIPPED_DIR / model, dtype)
    if model == "tiny":
        return WonderlandPipeline.from_config(NAMED_CONFIGS["tiny"](), seed=seed)
    if model == "paper":
        raise InputError("the paper model needs weights (8B+ parameters), and none are published",
                         "train one (train-video / train-lrm), or make a model folder whose wonderland.json "
                         "has \"base_model\" pointing at a local CogVideoX-5b-I2V and add camera_branches "
                         "and lalrm safetensors")
    if model == DEFAULT_MODEL:
        raise InputError("no trained default model is installed with this backend",
                         "name a model folder (--model DIR; in Blender, the Model field or the preferences' "
                         "Default Model), or 'tiny' for a smoke run with random weights")
    known = ", ".join(shipped_models() + ["tiny"])
    raise InputError(f"--model {model!r} is neither a folder nor a known model",
                     f"give a model folder, or one of: {known}")


@dataclass
class GenerateResult:
    gaussians: Gaussians                 # in the caller's world frame
    previews: list[np.ndarray]           # [h, w, 3] floats in 0..1 along the trajectory
    video: list[np.ndarray] = field(default_factory=list)  # decoded frames [H, W, 3] in 0..1, when asked
    info: dict = field(default_factory=dict)


def input_crop(model_size: tuple[int, int], image_size: tuple[int, int], cameras: CameraBatch
               ) -> tuple[tuple, tuple, list[str]]:
    """The crop boxes (x0, y0, w, h) of the image (in its pixels) and of the cameras (in theirs) that give
    the model's aspect, and warnings.

    Crop policy: the image is first centre-cropped to the cameras' aspect (when they differ, a
    warning says so), then image and cameras take the same centred crop to the model's aspect
    (3:2 for the paper model).
    """
    (model_w, model_h), (img_w, img_h) = model_size, image_size
    warnings = []
    aspect_box = center_crop_box(img_w, img_h, cameras.width, cameras.height)
    if abs((img_w / img_h) / (cameras.width / cameras.height) - 1.0) > ASPECT_TOLERANCE:
        warnings.append(f"the image is {img_w}x{img_h} but the cameras are {cameras.width}x{cameras.height}: "
                        f"the image was centre-cropped to the cameras' aspect")
    cam_box = center_crop_box(cameras.width, cameras.height, model_w, model_h)
    s = aspect_box[2] / cameras.width
    image_box = (aspect_box[0] + cam_box[0] * s, aspect_box[1] + cam_box[1] * s, cam_box[2] * s, cam_box[3] * s)
    return image_box, cam_box, warnings


def model_inputs(pipe: WonderlandPipeline, image: np.ndarray, cameras: CameraBatch
                 ) -> tuple[np.ndarray, CameraBatch, dict]:
    """The image and trajectory at the model's size and frame count, cropped identically (input_crop),
    resized to the model's size, K adjusted to match."""
    model_w, model_h = pipe.config.size
    img_h, img_w = image.shape[:2]
    image_box, cam_box, warnings = input_crop(pipe.config.size, (img_w, img_h), cameras)
    pixels = crop_resize(image, image_box, model_w, model_h)
    fitted = fit_cameras(resample(cameras, pipe.config.frames), model_w, model_h, cam_box)
    info = {"image_size": [img_w, img_h], "image_crop_box": [round(v, 3) for v in image_box],
            "camera_crop_box": [round(v, 3) for v in cam_box], "model_size": [model_w, model_h],
            "input_cameras": len(cameras), "model_frames": pipe.config.frames, "warnings": warnings}
    return pixels, fitted, info


def ground_info(camera0: CameraBatch, ground_z: float | None) -> dict:
    """What a ground-reading prior was told: the ground's world Z and camera 0's height over it (None: none)."""
    height = camera_height(camera0.c2w[0], ground_z)
    return {"z": None if height is None else ground_z, "camera_height": None if height is None else round(height, 4)}


def generate(pipe: WonderlandPipeline, image: np.ndarray, cameras: CameraBatch, *, steps: int | None = None,
             seed: int = 0, guidance_scale: float | None = None, controlnet_fraction: float | None = None,
             guidance_fraction: float = 1.0, prompt_embeds: torch.Tensor | None = None,
             cache: str | None = None, compile: bool = False, preview_count: int = 8, preview_size: int = 256,
             video_preview: bool = False, vae_tiling: bool = False,
             prune_opacity: float | None = None, max_gaussians: int | None = None,
             detail_size: int = DEFAULT_DETAIL_SIZE, subject_distance: float | None = None,
             ground_z: float | None = 0.0, device: torch.device | None = None, offload: bool = False,
             on_progress: ProgressFn | None = None, should_cancel: Callable[[], bool] | None = None) -> GenerateResult:
    """Image [H, W, 3] floats in 0..1 and the caller's trajectory -> Gaussians in the caller's world.

    `prompt_embeds` [L, D] (e.g. T5 of a prompt, precomputed) turn on classifier-free guidance against
    empty-text zeros; without them the model runs unguided. Same seed, same device -> same result.
    `should_cancel` is polled before every denoising step and between stages; a True answer raises
    backend.errors.Cancelled. With `offload`, the components wait on the CPU and each visits `device`
    only for its own stage (peak GPU memory = the largest one). `video_preview` also decodes the video
    latents with the VAE (`vae_tiling`: in tiles), a look at what the video model made; the 3D path
    never needs it, so it counts as one more step of the render stage. `detail_size` (long side in
    pixels, 0 = off, the paper's behaviour) adds the photo itself as pixel-aligned Gaussians
    (backend/detail.py), corrected by the model's refiner when it has one (info["detail"]["refiner"]),
    culls the model's Gaussians in front of it, gives the rest the photo's palette (backend/palette.py;
    info["detail"]["palette"]) and makes them opaque where the move's views see them only faintly
    (backend/coverage.py; info["detail"]["opaque"]). A model with a depth prior slides its Gaussians along camera
    0's rays to the photo's metric depth (its median: the size; a blur of the rest: the broad shape) and blends
    that depth into the layer's (backend/prior_scale.py; info["depth_prior"]).
    A prior that reads the ground is told that camera 0 stands over a ground plane at world Z = `ground_z` (None:
    no known ground; info["depth_prior"]["ground"]).
    `subject_distance` (the caller's world units) overrides the model's size: everything is scaled about camera
    0 so that the median depth of its view is that distance (info["subject_distance"]).
    """

    def progress(stage: str, step: int, total: int) -> None:
        if on_progress is not None:
            on_progress(stage, step, total)

    def check() -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled("cancelled between stages")

    cfg, video_cfg = pipe.config, pipe.config.video
    if compile and cache is not None:
        raise InputError(f"torch.compile and the {cache} cache do not combine: enabling the cache replaces "
                         "the attention forwards, which discards the compiled graphs on every run",
                         "pick one of --compile and --cache")
    if vae_tiling:
        if not video_preview:
            raise InputError("VAE tiling only applies to the video preview", "add --video-preview, or leave out "
                             "--vae-tiling")
        check_tiling(pipe.vae)  # before the minutes of sampling, not after
    check_detail_size(detail_size)
    check_subject_distance(subject_distance)
    check_ground_z(ground_z)
    steps = steps or video_cfg.num_inference_steps
    device, dtype = device or pipe.device, pipe.lalrm.dtype

    @contextlib.contextmanager
    def placed(module: torch.nn.Module):
        if offload:
            module.to(device)
        try:
            yield module
        finally:
            if offload:
                module.to("cpu")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    pixels, fitted, info = model_inputs(pipe, image, cameras)
    cams_norm, _ = normalize(fitted)                  # the video model's cameras: normalized by the move
    cams_lrm, normalization = normalize(fitted, by_path=cfg.lalrm_by_path)   # the LaLRM's (scene_scale)
    generator = torch.Generator(device=device).manual_seed(seed)
    progress("encode", 0, 1)
    with torch.no_grad():
        image_t = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device=device, dtype=dtype) * 2.0 - 1.0
        with placed(pipe.vae):
            image_latents = encode_image(pipe.vae, image_t, generator=generator)
    progress("encode", 1, 1)
    timings["encode"] = time.perf_counter() - t0
    check()

    t1 = time.perf_counter()
    if compile:
        compile_blocks(pipe.transformer)
    plucker = plucker_embedding(cams_norm.to(device), video_cfg.latent_height, video_cfg.latent_width)
    with placed(pipe.transformer):
        latents = sample_video_latents(
            pipe.transformer, pipe.scheduler, image_latents, plucker[None].to(dtype), steps=steps,
            guidance_scale=guidance_scale, generator=generator, on_step=lambda i, n: progress("denoise", i, n),
            should_cancel=should_cancel, controlnet_fraction=controlnet_fraction,
            guidance_fraction=guidance_fraction, cache=cache, keep_image_frame=True,
            prompt_embeds=None if prompt_embeds is None else prompt_embeds[None].to(device, dtype))
    timings["denoise"] = time.perf_counter() - t1
    check()

    t2 = time.perf_counter()
    progress("reconstruct", 0, 1)
    with torch.no_grad(), placed(pipe.lalrm):
        local = pipe.lalrm.predict_gaussians(
            latents[0], cams_lrm, prune_opacity=cfg.prune_opacity if prune_opacity is None else prune_opacity,
            max_count=cfg.max_gaussians if max_gaussians is None else max_gaussians)
    model_count = len(local)
    info["detail"] = {"size": None, "count": 0, "culled": 0, "refiner": False, "palette": None, "opaque": 0}
    prior, prior_weight = None, 0.0
    if model_count and (pipe.depth_prior is not None or subject_distance is not None):
        # the scene's size and broad shape (backend/prior_scale.py): metres from the photo, then the artist's
        # distance, which wins over the size
        camera0 = cams_lrm[0].to("cpu", torch.float32)
        view = model_view(local.to("cpu", torch.float32), camera0)
        if pipe.depth_prior is not None:
            settings = pipe.depth_prior.config
            prior_weight = settings.detail_weight
            prior = photo_depth(pipe.depth_prior, torch.from_numpy(pixels), fitted[0], ground_z)
            field, size = prior_field(view, prior, settings.shape_sigma)
            local = warped(local, field, camera0.K[0])
            info["depth_prior"] = {"scale": round(size, 4), "detail_weight": prior_weight,
                                   "shape_sigma": settings.shape_sigma,
                                   "ground": ground_info(fitted[0], ground_z) if settings.ground else None}
            if settings.ground and ground_z is not None and info["depth_prior"]["ground"]["z"] is None:
                info["warnings"].append(f"the first camera stands at Z {float(fitted[0].c2w[0, 2, 3]):.3g}, not above "
                                        f"the ground at Z {ground_z:g}: the scene's size was judged without a ground "
                                        "(set the ground's Z, or say there is none)")
            if subject_distance is not None:
                view = model_view(local.to("cpu", torch.float32), camera0)
        if subject_distance is not None:
            factor = distance_ratio(view, subject_distance / normalization.scale)
            prior = None if prior is None else prior * factor
            info["subject_distance"] = {"distance": subject_distance, "scale": round(factor, 4)}
            local = scaled(local, factor)
    if detail_size and model_count:   # no model Gaussians, no depth: the result stays empty, and says so
        local, palette = matched_to_photo(local, torch.from_numpy(pixels), cams_lrm[0])
        box = input_crop(cfg.size, image.shape[1::-1], cameras)[0]
        width, height = detail_grid(box, cfg.size, detail_size)
        photo = torch.from_numpy(crop_resize(image, box, width, height))
        with torch.no_grad():
            detail, keep, info["detail"] = detail_layer(local, photo, cams_lrm[0], pipe.refiner, prior, prior_weight)
        info["detail"]["palette"] = None if palette is None else [[round(float(v), 4) for v in row] for row in palette]
        kept, detail = local.to(torch.float32)[keep.to(local.device)], detail.to(local.device)
        kept, info["detail"]["opaque"] = opaque_along(kept, detail, cams_lrm.to(kept.means.device, torch.float32))
        local = Gaussians.cat([kept, detail])
    with torch.no_grad():
        gaussians = normalization.gaussians_to_world(local).detach().to(dtype=torch.float32)
    progress("reconstruct", 1, 1)
    timings["reconstruct"] = time.perf_counter() - t2
    check()

    t3 = time.perf_counter()
    video, offset = [], int(video_preview)
    if video_preview:
        with torch.no_grad(), placed(pipe.vae):
            clip = decode_latents(pipe.vae, latents, tiling=vae_tiling)[0]
        video = list(((clip.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy())
        progress("render", offset, preview_count + offset)
        check()
    previews = render_previews(gaussians, cameras, preview_count, preview_size,
                               lambda stage, i, n: progress(stage, i + offset, n + offset), check)
    timings["render"] = time.perf_counter() - t3
    info.update({"steps": steps, "seed": seed, "normalization_scale": normalization.scale,
                 "scene_scale": cfg.scene_scale, "count": len(gaussians),
                 "model_count": model_count, "timings_s": {k: round(v, 3) for k, v in timings.items()}})
    return GenerateResult(gaussians.to("cpu"), previews, video, info)


def render_previews(gaussians: Gaussians, cameras: CameraBatch, count: int, size: int,
                    progress: ProgressFn, check: Callable[[], None]) -> list[np.ndarray]:
    """`count` views spread along the caller's trajectory, the long side `size` pixels."""
    if count <= 0:
        return []
    views = resample(cameras, count)
    scale = size / max(cameras.width, cameras.height)
    width, height = max(1, round(cameras.width * scale)), max(1, round(cameras.height * scale))
    out = []
    for i in range(count):
        check()
        with torch.no_grad():
            rgb = render(gaussians, views[i].to(gaussians.device), width, height).rgb[0]
        out.append(rgb.clamp(0, 1).cpu().numpy())
        progress("render", i + 1, count)
    return out
