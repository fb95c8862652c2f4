"""Generator version 2's scenes: rooms with windows (or open, outdoor-like yards) furnished with real
catalogue furniture, lit by one of Blender's HDRIs (seen through the windows) and interior lights, and
shown through a varied view transform and exposure, as photos are.

Built in the current (empty) Blender scene from one random.Random, like rooms.build_room, and returned as
a rooms.Room whose obstacles the cameras avoid and whose recipe (plain data) goes into scene.json.
"""
from __future__ import annotations

import colorsys
import math
import random
import re
from pathlib import Path

import bpy

from .assets import AssetPool
from .catalog import FurnitureModel, import_model
from .exposure import meter_exposure
from .pictures import hang_picture
from .rooms import WALL_GAP, Box, Room, _footprint, _overlaps, add_plane, build_lights, make_material

PLAIN_WALLS = 0.6                 # share of rooms with plainly painted walls (the rest: procedural textures)
PICTURE_SHARE = 0.5               # of the windowless walls of a room carry a framed picture (with --pictures)
OPEN_SHARE = 0.2                  # open, outdoor-like yards (no ceiling, at most two walls)
MAX_FLOOR_COVER = 0.35
ROOM_THEMES = ("Living room", "Living room", "Kitchen", "Bedroom", "Bathroom", "Office")  # catalogue categories
THEMED_SHARE = 0.75               # of a room's floor pieces drawn from its theme (yards: "Exterior")
SMALL = (0.45, 0.6)               # height and footprint (m) below which a model is small: it goes on a support
SUPPORT = re.compile(r"table|desk|cabinet|dresser|chest|sideboard|counter|commode|drawer|buffet|console|"
                     r"nightstand|stand|bench|shelf", re.IGNORECASE)
SUPPORT_TOP = (0.3, 1.2)          # heights (m) of a support's top
LOOKS = (("AgX", "None"), ("AgX", "AgX - Punchy"), ("AgX", "AgX - Base Contrast"),
         ("AgX", "AgX - Medium High Contrast"), ("AgX", "AgX - Medium Low Contrast"), ("Filmic", "None"),
         ("Filmic", "Medium Contrast"), ("Standard", "None"), ("Khronos PBR Neutral", "None"))
TARGET_MEAN = (80.0, 150.0)       # the mean 8-bit level of frame 0 (photos: about 110)
HDRI_MEAN = {"city.exr": 1.03, "courtyard.exr": 0.54, "forest.exr": 0.78, "interior.exr": 0.89,  # measured
             "night.exr": 0.12, "studio.exr": 0.54, "sunrise.exr": 0.45, "sunset.exr": 0.42}   # luminance


def is_small(model: FurnitureModel) -> bool:
    w, d, h = (s / 100.0 for s in model.size_cm)
    return h < SMALL[0] and max(w, d) < SMALL[1]


def is_support(model: FurnitureModel) -> bool:
    """A piece with a flat top at table height that small models can stand on."""
    height, top = model.size_cm[2] / 100.0, model.top_cm / 100.0
    return bool(SUPPORT.search(model.name)) and SUPPORT_TOP[0] <= top <= SUPPORT_TOP[1] and top >= 0.9 * height


def plain_material(rng: random.Random, name: str) -> tuple[bpy.types.Material, dict]:
    """A plain, pale, muted paint, as most real walls are."""
    color = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.55, 0.95))
    roughness = rng.uniform(0.5, 0.95)
    mat = bpy.data.materials.new(name)
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    return mat, {"texture": "paint", "color1": [round(c, 4) for c in color], "roughness": round(roughness, 4)}


def add_wall(a, b, height: float, mat, window=None) -> None:
    """A wall from floor point a to b (x, y), `height` tall, with an optional rectangular hole
    window = (u0, u1, z0, z1) in metres along the wall and up from the floor."""
    (ax, ay), (bx, by) = a, b
    length = math.hypot(bx - ax, by - ay)
    quads = [(0.0, length, 0.0, height)]
    if window:
        u0, u1, z0, z1 = window
        quads = [(0.0, length, 0.0, z0), (0.0, length, z1, height), (0.0, u0, z0, z1), (u1, length, z0, z1)]
    verts, faces = [], []
    for u0, u1, z0, z1 in quads:
        i = len(verts)
        for u, z in ((u0, z0), (u1, z0), (u1, z1), (u0, z1)):
            t = u / length
            verts.append((ax + t * (bx - ax), ay + t * (by - ay), z))
        faces.append((i, i + 1, i + 2, i + 3))
    mesh = bpy.data.meshes.new("Wall")
    mesh.from_pydata(verts, [], faces)
    mesh.materials.append(mat)
    obj = bpy.data.objects.new("Wall", mesh)
    bpy.context.scene.collection.objects.link(obj)


def _window(rng: random.Random, length: float, height: float) -> tuple[float, float, float, float]:
    width = rng.uniform(0.8, min(2.2, length - 0.6))
    u0 = rng.uniform(0.3, length - 0.3 - width)
    z0 = rng.uniform(0.4, 1.0)
    z1 = min(height - 0.25, z0 + rng.uniform(1.0, 1.7))
    return u0, u0 + width, z0, z1


