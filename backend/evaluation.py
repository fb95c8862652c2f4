"""Novel-view quality on held-out scenes (benchmarks/bench_quality.py): the two baselines a trained model
must beat, a blurred-input yardstick, and the loop that scores any method against a scene's ground-truth
frames.

A held-out scene is a scene folder (backend/data/folder.py) with `depth/0000.npy`, the camera z-depth of
frame 0 (tools/synthetic_scenes.py writes one per frame). A method sees frame 0 and the cameras of a clip
(frames 0 .. clip_frames - 1) and returns either Gaussians in the cameras' world frame, rendered at every
ground-truth camera with backend.render.render, or one image per frame directly. Scores: the input view
(frame 0), the novel views inside the clip (frames 1 .. clip_frames - 1) and the views beyond it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter

from backend.cameras import CameraBatch
from backend.data.depth import DEPTH_DIR, depth_file_name, surface_mask
from backend.data.folder import read_scene
from backend.data.scenes import DataProblem
from backend.errors import InputError
from backend.gaussians import SH_C0, Gaussians
from backend.images import load_rgb
from backend.render import render
from backend.rotations import rotmat_to_quat
from backend.training.metrics import image_metrics

PLANE_OPACITY = 0.995      # gsplat caps a Gaussian's alpha at 0.99: opaque
PLANE_SCALE = 0.2          # in-plane std-dev, in pixel footprints: sharp input view, few gaps when magnified
PLANE_THICKNESS = 0.05     # std-dev along the view axis, in pixel footprints
BLUR_RADIUS = 6.0          # pixels (at 96x64): the blurred baseline's Gaussian


@dataclass
class EvalScene:
    name: str
    frames: list[Path]        # ground-truth images, in temporal order
    cameras: CameraBatch      # one per frame, K at the frames' size, world frame of cameras.json
    depth0: np.ndarray        # [H, W] camera z-depth of frame 0

    def image(self, index: int) -> np.ndarray:
        return load_rgb(self.frames[index])

    @property
    def median_depth(self) -> float:
        """Median camera z of frame 0's pixels that show a surface (0 < z < NO_SURFACE_DEPTH: not Cycles'
        1e10 sky): where the plane baseline puts the image."""
        depth = self.depth0[surface_mask(self.depth0)]
        return float(np.median(depth)) if depth.size else 1.0


Prediction = Gaussians | np.ndarray   # Gaussians in the world frame, or images [N, H, W, 3] for the N views
Method = Callable[[np.ndarray, CameraBatch, EvalScene], Prediction]   # (frame 0, clip cameras, scene)


def load_eval_scene(folder: str | Path) -> EvalScene:
    folder = Path(folder)
    scene = read_scene(folder, folder.name)
    if isinstance(scene, DataProblem):
        raise InputError(f"{folder} is not a usable scene: {scene}",
                         "render held-out scenes with tools/synthetic_scenes.py --split test")
    depth_file = folder / DEPTH_DIR / depth_file_name(0)
    if not depth_file.is_file():
        raise InputError(f"{folder} has no {DEPTH_DIR}/{depth_file_name(0)} (frame 0's depth, for the plane baseline)",
                         "render the scene again with tools/synthetic_scenes.py (it writes depth/ by default)")
    depth0 = np.load(depth_file).astype(np.float32)
    size = (scene.cameras.height, scene.cameras.width)
    if depth0.shape != size or not np.isfinite(depth0).all() or not (depth0 > 0).any():
        raise InputError(f"{depth_file} holds a {depth0.shape} map (finite, positive: "
                         f"{bool(np.isfinite(depth0).all() and (depth0 > 0).any())}), expected {size}",
                         "render the scene again with tools/synthetic_scenes.py")
    return EvalScene(folder.name, scene.frames, scene.cameras, depth0)


def plane_baseline(image: np.ndarray, camera0: CameraBatch, depth: float) -> Gaussians:
    """One opaque Gaussian per pixel on camera 0's fronto-parallel plane z = depth, at the pixel's centre
    ray, coloured like the pixel and sized like its footprint: from camera 0 it renders the image, from
    anywhere else a flat billboard."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"plane_baseline needs an image [H, W, 3], got {image.shape}", "drop the alpha channel")
    if len(camera0) != 1 or not depth > 0:
        raise InputError(f"plane_baseline needs one camera and a depth > 0, got {len(camera0)} and {depth}",
                         "pass scene.cameras[0] and the median depth of frame 0")
    h, w = image.shape[:2]
    K = camera0.K[0].double() * torch.tensor([[w / camera0.width], [h / camera0.height], [1.0]],
                                             dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5,
                          torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3)
    points = depth * pix @ torch.linalg.inv(K).T                                  # camera z = depth
    c2w = camera0.c2w[0].double()
    means = points @ c2w[:3, :3].T + c2w[:3, 3]
    fx, fy = K[0, 0].item(), K[1, 1].item()                                      # footprint = depth / f
    sigma = torch.tensor([PLANE_SCALE * depth / fx, PLANE_SCALE * depth / fy,
                          PLANE_THICKNESS * depth / math.sqrt(fx * fy)])
    log_scales = torch.log(sigma).expand(h * w, 3)
    quat = rotmat_to_quat(c2w[:3, :3])                                            # axes = camera 0's
    rgb = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).reshape(-1, 3).double()
    n = h * w
    return Gaussians(means=means.float(), log_scales=log_scales.float().contiguous(),
                     quats=quat.float().expand(n, 4).contiguous(),
                     opacity_logits=torch.full((n,), math.log(PLANE_OPACITY / (1 - PLANE_OPACITY))),
                     sh0=((rgb - 0.5) / SH_C0).float(), sh_rest=torch.zeros((n, 0, 3)))


