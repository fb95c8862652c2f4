"""A procedural room from one random.Random: floor, walls (one side may be open), an optional ceiling,
furniture-like primitives standing on the floor or stacked on each other, procedural textures and lights.

Everything is built in the current (empty) Blender scene, in metres, Z up, the room centred on the origin
with its floor at z = 0. `build_room` returns a Room: the boxes a camera must keep out of and a recipe
(plain data, for scene.json) of what was built.
"""
from __future__ import annotations

import colorsys
import math
import random
from dataclasses import dataclass, field

import bpy

TEXTURES = ("noise", "checker", "brick", "wave", "plain")
MAX_FLOOR_COVER = 0.4    # furniture footprints cover at most this share of the floor, leaving room to move
WALL_GAP = 0.05          # furniture keeps this far from the walls
OBJECT_GAP = 0.15        # and this far from each other


@dataclass
class Box:
    """An axis-aligned box in world space (a furniture piece's bounds, for the camera's collision check)."""
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    @property
    def center(self) -> tuple[float, float, float]:
        return tuple((a + b) / 2 for a, b in zip(self.lo, self.hi))


@dataclass
class Room:
    width: float            # along x
    depth: float            # along y
    height: float           # floor to ceiling (or wall top when there is no ceiling)
    has_ceiling: bool
    obstacles: list[Box] = field(default_factory=list)   # one per furniture piece, stacked items included
    recipe: dict = field(default_factory=dict)

    def inside(self, p, margin: float) -> bool:
        """Whether point p is inside the room, at least `margin` from walls, floor, ceiling and furniture."""
        x, y, z = p
        if abs(x) > self.width / 2 - margin or abs(y) > self.depth / 2 - margin:
            return False
        if z < margin or z > self.height - margin:
            return False
        return not any(all(lo - margin < c < hi + margin for c, lo, hi in zip(p, b.lo, b.hi))
                       for b in self.obstacles)


# ---------------------------------------------------------------------------------------------
# Materials
# ---------------------------------------------------------------------------------------------

def random_color(rng: random.Random, sat=(0.2, 0.9), val=(0.2, 0.85)) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))


def make_material(rng: random.Random, name: str) -> tuple[bpy.types.Material, dict]:
    """A Principled BSDF whose colour is a procedural texture in world coordinates (no stretching on
    scaled objects) mixing two random colours; returns the material and its recipe."""
    kind = rng.choice(TEXTURES)
    c1, c2 = random_color(rng), random_color(rng)
    scale = rng.uniform(1.0, 6.0)
    roughness = rng.uniform(0.3, 0.9)
    mat = bpy.data.materials.new(name)  # Blender 5 gives new materials a node tree with a Principled BSDF
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = roughness
    if kind == "plain":
        bsdf.inputs["Base Color"].default_value = (*c1, 1.0)
    else:
        position = nodes.new("ShaderNodeNewGeometry").outputs["Position"]
        if kind == "checker":
            tex = nodes.new("ShaderNodeTexChecker")
        elif kind == "brick":
            tex = nodes.new("ShaderNodeTexBrick")
            tex.inputs["Mortar"].default_value = (*random_color(rng, sat=(0.0, 0.2), val=(0.5, 0.9)), 1.0)
            tex.inputs["Mortar Size"].default_value = rng.uniform(0.01, 0.04)
        elif kind == "noise":
            tex = nodes.new("ShaderNodeTexNoise")
            tex.inputs["Detail"].default_value = rng.uniform(1.0, 6.0)
        else:
            tex = nodes.new("ShaderNodeTexWave")
            tex.wave_type = rng.choice(("BANDS", "RINGS"))
            tex.inputs["Distortion"].default_value = rng.uniform(0.0, 4.0)
        links.new(position, tex.inputs["Vector"])
        tex.inputs["Scale"].default_value = scale
        if kind in ("checker", "brick"):
            tex.inputs["Color1"].default_value = (*c1, 1.0)
            tex.inputs["Color2"].default_value = (*c2, 1.0)
            links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        else:
            mix = nodes.new("ShaderNodeMix")
            mix.data_type = 'RGBA'
            mix.inputs["A"].default_value = (*c1, 1.0)
            mix.inputs["B"].default_value = (*c2, 1.0)
            links.new(tex.outputs["Fac"], mix.inputs["Factor"])
            links.new(mix.outputs["Result"], bsdf.inputs["Base Color"])
    recipe = {"texture": kind, "color1": [round(c, 4) for c in c1], "color2": [round(c, 4) for c in c2],
              "scale": round(scale, 4), "roughness": round(roughness, 4)}
    return mat, recipe


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------