def build_shell(rng: random.Random, pool: AssetPool) -> tuple[Room, dict]:
    """Floor, walls (with windows, and framed pictures when the pool has some) and ceiling of a room, or the
    ground and a wall or two of an open yard."""
    is_open = rng.random() < OPEN_SHARE
    if is_open:
        W, D, H = rng.uniform(6.0, 10.0), rng.uniform(6.0, 10.0), rng.uniform(2.2, 3.5)
    else:
        W, D, H = rng.uniform(3.5, 6.5), rng.uniform(3.5, 7.0), rng.uniform(2.5, 3.2)
    room = Room(W, D, H if not is_open else 4.0, has_ceiling=not is_open)
    floor_mat, floor_recipe = make_material(rng, "Floor")
    wall_mat, wall_recipe = plain_material(rng, "Walls") if rng.random() < PLAIN_WALLS else make_material(rng, "Walls")
    ground = (40.0, 40.0) if is_open else (W, D)
    add_plane((0.0, 0.0, 0.0), ground, (0.0, 0.0, 0.0), floor_mat)
    if not is_open:
        add_plane((0.0, 0.0, H), (W, D), (math.pi, 0.0, 0.0), make_material(rng, "Ceiling")[0])
    corners = {"N": ((W / 2, D / 2), (-W / 2, D / 2)), "S": ((-W / 2, -D / 2), (W / 2, -D / 2)),
               "E": ((W / 2, -D / 2), (W / 2, D / 2)), "W": ((-W / 2, D / 2), (-W / 2, -D / 2))}
    sides = sorted(rng.sample(list(corners), rng.randint(0, 2))) if is_open else list(corners)
    windowed = set() if is_open else set(rng.sample(sides, rng.randint(1, 2)))
    walls = []
    for side in sides:
        a, b = corners[side]
        length = math.hypot(b[0] - a[0], b[1] - a[1])
        window = _window(rng, length, H) if side in windowed else None
        add_wall(a, b, H, wall_mat, window)
        walls.append({"side": side, "window": [round(v, 4) for v in window] if window else None})
        if pool.pictures and not window and not is_open and rng.random() < PICTURE_SHARE:
            walls[-1]["picture"] = hang_picture(rng, rng.choice(pool.pictures), a, b, (0.3, length - 0.3), H)
    recipe = {"open": is_open, "width": round(W, 4), "depth": round(D, 4), "height": round(H, 4),
              "floor": floor_recipe, "walls": wall_recipe, "wall_sides": walls}
    return room, recipe


def _place(rng, room: Room, model: FurnitureModel, placed, against_wall: bool):
    """A free floor spot (x, y, yaw) for `model`, or None: against a wall facing into the room, or free."""
    W, D = room.width, room.depth
    w, d = model.size_cm[0] / 100.0, model.size_cm[1] / 100.0
    for _ in range(15):
        if against_wall:  # the model's front faces -Y: turn it to face away from its wall
            side = rng.choice("NSEW")
            yaw = {"N": 0.0, "S": math.pi, "E": -math.pi / 2, "W": math.pi / 2}[side]
        else:
            yaw = rng.uniform(0.0, 2.0 * math.pi)
        hx, hy = _footprint(w, d, yaw)
        if 2 * hx + 2 * WALL_GAP >= W or 2 * hy + 2 * WALL_GAP >= D:
            return None
        x = rng.uniform(-W / 2 + hx + WALL_GAP, W / 2 - hx - WALL_GAP)
        y = rng.uniform(-D / 2 + hy + WALL_GAP, D / 2 - hy - WALL_GAP)
        if against_wall:
            x = {"E": W / 2 - hx - WALL_GAP, "W": -W / 2 + hx + WALL_GAP}.get(side, x)
            y = {"N": D / 2 - hy - WALL_GAP, "S": -D / 2 + hy + WALL_GAP}.get(side, y)
        if not _overlaps(x, y, hx, hy, placed):
            return x, y, yaw, hx, hy
    return None


def _put(model: FurnitureModel, pool: AssetPool, workdir: Path, x: float, y: float, z: float, yaw: float) -> None:
    obj = import_model(model, pool.furniture_dir, workdir)
    obj.location, obj.rotation_euler = (x, y, z), (0.0, 0.0, yaw)


def _piece_recipe(model: FurnitureModel, x, y, z, yaw) -> dict:
    return {"id": model.id, "name": model.name, "center": [round(x, 4), round(y, 4)], "z": round(z, 4),
            "yaw": round(yaw, 4), "size": [round(s / 100.0, 4) for s in model.size_cm]}


