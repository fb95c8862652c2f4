"""The add-on's camera maths without Blender (wonderland_blender.intrinsics imports numpy only)."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

# Load the module file directly: importing the package would import bpy (its __init__ does not, but its
# siblings do), and this module must stay usable without Blender.
_PATH = Path(__file__).resolve().parents[1] / "wonderland_blender" / "intrinsics.py"
_spec = importlib.util.spec_from_file_location("wonderland_intrinsics_under_test", _PATH)
intr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(intr)


def test_module_imports_numpy_only():
    imports = [line.split()[1] for line in _PATH.read_text().splitlines()
               if line.startswith(("import ", "from "))]
    assert set(imports) <= {"__future__", "numpy"}, imports


def test_render_size_truncates_like_blender():
    assert intr.render_size(1920, 1080, 100) == (1920, 1080)
    assert intr.render_size(1920, 1080, 50) == (960, 540)
    assert intr.render_size(1001, 333, 33) == (330, 109)  # 330.33, 109.89 truncated


@pytest.mark.parametrize("fit, w, h, ax, ay, expected", [
    ("AUTO", 1920, 1080, 1, 1, "HORIZONTAL"),
    ("AUTO", 1080, 1920, 1, 1, "VERTICAL"),
    ("AUTO", 1000, 1000, 1, 1, "HORIZONTAL"),  # ties go horizontal
    ("AUTO", 600, 1000, 2, 1, "HORIZONTAL"),   # 1200 aspect-corrected pixels wide vs 1000 high
    ("AUTO", 1000, 600, 1, 2, "VERTICAL"),
    ("VERTICAL", 1920, 1080, 1, 1, "VERTICAL"),
    ("HORIZONTAL", 1080, 1920, 1, 1, "HORIZONTAL"),
])
def test_resolve_sensor_fit(fit, w, h, ax, ay, expected):
    assert intr.resolve_sensor_fit(fit, w, h, ax, ay) == expected


def test_resolve_sensor_fit_rejects_unknown():
    with pytest.raises(ValueError, match="sensor_fit must be one of"):
        intr.resolve_sensor_fit("DIAGONAL", 10, 10)


def K(**kw):
    base = dict(lens=50.0, sensor_width=36.0, sensor_height=24.0, sensor_fit="AUTO", width=1920, height=1080)
    base.update(kw)
    return intr.intrinsics_matrix(**base)


def test_landscape_auto():
    np.testing.assert_allclose(K(), [[50 / 36 * 1920, 0, 960], [0, 50 / 36 * 1920, 540], [0, 0, 1]])


def test_portrait_auto_measures_the_long_side_with_sensor_width():
    k = K(width=1080, height=1920)
    assert k[0, 0] == pytest.approx(50 / 36 * 1920)
    assert k[1, 1] == pytest.approx(50 / 36 * 1920)


def test_explicit_vertical_uses_sensor_height_on_the_height():
    k = K(sensor_fit="VERTICAL")
    assert k[0, 0] == pytest.approx(50 / 24 * 1080)


def test_explicit_horizontal_in_portrait_uses_the_width():
    k = K(sensor_fit="HORIZONTAL", width=1080, height=1920)
    assert k[0, 0] == pytest.approx(50 / 36 * 1080)


def test_pixel_aspect_stretches_fy():
    k = K(pixel_aspect_x=2.0, pixel_aspect_y=1.0)  # 2×1920 wide vs 1080 high: horizontal fit
    assert k[0, 0] == pytest.approx(50 / 36 * 1920)
    assert k[1, 1] == pytest.approx(2 * 50 / 36 * 1920)
    k = K(sensor_fit="VERTICAL", pixel_aspect_x=1.0, pixel_aspect_y=2.0)
    vf = 1080 * 2.0
    assert k[0, 0] == pytest.approx(50 / 24 * vf)
    assert k[1, 1] == pytest.approx(50 / 24 * vf / 2)


def test_shift_moves_the_principal_point_in_units_of_the_fitted_side():
    k = K(shift_x=0.1, shift_y=-0.2)
    assert k[0, 2] == pytest.approx(960 - 0.1 * 1920)
    assert k[1, 2] == pytest.approx(540 - 0.2 * 1920)  # shift up moves the centre up (smaller v)
    k = K(width=1080, height=1920, shift_x=0.1, shift_y=0.1, pixel_aspect_x=1.0, pixel_aspect_y=2.0)
    vf = 1920 * 2.0  # AUTO resolves vertical: 1080 < 2·1920
    assert k[0, 2] == pytest.approx(540 - 0.1 * vf)
    assert k[1, 2] == pytest.approx(960 + 0.1 * vf / 2)


@pytest.mark.parametrize("bad, match", [
    (dict(lens=0.0), "lens must be > 0"),
    (dict(width=0), "render size must be positive"),
    (dict(pixel_aspect_x=0.0), "pixel aspect must be positive"),
    (dict(sensor_fit="VERTICAL", sensor_height=0.0), "sensor size must be > 0"),
])
def test_bad_camera_values_say_what_is_wrong(bad, match):
    with pytest.raises(ValueError, match=match):
        K(**bad)


def axis_rotation(axis: int, deg: float) -> np.ndarray:
    """The 3×3 rotation by `deg` degrees about axis 0, 1 or 2 (x, y, z)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def test_opencv_c2w_flips_y_and_z_and_removes_scale():
    M = np.eye(4)
    R = axis_rotation(0, 90) @ axis_rotation(2, 30)
    M[:3, :3] = R @ np.diag([2.0, 3.0, 0.5])
    M[:3, 3] = (1, 2, 3)
    c2w = intr.opencv_c2w(M)
    np.testing.assert_allclose(c2w[:3, :3], R @ np.diag([1, -1, -1]), atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 3], (1, 2, 3))
    np.testing.assert_allclose(c2w[3], (0, 0, 0, 1))
    assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0)