def _link(obj, mat) -> None:
    obj.data.materials.append(mat)


def add_box(center, size, mat, yaw: float = 0.0):
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=center, rotation=(0.0, 0.0, yaw), scale=size)
    _link(bpy.context.object, mat)


def add_plane(center, size, rotation, mat):
    bpy.ops.mesh.primitive_plane_add(size=1.0, location=center, rotation=rotation)
    obj = bpy.context.object
    obj.scale = (*size, 1.0)  # the operator's own scale argument is ignored for planes
    _link(obj, mat)


def add_cylinder(center, radius, height, mat):
    bpy.ops.mesh.primitive_cylinder_add(vertices=24, radius=radius, depth=height, location=center)
    _link(bpy.context.object, mat)


def add_sphere(center, radius, mat):
    bpy.ops.mesh.primitive_uv_sphere_add(segments=24, ring_count=12, radius=radius, location=center)
    bpy.ops.object.shade_smooth()
    _link(bpy.context.object, mat)


def _footprint(w: float, d: float, yaw: float) -> tuple[float, float]:
    """Half extents of the axis-aligned bounds of a w × d rectangle turned by yaw."""
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    return (w * c + d * s) / 2, (w * s + d * c) / 2


def build_piece(rng, kind: str, x: float, y: float, z: float, w: float, d: float, yaw: float, mats: list,
                max_height: float = 2.0) -> tuple[float, list[tuple[float, float, float, float]]]:
    """Build one furniture piece standing at (x, y, z) with footprint w × d, at most max_height tall; returns
    its top height and the surfaces (x, y, half-w, half-d at the top) other pieces can stand on."""
    mat = rng.choice(mats)
    if kind == "box":
        h = min(rng.uniform(0.3, 1.1), max_height)
        add_box((x, y, z + h / 2), (w, d, h), mat, yaw)
        return z + h, ([(x, y, w / 2, d / 2)] if yaw == 0.0 else [])
    if kind == "table":
        h, top, leg = rng.uniform(0.65, 0.8), 0.05, 0.06
        add_box((x, y, z + h - top / 2), (w, d, top), mat)
        for sx in (-1, 1):
            for sy in (-1, 1):
                add_box((x + sx * (w / 2 - leg), y + sy * (d / 2 - leg), z + (h - top) / 2),
                        (leg, leg, h - top), mat)
        return z + h, [(x, y, w / 2, d / 2)]
    if kind == "shelf":  # two side panels at the ends of its long axis, 3-5 boards between them
        h, board = min(rng.uniform(1.1, 1.9), max_height), 0.04
        along_x = w >= d
        length = w if along_x else d
        for s in (-1, 1):
            off = s * (length / 2 - board / 2)
            add_box((x + off, y, z + h / 2) if along_x else (x, y + off, z + h / 2),
                    (board, d, h) if along_x else (w, board, h), mat)
        levels = rng.randint(3, 5)
        for i in range(levels):
            bz = z + board / 2 + i * (h - board) / (levels - 1)
            add_box((x, y, bz), (w - 2 * board, d, board) if along_x else (w, d - 2 * board, board), mat)
        return z + h, [(x, y, w / 2 - board, d / 2) if along_x else (x, y, w / 2, d / 2 - board)]
    if kind == "cylinder":
        h = min(rng.uniform(0.2, 1.3), max_height)
        add_cylinder((x, y, z + h / 2), min(w, d) / 2, h, mat)
        return z + h, []
    r = min(w, d, max_height) / 2  # sphere
    add_sphere((x, y, z + r), r, mat)
    return z + 2 * r, []


FLOOR_KINDS = ("box", "table", "shelf", "cylinder", "sphere", "box", "table")
SMALL_KINDS = ("box", "cylinder", "sphere")


def _overlaps(x, y, hx, hy, placed) -> bool:
    return any(abs(x - px) < hx + phx + OBJECT_GAP and abs(y - py) < hy + phy + OBJECT_GAP
               for px, py, phx, phy in placed)


