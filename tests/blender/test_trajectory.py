"""Trajectory export checked against Blender's own projection (bpy_extras.object_utils.world_to_camera_view)."""
import json
import math

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from wonderland_blender.trajectory import TrajectoryError, camera_trajectory

TOLERANCE_PX = 0.01


def camera_space_points():
    """A few points in front of a Blender camera (camera axes: x right, y up, looking down -z)."""
    return [Vector(p) for p in ((0.0, 0.0, -5.0), (1.2, 0.7, -4.0), (-2.0, 1.5, -9.0), (0.4, -1.1, -2.5),
                                (-0.9, -0.6, -3.3))]


def project(K, c2w, world_point):
    """Pixel (u, v) of a world point through cameras.json's K and OpenCV c2w."""
    x = np.linalg.inv(np.array(c2w)) @ np.array([*world_point, 1.0])
    uvw = np.array(K) @ x[:3]
    return uvw[:2] / uvw[2]


def blender_pixels(scene, cam_obj, world_point, width, height):
    ndc = world_to_camera_view(scene, cam_obj, world_point)
    return np.array([ndc.x * width, (1.0 - ndc.y) * height])


def assert_matches_blender(scene, cam_obj, cameras, frame_index=0):
    frame = cameras["frames"][frame_index]
    W, H = cameras["width"], cameras["height"]
    worst = 0.0
    for p in camera_space_points():
        world = cam_obj.matrix_world.normalized() @ p
        ours = project(frame["K"], frame["c2w"], world)
        theirs = blender_pixels(scene, cam_obj, world, W, H)
        worst = max(worst, float(np.abs(ours - theirs).max()))
    assert worst < TOLERANCE_PX, f"off by {worst} px"


@pytest.mark.parametrize("pixel_aspect", [(1.0, 1.0), (2.0, 1.0), (1.0, 2.0)], ids=["1:1", "2:1", "1:2"])
@pytest.mark.parametrize("resolution", [(1280, 720), (720, 1280)], ids=["landscape", "portrait"])
@pytest.mark.parametrize("sensor_fit", ["AUTO", "HORIZONTAL", "VERTICAL"])
def test_intrinsics_match_blender_projection(scene, make_camera, sensor_fit, resolution, pixel_aspect):
    cam_obj = make_camera(location=(1.0, -4.0, 2.0), rotation=(math.radians(75), math.radians(8),
                                                                math.radians(20)))
    cam = cam_obj.data
    cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit = 35.0, 36.0, 20.0, sensor_fit
    cam.shift_x, cam.shift_y = 0.13, -0.07
    render = scene.render
    render.resolution_x, render.resolution_y = resolution
    render.resolution_percentage = 50
    render.pixel_aspect_x, render.pixel_aspect_y = pixel_aspect
    scene.frame_set(1)
    cameras = camera_trajectory(scene, cam_obj, 1, 1)
    assert (cameras["width"], cameras["height"]) == (resolution[0] // 2, resolution[1] // 2)
    assert_matches_blender(scene, cam_obj, cameras)


def test_export_operator_writes_cameras_json_with_animated_lens(scene, make_camera, tmp_path):
    cam_obj = make_camera(location=(0.0, -6.0, 1.5), rotation=(math.radians(90), 0.0, 0.0))
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 640, 480, 100
    scene.frame_start, scene.frame_end = 1, 5
    cam_obj.data.lens = 30.0
    cam_obj.data.keyframe_insert("lens", frame=1)
    cam_obj.data.lens = 70.0
    cam_obj.data.keyframe_insert("lens", frame=5)
    cam_obj.keyframe_insert("location", frame=1)
    cam_obj.location = (2.0, -3.0, 1.0)
    cam_obj.keyframe_insert("location", frame=5)
    scene.frame_set(3)
    out = tmp_path / "job" / "cameras.json"
    assert bpy.ops.wonderland.export_trajectory(filepath=str(out)) == {'FINISHED'}
    assert scene.frame_current == 3
    cameras = json.loads(out.read_text())
    assert [f["frame"] for f in cameras["frames"]] == [1, 2, 3, 4, 5]
    fx = [f["K"][0][0] for f in cameras["frames"]]
    assert fx[0] == pytest.approx(30 / 36 * 640) and fx[-1] == pytest.approx(70 / 36 * 640)
    assert all(a < b for a, b in zip(fx, fx[1:]))
    for i, frame in enumerate(range(1, 6)):
        scene.frame_set(frame)
        assert_matches_blender(scene, cam_obj, cameras, i)
    assert list(tmp_path.glob("job/.*")) == []  # no temp file left behind


def test_driven_shift_is_read_per_frame(scene, make_camera):
    cam_obj = make_camera(location=(0.0, -6.0, 1.5), rotation=(math.radians(90), 0.0, 0.0))
    driver = cam_obj.data.driver_add("shift_x").driver
    driver.type, driver.expression = 'SCRIPTED', "frame * 0.05"  # a simple expression: no Python needed
    cameras = camera_trajectory(scene, cam_obj, 1, 3)
    W = cameras["width"]
    cx = [f["K"][0][2] for f in cameras["frames"]]
    assert cx == pytest.approx([W / 2 - 0.05 * f * W for f in (1, 2, 3)])
    for i, frame in enumerate((1, 2, 3)):
        scene.frame_set(frame)
        assert_matches_blender(scene, cam_obj, cameras, i)


def test_parented_scaled_constrained_camera(scene, make_camera):
    parent = bpy.data.objects.new("Rig", None)
    scene.collection.objects.link(parent)
    parent.location, parent.rotation_euler, parent.scale = (3.0, 1.0, 0.5), (0.2, -0.3, 1.1), (2.0, 2.0, 2.0)
    parent.keyframe_insert("location", frame=1)
    parent.location = (5.0, 2.0, 1.0)
    parent.keyframe_insert("location", frame=3)
    cam_obj = make_camera(location=(0.5, -2.0, 0.3), rotation=(1.3, 0.1, 0.4))
    cam_obj.scale = (0.5, 1.5, 3.0)  # non-uniform on the camera itself: still a rigid pose after normalizing
    cam_obj.parent = parent
    target = bpy.data.objects.new("Target", None)
    scene.collection.objects.link(target)
    target.location = (0.0, 8.0, 0.0)
    track = cam_obj.constraints.new('DAMPED_TRACK')
    track.target, track.track_axis = target, 'TRACK_NEGATIVE_Z'
    cameras = camera_trajectory(scene, cam_obj, 1, 3)
    for i, frame in enumerate((1, 2, 3)):
        scene.frame_set(frame)
        c2w = np.array(cameras["frames"][i]["c2w"])
        np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-6)
        forward = c2w[:3, 2]  # OpenCV z: the view direction, which the constraint aims at the target
        to_target = np.array(target.location) - c2w[:3, 3]
        assert forward @ to_target / np.linalg.norm(to_target) == pytest.approx(1.0, abs=1e-6)
        assert_matches_blender(scene, cam_obj, cameras, i)
    assert cameras["frames"][0]["c2w"][0][3] != pytest.approx(cameras["frames"][2]["c2w"][0][3])