def _stack(rng, room: Room, pool, workdir, support: dict, small: list[FurnitureModel]) -> list[dict]:
    """One to three small models on a support's top, inside its footprint (in its own turned frame)."""
    x, y, yaw = support["center"][0], support["center"][1], support["yaw"]
    sw, sd = support["size"][0], support["size"][1]
    z = support["top"]
    items, taken = [], []
    for _ in range(rng.randint(1, 3)):
        model = rng.choice(small)
        w, d, h = (s / 100.0 for s in model.size_cm)
        if w > 0.8 * sw or d > 0.8 * sd or z + h > room.height - 0.3:
            continue
        u = rng.uniform(-(sw - w) / 2 * 0.9, (sw - w) / 2 * 0.9)
        v = rng.uniform(-(sd - d) / 2 * 0.9, (sd - d) / 2 * 0.9)
        if _overlaps(u, v, w / 2, d / 2, taken):
            continue
        taken.append((u, v, w / 2, d / 2))
        c, s = math.cos(yaw), math.sin(yaw)
        px, py = x + c * u - s * v, y + s * u + c * v
        _put(model, pool, workdir, px, py, z, yaw)
        hx, hy = _footprint(w, d, yaw)
        room.obstacles.append(Box((px - hx, py - hy, z), (px + hx, py + hy, z + h)))
        items.append({**_piece_recipe(model, px, py, z, yaw), "on": support["id"]})
    return items


def build_furniture(rng: random.Random, room: Room, pool: AssetPool, workdir: Path, theme: str) -> list[dict]:
    """Four to ten catalogue pieces on the floor (half against a wall), never intersecting, covering at most
    MAX_FLOOR_COVER of it, most of them from the `theme` category, with small models on the tables and
    cabinets among them."""
    floor = [m for m in pool.furniture if not is_small(m)]
    themed = [m for m in floor if m.category == theme] or floor
    small = [m for m in pool.furniture if is_small(m)]
    placed, pieces, cover = [], [], 0.0
    for _ in range(rng.randint(4, 10) if floor else 0):
        for _attempt in range(3):
            model = rng.choice(themed if rng.random() < THEMED_SHARE else floor)
            spot = _place(rng, room, model, placed, against_wall=rng.random() < 0.5)
            if spot is None:
                continue
            x, y, yaw, hx, hy = spot
            if cover + 4 * hx * hy > MAX_FLOOR_COVER * room.width * room.depth:
                continue
            _put(model, pool, workdir, x, y, 0.0, yaw)
            placed.append((x, y, hx, hy))
            cover += 4 * hx * hy
            height = model.size_cm[2] / 100.0
            room.obstacles.append(Box((x - hx, y - hy, 0.0), (x + hx, y + hy, height)))
            piece = {**_piece_recipe(model, x, y, 0.0, yaw), "top": round(model.top_cm / 100.0, 4)}
            pieces.append(piece)
            if small and is_support(model) and rng.random() < 0.7:
                pieces.extend(_stack(rng, room, pool, workdir, piece, small))
            break
    return pieces


def build_hdri_world(rng: random.Random, pool: AssetPool) -> dict:
    """One of the pool's HDRIs as the world: light through the windows and what is seen through them,
    turned at random, its strength set so its mean luminance is about one (night included)."""
    hdri = rng.choice(pool.hdris)
    rotation = rng.uniform(0.0, 2.0 * math.pi)
    strength = rng.uniform(0.7, 1.4) / HDRI_MEAN.get(hdri.file, 1.0)
    world = bpy.data.worlds.new("World")
    nodes, links = world.node_tree.nodes, world.node_tree.links
    env = nodes.new("ShaderNodeTexEnvironment")
    env.image = bpy.data.images.load(str(hdri.path), check_existing=True)
    mapping = nodes.new("ShaderNodeMapping")
    mapping.inputs["Rotation"].default_value = (0.0, 0.0, rotation)
    links.new(nodes.new("ShaderNodeTexCoord").outputs["Generated"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], env.inputs["Vector"])
    background = nodes["Background"]
    links.new(env.outputs["Color"], background.inputs["Color"])
    background.inputs["Strength"].default_value = strength
    bpy.context.scene.world = world
    return {"hdri": hdri.id, "rotation": round(rotation, 4), "strength": round(strength, 4)}


def choose_look(rng: random.Random, scene, workdir: Path) -> dict:
    """A view transform, look and exposure, as varied as the photos artists bring: the exposure is metered
    (synthetic.exposure) to a mean level drawn from TARGET_MEAN."""
    transform, look = rng.choice(LOOKS)
    target = rng.uniform(*TARGET_MEAN)
    scene.view_settings.view_transform, scene.view_settings.look = transform, look
    scene.view_settings.exposure = 0.0
    exposure = meter_exposure(scene, target, workdir)
    return {"view_transform": transform, "look": look, "target_mean": round(target, 2), "exposure": round(exposure, 4)}


def build_furnished_room(rng: random.Random, pool: AssetPool, workdir: Path) -> Room:
    """A whole version-2 scene in the current (empty) Blender scene, but the camera and the look."""
    room, recipe = build_shell(rng, pool)
    recipe["theme"] = "Exterior" if recipe["open"] else rng.choice(ROOM_THEMES)
    pieces = build_furniture(rng, room, pool, workdir, recipe["theme"])
    world = build_hdri_world(rng, pool)
    lights = [] if recipe["open"] else build_lights(rng, room)
    room.recipe = {**recipe, "furniture": pieces, "lights": lights, "world": world}
    return room
