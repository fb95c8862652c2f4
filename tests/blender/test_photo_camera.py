"""Match Camera to Photo: the camera the backend is sent sees the photo's aspect and, from its EXIF, its angle of view."""
import math

import bpy
import pytest

from tests.test_photo_lens import diagonal_view, equivalent_view, photo_bytes
from wonderland_blender.photo_lens import FILM_DIAGONAL_MM
from wonderland_blender.trajectory import camera_trajectory


def write_photo(path, size, focal_35mm=None):
    path.write_bytes(photo_bytes("PNG" if path.suffix == ".png" else "JPEG", size, focal_35mm))
    return path


def sent_camera(scene, cam_obj):
    """(width, height, K) of the first camera as the add-on exports it for the backend."""
    cameras = camera_trajectory(scene, cam_obj, scene.frame_start, scene.frame_start)
    return cameras["width"], cameras["height"], cameras["frames"][0]["K"]


@pytest.fixture
def camera_50mm(scene, make_camera):
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    scene.render.pixel_aspect_x = 2.0
    cam = make_camera(rotation=(math.radians(63.6), 0.0, math.radians(46.7)))   # the startup camera: 26° down
    cam.data.sensor_fit, cam.data.sensor_width = 'VERTICAL', 24.0
    return cam


def test_a_phone_photo_s_exif_sets_the_view_the_backend_gets(scene, camera_50mm, tmp_path, capsys):
    """A 4:3 phone photo taken at 26 mm (35 mm terms): the camera sent to the backend, a 16:9 one with a 50 mm lens
    on a vertical-fit sensor and non-square pixels before, gets its 4:3 frame and its diagonal angle of view."""
    scene.wonderland.image_path = str(write_photo(tmp_path / "phone.jpg", (4032, 3024), focal_35mm=26))
    assert bpy.ops.wonderland.match_photo_camera() == {'FINISHED'}
    width, height, K = sent_camera(scene, camera_50mm)
    assert (width, height) == (1920, 1440)
    assert math.degrees(diagonal_view(K, width, height)) == pytest.approx(
        math.degrees(equivalent_view(26)), abs=1e-4)  # Blender keeps the lens in float32
    assert camera_50mm.data.lens == pytest.approx(26 * 36 * 5 / (4 * FILM_DIAGONAL_MM), rel=1e-6)
    said = capsys.readouterr().out
    assert "Info: resolution 1920×1440 (the photo's 4032×3024); lens 27.0 mm" in said
    assert "the camera looks 26° down here: give it the photo's tilt" in said   # the pitch is the artist's


def test_a_packed_portrait_datablock_is_read_too(scene, camera_50mm, tmp_path):
    image = bpy.data.images.load(str(write_photo(tmp_path / "portrait.jpg", (1500, 2250), focal_35mm=35)))
    image.pack()
    (tmp_path / "portrait.jpg").unlink()                # only the packed bytes are left
    scene.wonderland.image = image
    assert bpy.ops.wonderland.match_photo_camera() == {'FINISHED'}
    width, height, K = sent_camera(scene, camera_50mm)
    assert (width, height) == (1280, 1920)              # the long side kept, on the photo's axis
    assert camera_50mm.data.lens == pytest.approx(35.0)  # a 2:3 frame is the 35 mm film's own
    assert math.degrees(diagonal_view(K, width, height)) == pytest.approx(
        math.degrees(equivalent_view(35)), abs=1e-4)  # Blender keeps the lens in float32


def test_without_exif_only_the_aspect_changes_and_it_says_so(scene, camera_50mm, tmp_path, capsys):
    camera_50mm.rotation_euler = (math.radians(90.0), 0.0, 0.3)                 # level
    scene.wonderland.image_path = str(write_photo(tmp_path / "scan.png", (1000, 1000)))
    assert bpy.ops.wonderland.match_photo_camera() == {'FINISHED'}
    assert (scene.render.resolution_x, scene.render.resolution_y) == (1920, 1920)
    assert (camera_50mm.data.lens, camera_50mm.data.sensor_fit) == (50.0, 'VERTICAL')
    assert tuple(camera_50mm.rotation_euler) == pytest.approx((math.radians(90.0), 0.0, 0.3))
    said = capsys.readouterr().out
    assert "gives no 35 mm-equivalent focal length, so the lens stays 50.0 mm" in said
    assert "the camera is level: tilt it as the photo was taken" in said


def test_a_keyed_lens_is_left_to_its_keys(scene, camera_50mm, tmp_path, capsys):
    camera_50mm.data.keyframe_insert("lens", frame=1)
    scene.wonderland.image_path = str(write_photo(tmp_path / "phone.jpg", (3000, 2000), focal_35mm=24))
    assert bpy.ops.wonderland.match_photo_camera() == {'FINISHED'}
    assert camera_50mm.data.lens == 50.0
    assert "the lens is keyed, so its keys decide: key it at 24.0 mm" in capsys.readouterr().out


def test_missing_image_camera_or_file_is_refused_and_nothing_changes(scene, make_camera, tmp_path):
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    with pytest.raises(RuntimeError, match="no perspective camera"):
        bpy.ops.wonderland.match_photo_camera()
    cam = make_camera()
    with pytest.raises(RuntimeError, match="no image: pick"):
        bpy.ops.wonderland.match_photo_camera()
    scene.wonderland.image_path = str(tmp_path / "gone.jpg")
    with pytest.raises(RuntimeError, match="the image's size is unknown"):
        bpy.ops.wonderland.match_photo_camera()
    assert (scene.render.resolution_x, scene.render.resolution_y, cam.data.lens) == (1920, 1080, 50.0)
