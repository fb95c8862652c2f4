"""Metered exposure for version-2 scenes, as a camera's auto-exposure does: small previews of the first frame
are rendered through the scene's view transform and the exposure is moved so that its mean 8-bit level
reaches a target drawn per scene. Without it the furnished rooms (pale walls, HDRI and lamps) came out
washed out (median frame mean 175 of 255, photos are nearer 110).

The preview is Cycles without the denoiser at a fixed seed, so the metered exposure is the same for the
same seed.
"""
from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np

PREVIEW_WIDTH = 48         # pixels, whatever the output size: a scene meters the same at 96x64 and 384x256
PREVIEW_SAMPLES = 4
MAX_CORRECTION = 3.0       # stops
DISPLAY_GAMMA = 2.2        # 8-bit level ~ linear ** (1 / gamma) near the middle of the view transforms


def preview_mean(scene, path: Path) -> float:
    """Mean 8-bit level of frame 0 rendered small, through the scene's view transform."""
    render, cycles = scene.render, scene.cycles
    saved = (render.resolution_x, render.resolution_y, cycles.samples, cycles.use_denoising, render.filepath)
    render.resolution_y = max(1, round(PREVIEW_WIDTH * render.resolution_y / render.resolution_x))
    render.resolution_x, cycles.samples, cycles.use_denoising = PREVIEW_WIDTH, PREVIEW_SAMPLES, False
    render.filepath = str(path)
    try:
        scene.frame_set(scene.frame_start)
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(str(path), check_existing=False)
        try:
            channels = image.channels
            pixels = np.empty(image.size[0] * image.size[1] * channels, dtype=np.float32)
            image.pixels.foreach_get(pixels)  # an 8-bit PNG: its stored levels / 255, no colour conversion
        finally:
            bpy.data.images.remove(image)
    finally:
        render.resolution_x, render.resolution_y, cycles.samples, cycles.use_denoising, render.filepath = saved
    return float(pixels.reshape(-1, channels)[:, :3].mean() * 255.0)


def meter_exposure(scene, target: float, workdir: Path) -> float:
    """Set scene.view_settings.exposure so that frame 0's mean 8-bit level is about `target`; returns it.

    Two previews: the first step assumes DISPLAY_GAMMA, the second uses the slope the two measured (the
    view transforms are flatter than a gamma curve where they roll off)."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    view = scene.view_settings
    e0, m0 = view.exposure, max(preview_mean(scene, Path(workdir) / "meter0.png"), 1.0)
    e1 = e0 + max(-MAX_CORRECTION, min(MAX_CORRECTION, DISPLAY_GAMMA * math.log2(target / m0)))
    view.exposure = e1
    m1 = max(preview_mean(scene, Path(workdir) / "meter1.png"), 1.0)
    if abs(e1 - e0) > 0.05:
        slope = min(1.0, max(0.1, (math.log2(m1) - math.log2(m0)) / (e1 - e0)))  # log2 levels per stop
        view.exposure = e1 + max(-MAX_CORRECTION, min(MAX_CORRECTION, math.log2(target / m1) / slope))
    return view.exposure
