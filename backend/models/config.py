"""`ModelConfig`: the two models of one Wonderland model, and the named configurations.

A named configuration pairs a `VideoModelConfig` with a `LaLRMConfig` whose frames, pixel size and
latent shape agree, so latents flow from the sampler into the LaLRM without any reshaping.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from backend.errors import InputError
from backend.models.lalrm import LaLRMConfig
from backend.models.video import VideoModelConfig
from backend.models.weights import check_field_types

CONFIG_FORMAT = "wonderland-model"
CONFIG_VERSION = 1
# How a model's scene gets its size (wonderland.json "scene_scale"; folders without the key are "path"), i.e. the
# frame the LaLRM reads cameras and places Gaussians in (backend.cameras.normalize):
# "path" = normalized by the move, so the scene's size follows the move's length, the paper's rule;
# "metric" = camera 0's frame in world units (a LaLRM trained on metric data: a short move stays short).
# The video model's camera input is normalized by the move in both (the paper's conditioning: the shape of
# the move, not its size). Which the default uses, and why, measured: backend/weights/default/MODEL_CARD.md.
SCENE_SCALES = ("path", "metric")


def normalizes_by_path(scene_scale: str) -> bool:
    """normalize(..., by_path=) for the cameras of a LaLRM in this scene_scale (inference and training)."""
    return scene_scale == "path"


@dataclass
class ModelConfig:
    name: str
    video: VideoModelConfig
    lalrm: LaLRMConfig
    # Inference defaults (the CLI's options override them).
    prune_opacity: float = 0.005       # drop nearly transparent Gaussians before writing
    max_gaussians: int | None = None   # cap on the written count (most opaque kept)
    scene_scale: str = "path"          # SCENE_SCALES

    @property
    def lalrm_by_path(self) -> bool:
        """normalize(..., by_path=) for the LaLRM's cameras: False for a metric-scale model."""
        return normalizes_by_path(self.scene_scale)

    def __post_init__(self) -> None:
        v, r = self.video, self.lalrm
        pairs = {"frames": (v.num_frames, r.num_frames), "height": (v.height, r.height),
                 "width": (v.width, r.width), "latent channels": (v.latent_channels, r.latent_channels),
                 "VAE temporal factor": (v.vae_temporal_compression, r.vae_temporal_factor),
                 "VAE spatial factor": (v.vae_spatial_compression, r.vae_spatial_factor)}
        wrong = {k: p for k, p in pairs.items() if p[0] != p[1]}
        if wrong:
            detail = ", ".join(f"{k}: video {a} vs LaLRM {b}" for k, (a, b) in wrong.items())
            raise InputError(f"model config {self.name!r}: the video model and the LaLRM disagree ({detail})",
                             "the LaLRM reads the video model's latents: give both the same sizes")

    @property
    def frames(self) -> int:
        return self.video.num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels of the images and cameras the model consumes."""
        return self.video.width, self.video.height

    def to_dict(self) -> dict[str, Any]:
        return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, "name": self.name,
                "video": self.video.to_dict(), "lalrm": self.lalrm.to_dict(),
                "prune_opacity": self.prune_opacity, "max_gaussians": self.max_gaussians,
                "scene_scale": self.scene_scale}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "wonderland.json") -> "ModelConfig":
        if not isinstance(d, dict) or d.get("format") != CONFIG_FORMAT:
            raise InputError(f"{source} is not a Wonderland model config (no \"format\": \"{CONFIG_FORMAT}\")",
                             "point --model at a folder written by save_pretrained or train-* --export")
        version = d.get("version")
        if isinstance(version, str):
            raise InputError(f"{source}: \"version\" is the string {json.dumps(version)}, must be the number "
                             f"{CONFIG_VERSION}", f"write \"version\": {CONFIG_VERSION} without quotes")
        if version != CONFIG_VERSION:
            raise InputError(f"{source} has config version {version}, this backend reads "
                             f"{CONFIG_VERSION}", "update the backend, or re-export the model")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - known - {"format", "version"})
        if extra:
            raise InputError(f"{source} has unknown keys {extra}", f"known keys: {sorted(known)}")
        check_field_types(cls, {k: v for k, v in d.items() if k in known}, source)
        if d.get("prune_opacity") is not None and not 0 <= d["prune_opacity"] <= 1:
            raise InputError(f"{source}: 'prune_opacity' is {d['prune_opacity']}, must lie in 0..1",
                             "opacities lie in 0..1; the default is 0.005")
        if d.get("max_gaussians") is not None and d["max_gaussians"] < 1:
            raise InputError(f"{source}: 'max_gaussians' is {d['max_gaussians']}, must be 1 or more",
                             "or null for no cap")
        if d.get("scene_scale", "path") not in SCENE_SCALES:
            raise InputError(f"{source}: 'scene_scale' is {json.dumps(d['scene_scale'])[:40]}, this backend knows "
                             f"{', '.join(SCENE_SCALES)}", "write the one the LaLRM was trained with (train-lrm "
                             "--scene-scale); without the key it is \"path\": the scene's size follows the move")
        return cls(name=d["name"], video=VideoModelConfig.from_dict(d["video"]),
                   lalrm=LaLRMConfig.from_dict(d["lalrm"]), prune_opacity=d.get("prune_opacity", 0.005),
                   max_gaussians=d.get("max_gaussians"), scene_scale=d.get("scene_scale", "path"))

    # --- named configurations ---------------------------------------------------------------------
    @classmethod
    def tiny(cls) -> "ModelConfig":
        """Runs on 2 CPU cores in seconds: 9 frames at 96x64."""
        video = VideoModelConfig.tiny()
        return cls("tiny", video, dataclasses.replace(LaLRMConfig.tiny(), latent_channels=video.latent_channels))

    @classmethod
    def small(cls) -> "ModelConfig":
        """The shipped default's size (backend/weights/default): 9 frames at 96x64, 16 latent channels."""
        lalrm = LaLRMConfig(num_frames=9, height=64, width=96, latent_channels=16, hidden_size=128,
                            num_layers=4, num_heads=4)
        return cls("small", VideoModelConfig.small(), lalrm)

    @classmethod
    def paper(cls) -> "ModelConfig":
        """CogVideoX-5B-I2V with both camera branches and the 24x1024 LaLRM: 49 frames at 720x480."""
        return cls("paper", VideoModelConfig.paper(), LaLRMConfig.paper())


NAMED_CONFIGS = {"tiny": ModelConfig.tiny, "small": ModelConfig.small, "paper": ModelConfig.paper}