def plane_method(image: np.ndarray, cameras: CameraBatch, scene: EvalScene) -> Gaussians:
    """The plane baseline at the scene's median depth of frame 0."""
    return plane_baseline(image, cameras[0], scene.median_depth)


def unchanged_baseline(image: np.ndarray, cameras: CameraBatch, scene: EvalScene) -> np.ndarray:
    """Every view predicted as the input image itself: [N, H, W, 3] for the scene's N frames."""
    return np.broadcast_to(image, (len(scene.frames), *image.shape))


def blurred_baseline(image: np.ndarray, cameras: CameraBatch, scene: EvalScene) -> np.ndarray:
    """Every view predicted as the input blurred (Gaussian, BLUR_RADIUS px): not a 3D method, a yardstick.
    PSNR rewards blur on high-frequency textures, so a model whose renders are only a blur of the scene
    scores about this; beating it needs real structure."""
    pixels = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    blurred = np.asarray(pixels.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)), dtype=np.float32) / 255.0
    return np.broadcast_to(blurred, (len(scene.frames), *image.shape))


@dataclass
class SceneScores:
    name: str
    input: dict[str, float]             # frame 0: {"psnr", "ssim"}
    novel: list[dict[str, float]]       # frames 1 .. clip_frames - 1, one dict each
    beyond: list[dict[str, float]]      # frames clip_frames .., one dict each


def mean_scores(views: list[dict[str, float]]) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over views (NaN for none)."""
    if not views:
        return {"psnr": math.nan, "ssim": math.nan}
    return {k: float(np.mean([v[k] for v in views])) for k in ("psnr", "ssim")}


def render_views(gaussians: Gaussians, cameras: CameraBatch, device: torch.device) -> np.ndarray:
    """[N, H, W, 3] renders at the cameras' own size, black background, clamped to [0, 1]."""
    out = []
    g = gaussians.to(device)
    with torch.no_grad():
        for i in range(len(cameras)):
            out.append(render(g, cameras[i].to(device)).rgb[0].clamp(0, 1).cpu().numpy())
    return np.stack(out)


def evaluate_scene(scene: EvalScene | str | Path, method: Method, clip_frames: int | None = None,
                   device: torch.device | str = "cpu") -> SceneScores:
    """Score `method` on one scene: it sees frame 0 and cameras 0 .. clip_frames - 1 (default: all)."""
    scene = scene if isinstance(scene, EvalScene) else load_eval_scene(scene)
    n = len(scene.frames)
    clip_frames = n if clip_frames is None else clip_frames
    if not 2 <= clip_frames <= n:
        raise InputError(f"clip_frames = {clip_frames} for scene {scene.name} of {n} frames",
                         "use 2 .. the scene's frame count (frame 0 is the input, the rest novel views)")
    image0 = scene.image(0)
    prediction = method(image0, scene.cameras[0:clip_frames], scene)
    if isinstance(prediction, Gaussians):
        predicted = render_views(prediction, scene.cameras, torch.device(device))
    else:
        predicted = np.array(prediction, dtype=np.float32)
        if predicted.shape != (n, *image0.shape):
            raise ValueError(f"method returned images {predicted.shape}, expected {(n, *image0.shape)}")
    scores = []
    for i in range(n):
        target = torch.from_numpy(image0 if i == 0 else scene.image(i)).permute(2, 0, 1)[None]
        got = torch.from_numpy(np.ascontiguousarray(predicted[i])).permute(2, 0, 1)[None]
        scores.append(image_metrics(got, target))
    return SceneScores(scene.name, scores[0], scores[1:clip_frames], scores[clip_frames:])
