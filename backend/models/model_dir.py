"""The model directory that `generate --model DIR` loads, written part by part by the trainers.

    wonderland.json              {"format", "version", "name", "video": {...}, "lalrm": {...},
                                  "base_model": optional path to a CogVideoX-5B-I2V folder in diffusers' layout,
                                  "refiner": optional, the detail layer's refiner config,
                                  "depth_prior": optional, the depth prior's config (metric models only)}
    vae/ transformer/ scheduler/ the base video model in diffusers' layout (absent when base_model is set)
    camera_branches.safetensors  our ControlNet + LoRA camera branches
    lalrm.safetensors            the LaLRM (its config also sits in the file's header)
    refiner.safetensors          the detail layer's learned refiner, when "refiner" is in wonderland.json
                                 (backend/models/refiner.py; folders without one use the plain detail layer)
    depth_prior.safetensors      the photo's metric depth net, when "depth_prior" is in wonderland.json
                                 (backend/models/depth_prior.py; folders without one use the model's depth)

`train-vae`, `train-video`, `train-lrm`, `train-refiner` and `train-depth-prior` each export their part into
the same folder (`write_vae`, `write_video`, `write_lalrm`, `write_part`); wonderland.json collects the parts'
configs, and loading says which part is missing and which command makes it. Loading is local only and never unpickles:
diffusers is asked for safetensors files only.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel

from backend.atomic import atomic_write_text
from backend.errors import InputError
from backend.models.config import CONFIG_FORMAT, CONFIG_VERSION, ModelConfig
from backend.models.depth_prior import DepthPrior
from backend.models.lalrm import LaLRM
from backend.models.refiner import Refiner
from backend.models.video import CameraControlledTransformer
from backend.models.weights import load_state_dict, save_state_dict

CONFIG_FILE = "wonderland.json"
CAMERA_FILE = "camera_branches.safetensors"
LALRM_FILE = "lalrm.safetensors"
REFINER_FILE = "refiner.safetensors"
DEPTH_PRIOR_FILE = "depth_prior.safetensors"
MAKERS = {"vae": "train-vae", "video": "train-video", "lalrm": "train-lrm"}
# the parts a folder may lack: manifest key -> (file, module class, the command that exports it)
OPTIONAL_PARTS = {"refiner": (REFINER_FILE, Refiner, "train-refiner"),
                  "depth_prior": (DEPTH_PRIOR_FILE, DepthPrior, "train-depth-prior")}
NOT_CONFIG = ("base_model", *OPTIONAL_PARTS)    # manifest keys that are not ModelConfig fields


def read_manifest(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, "name": directory.name}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to read",
                         "restore the file, or export the model again") from None
    except ValueError as e:
        raise InputError(f"{path} is not valid JSON: {e}", "restore the file, or export the model again") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{path}: the top level must be an object, got {type(manifest).__name__}",
                         "restore the file, or export the model again")
    base = manifest.get("base_model")
    if base is not None and not isinstance(base, str):
        raise InputError(f"{path}: 'base_model' must be a folder path (a string), got {json.dumps(base)[:60]}",
                         "give the path of a CogVideoX-5B-I2V folder in diffusers' layout, or remove the key")
    return manifest


def base_folder(directory: Path, manifest: dict | None = None) -> Path:
    """Where the base video model (transformer/, vae/, scheduler/) of a model folder lives."""
    manifest = read_manifest(directory) if manifest is None else manifest
    return directory / manifest["base_model"] if manifest.get("base_model") else directory


def _write_manifest(directory: Path, *, remove: tuple[str, ...] = (), **parts) -> None:
    manifest = read_manifest(directory)
    manifest.update(parts)
    for key in remove:
        manifest.pop(key, None)
    atomic_write_text(directory / CONFIG_FILE, json.dumps(manifest, indent=1))


def write_vae(directory: str | Path, vae: AutoencoderKLCogVideoX) -> None:
    directory = Path(directory)
    vae.save_pretrained(directory / "vae", safe_serialization=True)
    _write_manifest(directory)


def load_vae(path: str | Path):
    """The CogVideoX VAE of a model folder (its vae/) or of a diffusers VAE folder, frozen, eval mode."""
    path = Path(path)
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise InputError(f"{path} holds no VAE (no config.json in it or in its vae/ folder)",
                         "point --vae at a model folder with vae/ or at a diffusers AutoencoderKLCogVideoX folder")
    try:
        vae = AutoencoderKLCogVideoX.from_pretrained(folder, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load the VAE from {folder}: {e}",
                         "the folder needs config.json and .safetensors weights in diffusers' layout") from e
    return vae.float().eval().requires_grad_(False)


def write_vae_if_missing(directory: str | Path, vae) -> None:
    """write_vae(directory, vae) when there is a VAE and the model folder has no vae/ yet (an exported video
    model or LaLRM then brings the VAE it was trained with)."""
    if vae is not None and not (Path(directory) / "vae").is_dir():
        write_vae(Path(directory), vae.float())


def write_video(directory: str | Path, transformer: CameraControlledTransformer,
                scheduler: CogVideoXDPMScheduler) -> None:
    """The base in diffusers' layout without the LoRA (whose weights go to our camera file)."""
    directory = Path(directory)
    base = transformer.base
    plain = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if ".lora_" not in k}
    (directory / "transformer").mkdir(parents=True, exist_ok=True)
    base.save_config(directory / "transformer")
    save_state_dict(plain, directory / "transformer" / "diffusion_pytorch_model.safetensors")
    scheduler.save_pretrained(directory / "scheduler")
    save_state_dict(transformer.camera_state_dict(), directory / CAMERA_FILE)
    _write_manifest(directory, video=transformer.config.to_dict())


