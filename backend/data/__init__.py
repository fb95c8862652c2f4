"""Training data: scenes on disk (three layouts), clips for the models, and the VAE latent cache.

`backend.data.latent_cache` (build_latent_cache, LatentCacheDataset, encode_video) is imported from
its module: it needs diffusers, which the readers and the clip sampler do not.
"""
from backend.data.clips import ClipDataset, collate, item_cameras
from backend.data.scenes import (DataOptions, DataProblem, Scene, load_scenes, require_scenes, split_scenes,
                                  training_scenes)

__all__ = ["ClipDataset", "DataOptions", "DataProblem", "Scene", "collate", "item_cameras", "load_scenes",
           "require_scenes", "split_scenes", "training_scenes"]