def test_opencv_c2w_refuses_mirrored_sheared_and_flat_cameras():
    mirrored = np.diag([-1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="mirrored"):
        intr.opencv_c2w(mirrored)
    sheared = np.eye(4)
    sheared[:3, :3] = np.diag([1.0, 3.0, 1.0]) @ axis_rotation(2, 40)  # non-uniform parent scale after a rotation
    with pytest.raises(ValueError, match="sheared"):
        intr.opencv_c2w(sheared)
    with pytest.raises(ValueError, match="zero scale"):
        intr.opencv_c2w(np.diag([1.0, 0.0, 1.0, 1.0]))


def test_center_crop_size():
    assert intr.center_crop_size(1024, 1024, 720, 480) == pytest.approx((1024, 1024 * 480 / 720))
    assert intr.center_crop_size(2000, 1000, 720, 480) == pytest.approx((1500, 1000))
    assert intr.center_crop_size(1440, 960, 720, 480) == pytest.approx((1440, 960))
    with pytest.raises(ValueError, match="sizes must be positive"):
        intr.center_crop_size(0, 10, 720, 480)


def test_relative_motion():
    poses = np.repeat(np.eye(4)[None], 3, axis=0)
    poses[0, :3, 3] = (1, 1, 1)
    poses[1, :3, 3] = (1, 4, 5)          # 5 away from the first camera
    poses[2, :3, :3] = axis_rotation(2, 75)  # turned 75° (and 1.73 away)
    distance, rotation = intr.relative_motion(poses)
    assert distance == pytest.approx(5.0)
    assert rotation == pytest.approx(75.0)


@pytest.mark.parametrize("euler_deg, expected", [((90, 0, 0), 0.0), ((90, 0, 137), 0.0), ((60, 0, 20), -30.0),
                                                 ((110, 0, -45), 20.0), ((63.6, 0, 46.7), -26.4),
                                                 ((90, 15, 0), 0.0)])
def test_pitch_of_a_blender_camera(euler_deg, expected):
    """Blender's XYZ Euler camera: X = 90° looks level, less looks down; Z turns it, a level roll leaves it."""
    rx, ry, rz = euler_deg
    world = np.eye(4)
    world[:3, :3] = axis_rotation(2, rz) @ axis_rotation(1, ry) @ axis_rotation(0, rx)
    assert intr.pitch_deg(intr.opencv_c2w(world)) == pytest.approx(expected, abs=1e-9)
