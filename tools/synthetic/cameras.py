"""Camera moves through a procedural room, like those in real captures: forward walk, orbit, pan, crane,
truck, dolly in/out. The straight moves, pans and orbits are the add-on's presets (camera_moves.preset_poses);
a walk is a horizontal forward move with a slow turn.

Each move starts at a free spot looking at a piece of furniture (or a wall), and every frame's camera stays
inside the room, MARGIN away from walls, floor, ceiling and furniture, and keeps MIN_VIEW_DISTANCE of free
space in front of it, so no frame is the inside of an object or a wall filling the view.
"""
from __future__ import annotations

import math
import random

import bpy
import numpy as np
from mathutils import Matrix, Vector

from wonderland_blender.camera_moves import preset_poses

from .rooms import Room

MOVES = ("walk", "orbit", "pan", "crane", "truck", "dolly_in", "dolly_out")
MARGIN = 0.35             # metres between the camera centre and anything solid
MIN_VIEW_DISTANCE = 0.8   # free space ahead of the camera (ray along the view axis)
MAX_PITCH = math.radians(30.0)
EYE_HEIGHT = (1.0, 1.8)
ATTEMPTS = 200


class PlacementError(RuntimeError):
    """No camera move fits in the room (too cluttered or too small)."""


def look_at(position, target) -> np.ndarray:
    """Blender camera world matrix (looks down -Z, +Y up, no roll) at `position` looking at `target`,
    with the pitch clamped to ±MAX_PITCH."""
    p = np.asarray(position, dtype=np.float64)
    f = np.asarray(target, dtype=np.float64) - p
    horizontal = math.hypot(f[0], f[1])
    pitch = max(-MAX_PITCH, min(MAX_PITCH, math.atan2(f[2], horizontal)))
    yaw = math.atan2(f[1], f[0])
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -forward, p
    return m


# Random amounts of each move (metres; degrees for angles). Version 1 (the shipped model's data) moves
# further than artists usually do; version 2 spans the add-on's preset defaults (1 m, 30 degrees) and the
# short moves artists make (a 0.2 m dolly).
MOVE_RANGES = {
    1: {"walk": (0.8, 2.0), "walk_turn": (0.0, 20.0), "orbit": (15.0, 45.0), "pan": (20.0, 60.0),
        "dolly_in": (0.3, 1.0), "dolly_out": (0.5, 1.5), "truck": (0.5, 1.5), "crane": (0.3, 0.8)},
    2: {"walk": (0.3, 1.5), "walk_turn": (0.0, 15.0), "orbit": (8.0, 40.0), "pan": (10.0, 45.0),
        "dolly_in": (0.15, 0.8), "dolly_out": (0.2, 1.2), "truck": (0.15, 1.2), "crane": (0.1, 0.7)},
}


def move_poses(rng: random.Random, move: str, start: np.ndarray, target_distance: float,
               count: int, ranges: dict = MOVE_RANGES[1]) -> tuple[list[np.ndarray], dict]:
    """`count` camera world matrices of `move` from `start`, with random amounts from `ranges` (dolly_in's
    is a share of the free distance to the target); and the move's recipe."""
    sign = rng.choice((-1.0, 1.0))
    if move == "walk":
        amount, turn = rng.uniform(*ranges["walk"]), sign * math.radians(rng.uniform(*ranges["walk_turn"]))
        turning = preset_poses("pan", start, count, angle=turn)
        heading = -start[:3, 2].copy()
        heading[2] = 0.0
        heading /= max(np.linalg.norm(heading), 1e-9)
        poses = []
        for i, pose in enumerate(turning):
            pose = pose.copy()
            pose[:3, 3] = start[:3, 3] + heading * amount * i / max(count - 1, 1)
            poses.append(pose)
        return poses, {"move": move, "amount": round(amount, 4), "angle_deg": round(math.degrees(turn), 3)}
    if move == "orbit":
        angle = sign * math.radians(rng.uniform(*ranges["orbit"]))
        params = {"distance": target_distance, "angle": angle}
    elif move == "pan":
        params = {"angle": sign * math.radians(rng.uniform(*ranges["pan"]))}
    elif move == "dolly_in":
        params = {"amount": rng.uniform(*ranges["dolly_in"]) * max(target_distance - 0.8, 0.3)}
    elif move == "dolly_out":
        params = {"amount": rng.uniform(*ranges["dolly_out"])}
    elif move == "truck":
        params = {"amount": sign * rng.uniform(*ranges["truck"])}
    elif move == "crane":
        params = {"amount": sign * rng.uniform(*ranges["crane"])}
    else:
        raise ValueError(f"unknown move {move!r}: pick one of {', '.join(MOVES)}")
    recipe = {"move": move}
    for key, value in params.items():
        recipe[key + ("_deg" if key == "angle" else "")] = round(math.degrees(value) if key == "angle" else value, 4)
    return preset_poses(move, start, count, **params), recipe