def test_current_frame_restored_after_an_error(scene, make_camera):
    cam_obj = make_camera()
    cam_obj.keyframe_insert("scale", frame=1)
    cam_obj.scale = (0.0, 1.0, 1.0)
    cam_obj.keyframe_insert("scale", frame=4)
    scene.frame_set(2)
    with pytest.raises(TrajectoryError, match=r"at frame 4: .*zero scale"):
        camera_trajectory(scene, cam_obj, 1, 5)
    assert scene.frame_current == 2


def test_orthographic_camera_refused_and_nothing_written(scene, make_camera, tmp_path):
    make_camera().data.type = 'ORTHO'
    out = tmp_path / "cameras.json"
    with pytest.raises(RuntimeError, match="only perspective cameras"):
        bpy.ops.wonderland.export_trajectory(filepath=str(out))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_non_camera_object_refused(scene, tmp_path):
    empty = bpy.data.objects.new("Empty", None)
    scene.collection.objects.link(empty)
    scene.camera = empty
    out = tmp_path / "cameras.json"
    with pytest.raises(RuntimeError, match="'Empty' is a empty object, not a camera"):
        bpy.ops.wonderland.export_trajectory(filepath=str(out))
    assert not out.exists()


def test_no_camera_and_empty_range_refused(scene, make_camera, tmp_path):
    with pytest.raises(RuntimeError, match="no camera"):
        bpy.ops.wonderland.export_trajectory(filepath=str(tmp_path / "a.json"))
    make_camera()
    scene.wonderland.frame_start, scene.wonderland.frame_end = 10, 4
    with pytest.raises(RuntimeError, match="end frame must not be before the start"):
        bpy.ops.wonderland.export_trajectory(filepath=str(tmp_path / "b.json"))
    assert list(tmp_path.iterdir()) == []


def test_effective_frame_range_picks_scene_range_unless_set(scene, make_camera, tmp_path):
    make_camera()
    scene.frame_start, scene.frame_end = 3, 6
    cameras = camera_trajectory(scene, scene.camera, *_effective(scene))
    assert [f["frame"] for f in cameras["frames"]] == [3, 4, 5, 6]
    scene.wonderland.frame_end = 4
    assert _effective(scene) == (3, 4)


def _effective(scene):
    from wonderland_blender.properties import effective_frame_range
    return effective_frame_range(bpy.context)
