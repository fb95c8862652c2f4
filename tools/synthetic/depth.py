"""Per-frame depth from the render itself: Cycles' Depth pass, written by the compositor during the
animation render and read back with bpy's image API, so it costs no second render.

Cycles' Depth pass for a perspective camera is the distance along the camera's view axis (camera z,
OpenCV's z), not the length of the ray: a pixel's 3D point is depth * K⁻¹ [u + 0.5, v + 0.5, 1] in the
camera frame. Values are anti-aliased like the colour (averaged over the pixel filter), so a pixel on
an object's silhouette holds a blend of the two depths. A pixel that sees the world (an open side, a
window, an open yard's sky) holds Cycles' background depth, exactly 1e10 (no blend at its edges, measured):
readers mask it (version-2 scenes have up to a third of such pixels).
"""
from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

EXR_PREFIX = "depth"  # the compositor's file names: depth0000.exr, depth0001.exr, ...


def add_depth_output(scene, directory: Path) -> None:
    """Make the render also write each frame's Depth pass to directory/depthNNNN.exr (float32).

    The colour goes through the compositor unchanged (Render Layers -> Group Output)."""
    scene.view_layers[0].use_pass_z = True
    tree = bpy.data.node_groups.new("Depth output", "CompositorNodeTree")
    scene.compositing_node_group = tree
    layers = tree.nodes.new("CompositorNodeRLayers")
    tree.interface.new_socket("Image", in_out='OUTPUT', socket_type='NodeSocketColor')
    tree.links.new(layers.outputs["Image"], tree.nodes.new("NodeGroupOutput").inputs[0])
    out = tree.nodes.new("CompositorNodeOutputFile")
    out.directory, out.file_name = str(directory) + "/", ""
    out.format.media_type = 'IMAGE'
    out.format.file_format, out.format.color_mode, out.format.color_depth = 'OPEN_EXR', 'BW', '32'
    out.file_output_items.new('FLOAT', EXR_PREFIX)
    tree.links.new(layers.outputs["Depth"], out.inputs[EXR_PREFIX])


def exr_file(directory: Path, frame: int) -> Path:
    return Path(directory) / f"{EXR_PREFIX}{frame:04d}.exr"


def read_depth(path: Path) -> np.ndarray:
    """A depth EXR written by add_depth_output -> float32 [H, W], row 0 at the top of the image."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = image.size
        pixels = np.empty(width * height * image.channels, dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return np.ascontiguousarray(pixels.reshape(height, width, -1)[::-1, :, 0])