def _view_clear(scene, pose: np.ndarray) -> bool:
    """Whether the view axis has MIN_VIEW_DISTANCE of free space in front of the camera."""
    hit, *_ = scene.ray_cast(bpy.context.evaluated_depsgraph_get(), Vector(pose[:3, 3]), Vector(-pose[:3, 2]),
                             distance=MIN_VIEW_DISTANCE)
    return not hit


def _targets(rng: random.Random, room: Room) -> list[np.ndarray]:
    """Things worth looking at: the furniture (upper half of each piece) and, rarely, a spot on a wall."""
    points = [np.array([*b.center[:2], b.lo[2] + 0.75 * (b.hi[2] - b.lo[2])]) for b in room.obstacles]
    if not points or rng.random() < 0.1:
        side = rng.choice((-1.0, 1.0))
        on_x = rng.random() < 0.5
        h = rng.uniform(0.8, min(1.6, room.height - 0.3))
        if on_x:
            points.append(np.array([side * room.width / 2, rng.uniform(-room.depth / 3, room.depth / 3), h]))
        else:
            points.append(np.array([rng.uniform(-room.width / 3, room.width / 3), side * room.depth / 2, h]))
        return points[-1:]
    return points


def plan_camera_move(rng: random.Random, scene, room: Room, count: int,
                     ranges: dict = MOVE_RANGES[1]) -> tuple[list[np.ndarray], dict]:
    """A random move (kind from MOVES, amounts from `ranges`) whose every pose passes the room's margin and
    view checks."""
    move = rng.choice(MOVES)
    top = min(EYE_HEIGHT[1], room.height - MARGIN - 0.1)
    for attempt in range(ATTEMPTS):
        position = np.array([rng.uniform(-room.width / 2, room.width / 2),
                             rng.uniform(-room.depth / 2, room.depth / 2), rng.uniform(EYE_HEIGHT[0], top)])
        if not room.inside(position, MARGIN):
            continue
        target = rng.choice(_targets(rng, room))
        distance = float(np.linalg.norm(target - position))
        if distance < 1.2:
            continue
        start = look_at(position, target)
        poses, recipe = move_poses(rng, move, start, distance, count, ranges)
        if all(room.inside(p[:3, 3], MARGIN) for p in poses) and \
                all(_view_clear(scene, p) for p in poses[::max(1, count // 8)] + poses[-1:]):
            recipe.update(target=[round(float(c), 4) for c in target], attempts=attempt + 1)
            return poses, recipe
        if attempt % 20 == 19:  # this kind of move may not fit this room: try another
            move = rng.choice(MOVES)
    raise PlacementError(f"no camera move fits in the room after {ATTEMPTS} attempts "
                         f"({room.width:.1f} × {room.depth:.1f} m with {len(room.obstacles)} pieces)")


def key_camera(scene, cam_obj, poses: list[np.ndarray], frame_start: int) -> None:
    """Key the camera's location and rotation at every frame from frame_start on, one pose per frame."""
    euler = cam_obj.rotation_euler.copy()
    for i, pose in enumerate(poses):
        frame = frame_start + i
        cam_obj.matrix_world = Matrix(pose.tolist())
        euler = cam_obj.matrix_basis.to_euler(cam_obj.rotation_mode, euler)  # no flips between keys
        cam_obj.rotation_euler = euler
        cam_obj.keyframe_insert("location", frame=frame)
        cam_obj.keyframe_insert("rotation_euler", frame=frame)
