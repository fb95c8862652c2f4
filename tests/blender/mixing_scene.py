"""The mixing test scene, without pytest so that bpy 4.5's check (tests/blender45/check_mixing.py) builds it too:
a wall of opaque green Gaussians, a red box in front of it and a wide blue slab behind it, a 50 mm camera."""
from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np

from wonderland_blender.plyio import Splats, write_ply

W, H = 72, 48
CAMERA_DISTANCE = 6.0
SH_C0 = 0.28209479177387814
# (name, centre, size, emission colour): the front box hides part of the wall, the wall hides the slab's middle
BOXES = (("Front", (-0.5, -3.0, 0.0), (0.5, 0.2, 0.5), (1.0, 0.0, 0.0)),
         ("Back", (1.0, 2.0, 0.0), (3.0, 0.2, 0.6), (0.0, 0.0, 1.0)))
# (world x, world z, distance from the camera, expected RGBA)
EXPECTED = (((-0.5, 0.0, 3.0), (1, 0, 0, 1)),  # the front box hides the wall
            ((0.5, 0.0, 6.0), (0, 1, 0, 1)),   # the wall hides the slab
            ((2.1, 0.0, 8.0), (0, 0, 1, 1)))   # the slab beside the wall


def wall_of_green_gaussians(n_x: int = 30, n_z: int = 18) -> Splats:
    """Opaque pure-green Gaussians filling x ∈ [-1, 1], z ∈ [-0.6, 0.6] on the plane y = 0."""
    x, z = np.meshgrid(np.linspace(-1, 1, n_x), np.linspace(-0.6, 0.6, n_z))
    n = x.size
    means = np.stack([x.ravel(), np.zeros(n), z.ravel()], 1).astype(np.float32)
    green = np.array([0.0, 1.0, 0.0], np.float32)
    return Splats(means, np.tile((green - 0.5) / SH_C0, (n, 1)).astype(np.float32), np.zeros((n, 0, 3), np.float32),
                  np.full(n, 8.0, np.float32), np.full((n, 3), math.log(0.05), np.float32),
                  np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)))


def emissive_box(name: str, location, size, colour) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    sx, sy, sz = (s / 2 for s in size)
    verts = [(x * sx, y * sy, z * sz) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(verts, [], faces)
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.5: a new material has no node tree until use_nodes
        material.use_nodes = True
    tree = material.node_tree
    tree.nodes.clear()
    emission = tree.nodes.new("ShaderNodeEmission")
    emission.inputs["Color"].default_value = (*colour, 1.0)
    tree.links.new(emission.outputs["Emission"], tree.nodes.new("ShaderNodeOutputMaterial").inputs["Surface"])
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    bpy.context.scene.collection.objects.link(obj)
    return obj


def build(folder: Path) -> bpy.types.Scene:
    """The scene, rendering with the Wonderland engine into transparent 32-bit EXRs (the add-on enabled)."""
    write_ply(folder / "wall.ply", wall_of_green_gaussians())
    assert bpy.ops.wonderland.import_gaussians(filepath=str(folder / "wall.ply")) == {'FINISHED'}
    scene = bpy.context.scene
    scene.render.engine = "WONDERLAND_GAUSSIANS"
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = 'OPEN_EXR'
    scene.render.image_settings.color_depth = '32'
    scene.view_settings.view_transform = 'Standard'
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    cam.location, cam.rotation_euler = (0.0, -CAMERA_DISTANCE, 0.0), (math.radians(90), 0.0, 0.0)
    scene.collection.objects.link(cam)
    scene.camera = cam
    for box in BOXES:
        emissive_box(*box)
    return scene


def render(path: Path) -> np.ndarray:
    """F12 of the context scene saved to `path`; [H, W, 4] top row first."""
    scene = bpy.context.scene
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    w, h = image.size
    pixels = np.empty(w * h * 4, np.float32)
    image.pixels.foreach_get(pixels)
    bpy.data.images.remove(image)
    return pixels.reshape(h, w, 4)[::-1]


def pixel(image: np.ndarray, x: float, z: float, depth: float) -> np.ndarray:
    """The pixel showing world point (x, ·, z) at `depth` from the camera (50 mm lens, 36 mm sensor)."""
    f = 50 / 36 * W
    return image[int(H / 2 - f * z / depth), int(W / 2 + f * x / depth)]