def build_furniture(rng: random.Random, room: Room, mats: list) -> list[dict]:
    """Furniture on the floor (shelves against a wall), some with smaller pieces stacked on top."""
    W, D = room.width, room.depth
    placed, pieces = [], []
    cover, budget = 0.0, MAX_FLOOR_COVER * W * D
    for _ in range(rng.randint(5, 12)):
        kind = rng.choice(FLOOR_KINDS)
        for _attempt in range(30):
            if kind == "shelf":
                w, d, yaw = rng.uniform(0.8, 1.6), rng.uniform(0.3, 0.45), 0.0
                side = rng.choice("NSEW")
                if side in "EW":
                    w, d = d, w
                hx, hy = w / 2, d / 2
                x = rng.uniform(-W / 2 + hx + WALL_GAP, W / 2 - hx - WALL_GAP)
                y = rng.uniform(-D / 2 + hy + WALL_GAP, D / 2 - hy - WALL_GAP)
                x = {"E": W / 2 - hx - WALL_GAP, "W": -W / 2 + hx + WALL_GAP}.get(side, x)
                y = {"N": D / 2 - hy - WALL_GAP, "S": -D / 2 + hy + WALL_GAP}.get(side, y)
            else:
                if kind in ("cylinder", "sphere"):
                    w = d = rng.uniform(0.3, 0.9)
                elif kind == "table":
                    w, d = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0)
                else:
                    w, d = rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.2)
                yaw = rng.uniform(-0.6, 0.6) if kind == "box" and rng.random() < 0.5 else 0.0
                hx, hy = _footprint(w, d, yaw)
                if 2 * hx + 2 * WALL_GAP >= W or 2 * hy + 2 * WALL_GAP >= D:
                    continue
                x = rng.uniform(-W / 2 + hx + WALL_GAP, W / 2 - hx - WALL_GAP)
                y = rng.uniform(-D / 2 + hy + WALL_GAP, D / 2 - hy - WALL_GAP)
            if cover + 4 * hx * hy > budget or _overlaps(x, y, hx, hy, placed):
                continue
            top, surfaces = build_piece(rng, kind, x, y, 0.0, w, d, yaw, mats, room.height - 0.3)
            placed.append((x, y, hx, hy))
            cover += 4 * hx * hy
            room.obstacles.append(Box((x - hx, y - hy, 0.0), (x + hx, y + hy, top)))
            pieces.append({"kind": kind, "center": [round(x, 4), round(y, 4)], "size": [round(w, 4), round(d, 4)],
                           "yaw": round(yaw, 4), "top": round(top, 4)})
            for sx, sy, shx, shy in surfaces:
                if rng.random() < 0.6:
                    pieces.extend(_stack(rng, room, sx, sy, shx, shy, top, mats))
            break
    return pieces


def _stack(rng, room, sx, sy, shx, shy, z, mats) -> list[dict]:
    """One small piece resting on a support surface at height z (fully on it, never floating), kept
    0.3 m below the ceiling."""
    max_height = min(0.6, room.height - 0.3 - z)
    if max_height < 0.1:
        return []
    kind = rng.choice(SMALL_KINDS)
    w = d = rng.uniform(0.12, min(0.45, 2 * shx, 2 * shy))
    x = rng.uniform(sx - shx + w / 2, sx + shx - w / 2)
    y = rng.uniform(sy - shy + d / 2, sy + shy - d / 2)
    top, _ = build_piece(rng, kind, x, y, z, w, d, 0.0, mats, max_height)
    room.obstacles.append(Box((x - w / 2, y - d / 2, z), (x + w / 2, y + d / 2, top)))
    return [{"kind": kind, "center": [round(x, 4), round(y, 4)], "size": [round(w, 4), round(d, 4)],
             "yaw": 0.0, "top": round(top, 4), "on": round(z, 4)}]


# ---------------------------------------------------------------------------------------------
# Lights
# ---------------------------------------------------------------------------------------------

def _light_color(rng) -> tuple[float, float, float]:
    """Mostly white-ish, sometimes tinted."""
    return colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.35), 1.0)


def _add_light(kind: str, name: str, location, color, energy, rotation=(0.0, 0.0, 0.0), **props):
    data = bpy.data.lights.new(name, kind)
    data.color, data.energy = color, energy
    for key, value in props.items():
        setattr(data, key, value)
    obj = bpy.data.objects.new(name, data)
    obj.location, obj.rotation_euler = location, rotation
    bpy.context.scene.collection.objects.link(obj)


