"""The preset camera moves' maths (orbit, dolly, pan, truck, crane) as world matrices, without bpy, so that it runs
and is tested under any numpy (tests/test_numpy2.py); presets.py keys them on a camera."""
from __future__ import annotations

import math

import numpy as np

PRESETS = (
    ('orbit', "Orbit", "Circle around a point in front of the camera, keeping it in view"),
    ('dolly_in', "Dolly In", "Move forward along the view axis"),
    ('dolly_out', "Dolly Out", "Move backward along the view axis"),
    ('pan', "Pan", "Turn left or right in place"),
    ('truck', "Truck", "Slide sideways, looking the same way"),
    ('crane', "Crane", "Rise straight up, looking the same way"),
)
PRESET_IDS = tuple(p[0] for p in PRESETS)


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def preset_poses(preset: str, start, count: int, *, distance: float = 4.0, angle: float = math.radians(30.0),
                 amount: float = 1.0) -> list[np.ndarray]:
    """`count` rigid world matrices (Blender camera axes) of a preset move starting at `start` (4×4, no scale).

    orbit: around the world Z axis through the point `distance` ahead of the camera, by `angle` radians;
    pan: about the world Z axis in place, by `angle`; dolly_in / dolly_out: `amount` along / against the
    view axis; truck: `amount` to the camera's right; crane: `amount` up the world Z axis.
    """
    if preset not in PRESET_IDS:
        raise ValueError(f"unknown preset {preset!r}: pick one of {', '.join(PRESET_IDS)}")
    if count < 1:
        raise ValueError(f"a preset needs at least one frame, got {count}")
    m0 = np.asarray(start, dtype=np.float64)
    R0, p0 = m0[:3, :3], m0[:3, 3]
    right, forward = R0[:, 0], -R0[:, 2]
    target = p0 + forward * distance
    poses = []
    for i in range(count):
        t = i / (count - 1) if count > 1 else 0.0
        R, p = R0, p0
        if preset == 'orbit':
            Rz = _rot_z(angle * t)
            R, p = Rz @ R0, target + Rz @ (p0 - target)
        elif preset == 'pan':
            R = _rot_z(angle * t) @ R0
        elif preset in ('dolly_in', 'dolly_out'):
            p = p0 + forward * amount * t * (1.0 if preset == 'dolly_in' else -1.0)
        elif preset == 'truck':
            p = p0 + right * amount * t
        else:  # crane
            p = p0 + np.array([0.0, 0.0, amount * t])
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = R, p
        poses.append(pose)
    return poses
