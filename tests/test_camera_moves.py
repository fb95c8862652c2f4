"""The preset camera moves' maths without Blender (wonderland_blender.camera_moves imports numpy only, so these
also run under numpy 2 in tests/test_numpy2.py)."""
import math

import numpy as np
import pytest

from wonderland_blender.camera_moves import PRESET_IDS, preset_poses


def start_pose() -> np.ndarray:
    """A camera at (1, -5, 2) looking along +Y and level (Blender camera axes: looks down its -Z)."""
    pose = np.eye(4)
    pose[:3, :3] = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]   # rotation_euler (90°, 0, 0)
    pose[:3, 3] = [1.0, -5.0, 2.0]
    return pose


@pytest.mark.parametrize("preset", PRESET_IDS)
def test_every_move_starts_at_the_camera_and_stays_rigid(preset):
    poses = preset_poses(preset, start_pose(), 9)
    assert len(poses) == 9 and np.allclose(poses[0], start_pose())
    for pose in poses:
        R = pose[:3, :3]
        assert np.allclose(R.T @ R, np.eye(3), atol=1e-12) and math.isclose(np.linalg.det(R), 1.0)
        assert np.array_equal(pose[3], [0, 0, 0, 1])


@pytest.mark.parametrize("preset, end_position", [
    ("dolly_in", [1.0, -3.5, 2.0]), ("dolly_out", [1.0, -6.5, 2.0]), ("truck", [2.5, -5.0, 2.0]),
    ("crane", [1.0, -5.0, 3.5]),
])
def test_straight_moves_go_amount_along_their_axis_without_turning(preset, end_position):
    poses = preset_poses(preset, start_pose(), 5, amount=1.5)
    assert np.allclose(poses[-1][:3, 3], end_position) and np.allclose(poses[2][:3, 3], (poses[0][:3, 3] +
                                                                                          poses[-1][:3, 3]) / 2)
    assert all(np.allclose(p[:3, :3], start_pose()[:3, :3]) for p in poses)


def test_orbit_circles_the_point_ahead_and_keeps_looking_at_it():
    target = np.array([1.0, -1.0, 2.0])   # 4 ahead along +Y
    poses = preset_poses("orbit", start_pose(), 7, distance=4.0, angle=math.radians(60))
    for pose in poses:
        forward = -pose[:3, 2]
        to_target = target - pose[:3, 3]
        assert math.isclose(np.linalg.norm(to_target), 4.0) and np.allclose(forward, to_target / 4.0)
    turned = math.radians(60)   # +Y turned 60° about world Z
    assert np.allclose(-poses[-1][:3, 2], [-math.sin(turned), math.cos(turned), 0.0])


def test_pan_turns_in_place_about_world_z():
    poses = preset_poses("pan", start_pose(), 3, angle=math.radians(-40))
    assert all(np.allclose(p[:3, 3], [1.0, -5.0, 2.0]) for p in poses)
    forward = -poses[-1][:3, 2]
    assert math.isclose(forward[2], 0.0, abs_tol=1e-12)
    assert math.isclose(math.degrees(math.atan2(forward[1], forward[0])), 90.0 - 40.0)


def test_one_frame_and_bad_input():
    assert len(preset_poses("orbit", start_pose(), 1)) == 1
    with pytest.raises(ValueError, match="unknown preset 'zoom': pick one of orbit"):
        preset_poses("zoom", start_pose(), 3)
    with pytest.raises(ValueError, match="at least one frame, got 0"):
        preset_poses("pan", start_pose(), 0)