def build_lights(rng: random.Random, room: Room) -> list[dict]:
    """One to three lights under the ceiling (point or area, power scaled to the floor area), sometimes a
    sun through the open side or roof. Enough light that no frame is dark."""
    W, D, H = room.width, room.depth, room.height
    area = W * D
    lights = []
    for i in range(rng.randint(1, 3)):
        kind = rng.choice(("POINT", "AREA"))
        loc = (rng.uniform(-W / 3, W / 3), rng.uniform(-D / 3, D / 3), H - 0.25)
        color = _light_color(rng)
        energy = rng.uniform(3.0, 8.0) * area / (i + 1)
        if kind == "POINT":
            _add_light(kind, f"Light{i}", loc, color, energy, shadow_soft_size=rng.uniform(0.05, 0.4))
        else:
            _add_light(kind, f"Light{i}", loc, color, energy, size=rng.uniform(0.5, 2.0))
        lights.append({"type": kind, "location": [round(c, 4) for c in loc], "color": [round(c, 4) for c in color],
                       "energy": round(energy, 3)})
    if rng.random() < 0.5:
        color, strength = _light_color(rng), rng.uniform(2.0, 5.0)
        rot = (rng.uniform(math.radians(20), math.radians(60)), 0.0, rng.uniform(0, 2 * math.pi))
        _add_light("SUN", "Sun", (0.0, 0.0, H + 5), color, strength, rotation=rot, angle=math.radians(2.0))
        lights.append({"type": "SUN", "rotation": [round(r, 4) for r in rot], "color": [round(c, 4) for c in color],
                       "energy": round(strength, 3)})
    return lights


def build_world(rng: random.Random) -> dict:
    """A uniform background (seen through the open side or roof) that also fills shadows a little."""
    color, strength = random_color(rng, sat=(0.0, 0.5), val=(0.4, 1.0)), rng.uniform(0.3, 1.0)
    world = bpy.data.worlds.new("World")
    background = world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (*color, 1.0)
    background.inputs["Strength"].default_value = strength
    bpy.context.scene.world = world
    return {"color": [round(c, 4) for c in color], "strength": round(strength, 3)}


# ---------------------------------------------------------------------------------------------
# The room
# ---------------------------------------------------------------------------------------------

def build_room(rng: random.Random) -> Room:
    """Build a whole random room in the current scene (expected empty)."""
    W, D, H = rng.uniform(3.5, 6.5), rng.uniform(3.5, 7.0), rng.uniform(2.5, 3.2)
    has_ceiling = rng.random() < 0.7
    open_side = rng.choice(("N", "S", "E", "W")) if rng.random() < 0.3 else None
    room = Room(W, D, H, has_ceiling)
    floor_mat, floor_recipe = make_material(rng, "Floor")
    wall_mat, wall_recipe = make_material(rng, "Walls")
    add_plane((0.0, 0.0, 0.0), (W, D), (0.0, 0.0, 0.0), floor_mat)
    if has_ceiling:
        ceiling_mat, _ = make_material(rng, "Ceiling")
        add_plane((0.0, 0.0, H), (W, D), (math.pi, 0.0, 0.0), ceiling_mat)
    walls = {"N": ((0.0, D / 2, H / 2), (W, H), (math.pi / 2, 0.0, 0.0)),
             "S": ((0.0, -D / 2, H / 2), (W, H), (math.pi / 2, 0.0, 0.0)),
             "E": ((W / 2, 0.0, H / 2), (H, D), (0.0, math.pi / 2, 0.0)),
             "W": ((-W / 2, 0.0, H / 2), (H, D), (0.0, math.pi / 2, 0.0))}
    for side, (center, size, rotation) in walls.items():
        if side != open_side:
            add_plane(center, size, rotation, wall_mat)
    mats = [make_material(rng, f"Furniture{i}") for i in range(rng.randint(2, 5))]
    pieces = build_furniture(rng, room, [m for m, _ in mats])
    lights = build_lights(rng, room)
    world = build_world(rng)
    room.recipe = {"width": round(W, 4), "depth": round(D, 4), "height": round(H, 4), "ceiling": has_ceiling,
                   "open_side": open_side, "floor": floor_recipe, "walls": wall_recipe,
                   "furniture_materials": [r for _, r in mats], "furniture": pieces, "lights": lights,
                   "world": world}
    return room
