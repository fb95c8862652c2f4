"""Render room.png, the demo's synthetic input: a small lit room with a few coloured objects (Cycles, CPU).

Kept so the bundled picture can be remade: `.venv/bin/python tools/demo_inputs/make_room.py` (about 20 s
on 2 CPU cores). Until the synthetic data generator's held-out renders replace it, this stands in for one.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

import bpy

OUT = Path(__file__).resolve().parent / "room.png"
WIDTH, HEIGHT, SAMPLES = 360, 240, 24


def material(name: str, rgb: tuple[float, float, float], roughness: float = 0.5) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    return mat


def add(op, name: str, mat: bpy.types.Material, **kw) -> bpy.types.Object:
    op(**kw)
    obj = bpy.context.active_object
    obj.name = name
    obj.data.materials.append(mat)
    return obj


def build_room() -> None:
    """A 6 × 5 m floor with three walls, a table-like box, a sphere, a cylinder and a cone; lit by a
    ceiling area light and a warm window-like sun."""
    mesh = bpy.ops.mesh
    add(mesh.primitive_cube_add, "Floor", material("Floor", (0.55, 0.42, 0.3), 0.7), size=1,
        location=(0, 0, -0.05), scale=(6, 5, 0.1))
    wall = material("Wall", (0.8, 0.78, 0.72), 0.9)
    add(mesh.primitive_cube_add, "Back Wall", wall, size=1, location=(0, 2.5, 1.4), scale=(6, 0.1, 2.8))
    add(mesh.primitive_cube_add, "Left Wall", wall, size=1, location=(-3, 0, 1.4), scale=(0.1, 5, 2.8))
    add(mesh.primitive_cube_add, "Right Wall", material("Accent Wall", (0.25, 0.45, 0.6), 0.9), size=1,
        location=(3, 0, 1.4), scale=(0.1, 5, 2.8))
    add(mesh.primitive_cube_add, "Table", material("Table", (0.35, 0.2, 0.1), 0.4), size=1,
        location=(0.2, 1.0, 0.35), scale=(1.6, 0.9, 0.7))
    add(mesh.primitive_uv_sphere_add, "Ball", material("Red", (0.8, 0.08, 0.05), 0.3), radius=0.3,
        location=(-0.2, 1.0, 1.0), segments=48, ring_count=24)
    add(mesh.primitive_cylinder_add, "Vase", material("Green", (0.1, 0.6, 0.2), 0.2), radius=0.15, depth=0.6,
        location=(0.6, 1.1, 1.0))
    add(mesh.primitive_cone_add, "Cone", material("Yellow", (0.9, 0.7, 0.05), 0.5), radius1=0.4, depth=0.9,
        location=(-1.6, 0.2, 0.45))
    add(mesh.primitive_cube_add, "Crate", material("Purple", (0.4, 0.15, 0.6), 0.6), size=0.6,
        location=(1.8, -0.3, 0.3), rotation=(0, 0, math.radians(25)))
    for obj in bpy.data.objects:
        if obj.type == 'MESH' and obj.name in {"Ball", "Vase"}:
            bpy.context.view_layer.objects.active = obj
            bpy.ops.object.shade_smooth()

    area = bpy.data.lights.new("Ceiling", 'AREA')
    area.energy, area.size = 150.0, 2.0
    light = bpy.data.objects.new("Ceiling", area)
    light.location = (0, 0.5, 2.7)
    bpy.context.scene.collection.objects.link(light)
    sun = bpy.data.lights.new("Window", 'SUN')
    sun.energy, sun.color, sun.angle = 1.5, (1.0, 0.85, 0.65), math.radians(3)
    sun_obj = bpy.data.objects.new("Window", sun)
    sun_obj.rotation_euler = (math.radians(55), 0, math.radians(-40))
    bpy.context.scene.collection.objects.link(sun_obj)

    world = bpy.data.worlds.new("World")
    world.color = (0.05, 0.05, 0.06)
    bpy.context.scene.world = world

    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.location, cam.rotation_euler = (0.0, -4.2, 1.5), (math.radians(80), 0, 0)
    cam.data.lens = 28
    bpy.context.scene.collection.objects.link(cam)
    bpy.context.scene.camera = cam


def render(path: Path) -> None:
    scene = bpy.context.scene
    scene.render.engine = 'CYCLES'
    scene.cycles.device, scene.cycles.samples = 'CPU', SAMPLES
    scene.cycles.use_denoising = True
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = WIDTH, HEIGHT, 100
    scene.view_settings.view_transform = 'Standard'
    scene.render.image_settings.file_format = 'PNG'
    scene.render.image_settings.color_mode = 'RGB'
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        scene.render.filepath = tmp
        bpy.ops.render.render(write_still=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main() -> int:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    build_room()
    render(OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
