"""Training clips: `num_frames` frames of one scene, cropped and resized to the model's size, with the
cameras that go with the pixels.

Sampling (random mode), per item, from a generator seeded by (seed, epoch, index):
- a stride s, uniform over the integers of `stride` (inclusive) that fit the scene; frames
  start, start + s, ..., start + (F - 1)·s from a uniform random start;
- a crop box of the target aspect: the largest centred one (`center_crop_box`) scaled by a factor
  uniform in `crop_scale` (a side-length factor), at a uniform random position inside the image;
  one box for the whole clip. The box goes to Pillow's resize unrounded and to
  `crop_resize_intrinsics`, so K maps scene points onto the very pixels that show them.
Fixed mode (validation, the latent cache): stride = stride[0], the largest centred crop (exactly what
inference does with its input image), and starts spread evenly over the scene (clip 0 starts at the
first frame).

Scenes shorter than one clip at the smallest stride, (F - 1)·stride[0] + 1 frames, are skipped when
the dataset is built and listed in `dataset.problems` (repeating frames instead would teach the
model cameras that stand still while the trajectory says otherwise).

Items: {"frames": [F, 3, H, W] float in [0, 1], "K": [F, 3, 3], "c2w": [F, 4, 4] (OpenCV, the scene's
world), "frame_indices": [F] (in the scene), "scene": name, "index": item index}, and "depth" [F, H, W]
(camera z in the scene's world units, 0 = invalid; backend/data/depth.py: the same crop, silhouettes
masked) when any scene of the dataset has depth maps, all 0 for the scenes that have none (so batches
stack). Cameras are not normalised here: the trainers call backend.cameras.normalize on
`item_cameras(item)` as inference does.

Decoding: only the frames of the clip are read; JPEGs are decoded at a reduced size (`Image.draft`,
a power of 2 that still leaves at least the output resolution inside the box) when the box is
2x or more larger than the output. EXIF orientation is not applied: camera poses (COLMAP,
RealEstate10K) are computed on the stored pixels. Alpha is composited over white, like
backend.images.load_rgb. With DataLoader workers, call `set_epoch` before creating the iterator
(persistent workers keep the epoch they were started with).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from backend.cameras import CameraBatch, center_crop_box, crop_resize_intrinsics
from backend.data.depth import load_depth
from backend.data.scenes import DataProblem, Scene
from backend.errors import InputError

DRAFT_MIN_FACTOR = 2


def clip_span(num_frames: int, stride: int) -> int:
    """Frames of the scene that one clip covers."""
    return (num_frames - 1) * stride + 1


def _rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")


def load_frame(path, size: tuple[int, int], box: tuple[float, float, float, float], width: int, height: int
               ) -> np.ndarray:
    """The `box` (x0, y0, w, h in pixels of a `size` image) of an image resized to width x height, as
    uint8 [height, width, 3]. An image of another size than `size` is an InputError."""
    x0, y0, w, h = box
    with Image.open(path) as im:
        if im.size != tuple(size):
            raise InputError(f"frame {path} is {im.size[0]}x{im.size[1]}, but its scene's cameras are for "
                             f"{size[0]}x{size[1]} images",
                             "every frame of a scene must have the same size; re-extract the frames")
        factor = min(w / width, h / height)
        if im.format == "JPEG" and factor >= DRAFT_MIN_FACTOR:
            drafted = im.draft("RGB", (math.ceil(im.width / factor), math.ceil(im.height / factor)))
            if drafted is not None:
                scale = size[0] / drafted[1][2]
                x0, y0, w, h = x0 / scale, y0 / scale, w / scale, h / scale
        out = _rgb(im).resize((width, height), Image.Resampling.BICUBIC, box=(x0, y0, x0 + w, y0 + h))
    return np.asarray(out, dtype=np.uint8)


class ClipDataset(Dataset):
    """`clips_per_scene` clips per usable scene per epoch; item i is a pure function of (seed, epoch, i)."""

    def __init__(self, scenes: list[Scene], num_frames: int, height: int, width: int,
                 stride: tuple[int, int] = (1, 4), crop_scale: tuple[float, float] = (0.8, 1.0),
                 seed: int = 0, fixed: bool = False, clips_per_scene: int = 1):
        stride, crop_scale = (int(stride[0]), int(stride[1])), (float(crop_scale[0]), float(crop_scale[1]))
        if num_frames < 1 or height < 1 or width < 1:
            raise InputError(f"clips of {num_frames} frames of {width}x{height} pixels",
                             "use at least 1 frame and 1x1 pixels (49 x 480 x 720 for the paper model)")
        if not 1 <= stride[0] <= stride[1]:
            raise InputError(f"frame stride range {stride}", "use (min, max) with 1 <= min <= max, e.g. (1, 4)")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise InputError(f"crop scale range {crop_scale}",
                             "use (min, max) with 0 < min <= max <= 1, e.g. (0.8, 1.0)")
        if clips_per_scene < 1:
            raise InputError(f"clips_per_scene = {clips_per_scene}", "use 1 or more")
        self.num_frames, self.height, self.width = num_frames, height, width
        self.stride, self.crop_scale, self.seed, self.fixed = stride, crop_scale, seed, fixed
        self.clips_per_scene = clips_per_scene
        self.epoch = 0
        need = clip_span(num_frames, stride[0])
        self.scenes = [s for s in scenes if len(s.frames) >= need]
        self.problems = [DataProblem(Path(s.source), None,
                                     f"scene {s.name} has {len(s.frames)} frames, fewer than the {need} a clip of "
                                     f"{num_frames} at stride {stride[0]} spans; skipped")
                         for s in scenes if len(s.frames) < need]
        self.has_depth = any(s.depth is not None for s in self.scenes)
        if not self.scenes:
            raise InputError(f"none of the {len(scenes)} scene(s) has the {need} frames that one clip of "
                             f"{num_frames} frames at stride {stride[0]} needs",
                             "use longer videos, or fewer frames / a smaller minimum stride")

    def __len__(self) -> int:
        return len(self.scenes) * self.clips_per_scene

    def set_epoch(self, epoch: int) -> None:
        """Draw new strides, starts and crops (random mode); fixed items do not depend on the epoch."""
        self.epoch = int(epoch)

    def plan(self, index: int) -> tuple[Scene, list[int], tuple[float, float, float, float]]:
        """(scene, frame indices, crop box in the scene's pixels) of item `index`, without loading pixels."""
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} outside [0, {len(self)})")
        scene, k = self.scenes[index // self.clips_per_scene], index % self.clips_per_scene
        n, F = len(scene.frames), self.num_frames
        W, H = scene.cameras.width, scene.cameras.height
        x0, y0, w, h = center_crop_box(W, H, self.width, self.height)
        if self.fixed:
            stride = self.stride[0]
            room = n - clip_span(F, stride)
            start = room * k // (self.clips_per_scene - 1) if self.clips_per_scene > 1 else 0
            return scene, [start + stride * f for f in range(F)], (x0, y0, w, h)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        longest = (n - 1) // (F - 1) if F > 1 else self.stride[1]
        stride = int(rng.integers(self.stride[0], min(self.stride[1], longest) + 1))
        start = int(rng.integers(0, n - clip_span(F, stride) + 1))
        scale = rng.uniform(*self.crop_scale)
        w, h = w * scale, h * scale
        box = (rng.uniform(0, W - w), rng.uniform(0, H - h), w, h)
        return scene, [start + stride * f for f in range(F)], box

    def __getitem__(self, index: int) -> dict:
        scene, indices, box = self.plan(index)
        size = (scene.cameras.width, scene.cameras.height)
        pixels = np.stack([load_frame(scene.frames[i], size, box, self.width, self.height) for i in indices])
        select = torch.tensor(indices)
        item = {"frames": torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0,
                "K": crop_resize_intrinsics(scene.cameras.K[select].float(), box, self.width, self.height),
                "c2w": scene.cameras.c2w[select].float().clone(),
                "frame_indices": select, "scene": scene.name, "index": index}
        if self.has_depth:
            item["depth"] = torch.zeros(len(indices), self.height, self.width) if scene.depth is None else \
                torch.from_numpy(np.stack([load_depth(scene.depth[i], size, box, self.width, self.height)
                                           for i in indices]))
        return item


def collate(items: list[dict]) -> dict:
    """Stack items into a batch: tensors gain a leading batch dimension, names become a list. The items
    must have the same keys (datasets mixed in one run yield the same ones: LatentCacheDataset's depth)."""
    keys = set(items[0])
    odd = [sorted(keys ^ set(item)) for item in items[1:] if set(item) != keys]
    if odd:
        raise ValueError(f"collate: the items of a batch differ in their keys {odd[0]}; every dataset of one run "
                         "must yield the same ones")
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], int):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


def item_cameras(item: dict, size: tuple[int, int] | None = None) -> CameraBatch:
    """The cameras of one item (not a batch), for images of `size` = (width, height), by default the
    size of the item's frames (give it for latent cache items stored without frames)."""
    width, height = size if size is not None else (item["frames"].shape[-1], item["frames"].shape[-2])
    return CameraBatch(item["K"], item["c2w"], int(width), int(height), item["frame_indices"].tolist())