def write_lalrm(directory: str | Path, lalrm: LaLRM, scene_scale: str = "path") -> None:
    """The LaLRM and the frame it reads cameras in (ModelConfig.scene_scale: the model folder's, since the
    LaLRM's training decides it)."""
    directory = Path(directory)
    lalrm.save_pretrained(directory / LALRM_FILE)
    _write_manifest(directory, lalrm=lalrm.config.to_dict(), scene_scale=scene_scale)


def write_part(directory: str | Path, key: str, module: Refiner | DepthPrior) -> None:
    """An optional part (OPTIONAL_PARTS' `key`): its file, then its config under `key` in wonderland.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(directory / OPTIONAL_PARTS[key][0])
    _write_manifest(directory, **{key: module.config.to_dict()})


def read_part(directory: str | Path, key: str):
    """The model folder's optional part `key` (eval mode, CPU), or None when its wonderland.json names none."""
    directory = Path(directory)
    file, cls, maker = OPTIONAL_PARTS[key]
    if key not in read_manifest(directory):
        return None
    if not (directory / file).is_file():
        raise InputError(f"{directory / CONFIG_FILE} names a {key.replace('_', ' ')} but {file} is missing",
                         f"restore the file, export one (`python -m backend {maker} … --export {directory}`), "
                         f"or remove the \"{key}\" key to go without it")
    return cls.from_pretrained(directory / file)


def part_file(path: str | Path, key: str) -> Path:
    """An optional part given as its own file or as a model folder that holds it (the trainers' --init)."""
    path = Path(path)
    return path / OPTIONAL_PARTS[key][0] if path.is_dir() else path


def initial_part(key: str, config, init: str | None):
    """A fresh optional part of `config`, or the one in `init` (its file or a model folder), in train mode."""
    cls = OPTIONAL_PARTS[key][1]
    if init is None:
        return cls(config)
    path = part_file(init, key)
    part = cls.from_pretrained(path)
    if part.config != config:
        raise InputError(f"--init {path} holds a {key.replace('_', ' ')} of config {part.config.to_dict()}, not the "
                         "one asked for", "leave out --model-config to continue with the file's config")
    return part.train()


def write_model(directory: str | Path, config: ModelConfig, vae, transformer, scheduler, lalrm,
                refiner: Refiner | None = None, depth_prior: DepthPrior | None = None) -> None:
    """The whole model folder; an optional part not given that the folder held is removed (the manifest's key
    first, in the same atomic write as the config, then its file), so the folder is the model given."""
    write_vae(directory, vae)
    write_video(directory, transformer, scheduler)
    write_lalrm(directory, lalrm, config.scene_scale)
    parts = {"refiner": refiner, "depth_prior": depth_prior}
    for key, module in parts.items():
        if module is not None:
            write_part(directory, key, module)
    absent = tuple(key for key, module in parts.items() if module is None)
    _write_manifest(Path(directory), remove=absent,
                    **{k: v for k, v in config.to_dict().items() if k not in ("video", "lalrm")})
    for key in absent:
        (Path(directory) / OPTIONAL_PARTS[key][0]).unlink(missing_ok=True)


def read_config(directory: Path, manifest: dict | None = None) -> ModelConfig:
    """The ModelConfig of a model folder's wonderland.json."""
    manifest = read_manifest(directory) if manifest is None else manifest
    return ModelConfig.from_dict({k: v for k, v in manifest.items() if k not in NOT_CONFIG},
                                 source=str(directory / CONFIG_FILE))


def read_model(directory: str | Path, dtype: torch.dtype = torch.float32):
    """(config, vae, transformer, scheduler, lalrm) of a model folder, in eval mode."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise InputError(f"{directory} is not a Wonderland model folder: {CONFIG_FILE} is missing",
                         "point --model at a folder that the trainers exported into (--export DIR)")
    manifest = read_manifest(directory)
    base_dir = base_folder(directory, manifest)
    missing = [part for part, present in (("video", "video" in manifest), ("lalrm", "lalrm" in manifest),
                                          ("vae", (base_dir / "vae").is_dir())) if not present]
    if missing:
        raise InputError(f"model folder {directory} lacks its {' and '.join(missing)} part",
                         " and ".join(f"`python -m backend {MAKERS[p]} … --export {directory}`" for p in missing))
    config = read_config(directory, manifest)
    load = dict(use_safetensors=True, local_files_only=True, torch_dtype=dtype)
    try:
        base = CogVideoXTransformer3DModel.from_pretrained(base_dir, subfolder="transformer", **load)
        vae = AutoencoderKLCogVideoX.from_pretrained(base_dir, subfolder="vae", **load)
        scheduler = CogVideoXDPMScheduler.from_pretrained(base_dir, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load the base video model from {base_dir}: {e}",
                         "the folder needs transformer/, vae/ and scheduler/ in diffusers' layout with "
                         ".safetensors weights (e.g. a local copy of CogVideoX-5b-I2V)") from e
    transformer = CameraControlledTransformer(config.video, base=base)
    transformer.load_camera_state_dict(load_state_dict(directory / CAMERA_FILE))
    lalrm = LaLRM.from_pretrained(directory / LALRM_FILE, dtype=dtype)
    return config, vae.eval(), transformer.to(dtype).eval(), scheduler, lalrm
