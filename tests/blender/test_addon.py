"""The add-on inside real bpy: registration, preferences, scene settings, panel helpers, preset moves."""
import importlib
import math
import os
import re
import tempfile
from pathlib import Path

import addon_utils
import bpy
import numpy as np
import pytest

import wonderland_blender
from wonderland_blender import migrate, panel, preferences, presets, previews, properties, render_engine
from wonderland_blender.model_info import ModelSpec
from wonderland_blender.trajectory import MAX_ROTATION_DEG, camera_trajectory

OUR_TYPES = (("PropertyGroup", "WonderlandSceneSettings"), ("AddonPreferences", "WonderlandPreferences"),
             ("Operator", "WONDERLAND_OT_import_gaussians"), ("Operator", "WONDERLAND_OT_export_gaussians"),
             ("Operator", "WONDERLAND_OT_export_spz"), ("Operator", "WONDERLAND_OT_edit_add"),
             ("Operator", "WONDERLAND_OT_edit_remove"), ("Operator", "WONDERLAND_OT_edit_apply"),
             ("Panel", "WONDERLAND_PT_edit"), ("RenderEngine", render_engine.ENGINE_ID),
             ("Panel", "WONDERLAND_PT_passes"), ("Operator", "WONDERLAND_OT_setup_mesh_mixing"),
             ("Operator", "WONDERLAND_OT_export_trajectory"), ("Operator", "WONDERLAND_OT_check_trajectory"),
             ("Operator", "WONDERLAND_OT_add_trajectory"), ("Operator", "WONDERLAND_OT_open_preview"),
             ("Operator", "WONDERLAND_OT_generate"), ("Operator", "WONDERLAND_OT_cancel"),
             ("Operator", "WONDERLAND_OT_install_backend"), ("Operator", "WONDERLAND_OT_input_view_mesh"),
             ("Panel", "WONDERLAND_PT_main"))


def registered_types():
    """Our classes that Blender holds as registered (by base type and name)."""
    return [(base, name) for base, name in OUR_TYPES
            if getattr(bpy.types, base).bl_rna_get_subclass_py(name) is not None]


ALL_CALLBACKS = ["migrate._on_load", "previews._on_save_pre", "render_engine._idle_timer"]


def registered_callbacks() -> list[str]:
    """Our handlers and timers that Blender holds, by name."""
    held = {"migrate._on_load": migrate._on_load in bpy.app.handlers.load_post,
            "previews._on_save_pre": previews._on_save_pre in bpy.app.handlers.save_pre,
            "render_engine._idle_timer": bpy.app.timers.is_registered(render_engine._idle_timer)}
    return [name for name, is_held in held.items() if is_held]


def test_register_unregister_twice_leaves_nothing_behind():
    for _ in range(2):
        addon_utils.enable("wonderland_blender", default_set=True, handle_error=None)
        assert registered_types() == list(OUR_TYPES)
        assert registered_callbacks() == ALL_CALLBACKS
        assert bpy.context.scene.wonderland.progress == 0.0
        assert preferences.get_preferences() is not None
        addon_utils.disable("wonderland_blender", default_set=True)
        assert registered_types() == []
        assert registered_callbacks() == []
        assert not hasattr(bpy.types.Scene, "wonderland")
    for _ in range(2):  # the plain module functions, as a script would call them
        wonderland_blender.register()
        assert registered_types() == list(OUR_TYPES)
        assert registered_callbacks() == ALL_CALLBACKS
        wonderland_blender.unregister()
        assert registered_types() == []
        assert registered_callbacks() == []


def test_register_order_is_an_explicit_list_of_modules():
    assert wonderland_blender.MODULE_NAMES[0] == "properties"  # others read scene.wonderland
    for name in wonderland_blender.MODULE_NAMES:
        module = importlib.import_module(f"wonderland_blender.{name}")
        assert callable(module.register) and callable(module.unregister)


def test_addon_never_imports_torch_or_the_backend():
    """architecture.md: the add-on talks to the backend through files and a child process only."""
    folder = Path(wonderland_blender.__file__).parent
    forbidden = re.compile(r"^\s*(import|from)\s+(torch|backend|diffusers|gsplat)\b", re.MULTILINE)
    files = sorted(folder.rglob("*.py"))
    assert folder / "formats" / "__init__.py" in files  # subpackages are checked too
    for path in files:
        assert not forbidden.search(path.read_text(encoding="utf-8")), f"{path} imports the backend's packages"


def test_backend_python_resolution_order(addon, monkeypatch, tmp_path):
    prefs = preferences.get_preferences()
    monkeypatch.delenv(preferences.ENV_BACKEND_PYTHON, raising=False)
    path, where = preferences.resolve_backend_python(prefs)
    # Running from the source checkout: its .venv is found.
    assert path == str(preferences.venv_python(preferences.SOURCE_ROOT / ".venv")) and "checkout" in where

    chosen = tmp_path / "python-pref"
    chosen.write_text("")
    prefs.backend_python = str(chosen)
    assert preferences.resolve_backend_python(prefs) == (str(chosen), "the add-on preference Backend Python")

    from_env = tmp_path / "python-env"
    from_env.write_text("")
    monkeypatch.setenv(preferences.ENV_BACKEND_PYTHON, str(from_env))
    path, where = preferences.resolve_backend_python(prefs)
    assert path == str(from_env) and preferences.ENV_BACKEND_PYTHON in where

    monkeypatch.setenv(preferences.ENV_BACKEND_PYTHON, str(tmp_path / "missing"))
    path, where = preferences.resolve_backend_python(prefs)
    assert path is None and "not a file" in where and "missing" in where


def test_preference_defaults_and_output_root(addon):
    prefs = preferences.get_preferences()
    assert (prefs.default_model, prefs.device, prefs.precision) == ("default", "auto", "auto")
    assert prefs.default_steps == 0   # the model's own step count
    assert preferences.is_extension() is False
    assert preferences.output_root(prefs) == os.path.join(tempfile.gettempdir(), "wonderland", "jobs")
    prefs.output_dir = "/somewhere/jobs"
    assert preferences.output_root(prefs) == "/somewhere/jobs"


def test_effective_camera_prefers_the_picked_one(scene, make_camera):
    assert properties.effective_camera(bpy.context) is None
    first = make_camera("First")
    second = make_camera("Second")
    scene.camera = first
    assert properties.effective_camera(bpy.context) == first
    scene.wonderland.camera = second
    assert properties.effective_camera(bpy.context) == second


def test_framing_follows_the_camera_and_the_chosen_model(scene):
    spec, unknown = panel.chosen_model(bpy.context)
    assert spec == ModelSpec("default", 96, 64, 9) and not unknown  # the shipped default, from its wonderland.json
    assert panel.framing_lines(720, 477, 1920, 1080, spec) == [
        "Image 720×477 → crop 607×405 → model 96×64",
        "The image (1.51:1) is cropped to the camera's 1.78:1 (Output Properties ▸ Resolution)"]
    assert panel.framing_lines(1440, 960, 1080, 720, spec) == ["Image 1440×960 → model 96×64"]
    scene.wonderland.model = "tiny"  # a named config without a folder: said, not guessed
    spec, unknown = panel.chosen_model(bpy.context)
    assert spec is None and "no wonderland.json" in unknown


def test_frames_and_progress_text(scene):
    assert panel.frames_text(1, 9, 9) == "Frames 1–9 (9)"
    assert panel.frames_text(1, 100, 9) == "Frames 1–100 (100, resampled to the model's 9)"
    assert panel.frames_text(1, 100, None) == "Frames 1–100 (100)"
    assert "empty" in panel.frames_text(5, 4, 9)
    s = scene.wonderland
    s.stage, s.step, s.total = "denoise", 12, 50
    assert panel.progress_text(s) == "denoise 12/50"


@pytest.mark.parametrize("file_format, ext", [("PNG", "png"), ("JPEG", "jpg")])
def test_input_image_size_reads_file_headers(scene, tmp_path, file_format, ext):
    image = bpy.data.images.new("in", 37, 21)
    path = str(tmp_path / f"in.{ext}")
    image.filepath_raw, image.file_format = path, file_format
    image.save()
    bpy.data.images.remove(image)
    scene.wonderland.image_path = path
    assert panel.input_image_size(scene.wonderland) == (37, 21)
    scene.wonderland.image = bpy.data.images.new("datablock", 64, 48)
    assert panel.input_image_size(scene.wonderland) == (64, 48)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert panel.image_file_size(str(tmp_path / "junk.png")) is None
    assert panel.image_file_size(str(tmp_path / "missing.png")) is None


def test_camera_problem_names_the_fix(scene, make_camera):
    assert "no camera" in panel.camera_problem(bpy.context)
    cam = make_camera()
    assert panel.camera_problem(bpy.context) is None
    cam.data.type = 'PANO'
    assert "set its Type to Perspective" in panel.camera_problem(bpy.context)


def test_generate_button_only_when_its_operator_exists(addon):
    assert panel.operator_available("WONDERLAND_OT_export_trajectory")
    assert panel.operator_available("WONDERLAND_OT_generate") == hasattr(bpy.types, "WONDERLAND_OT_generate")
    assert not panel.operator_available("WONDERLAND_OT_no_such_thing")


# ------------------------------------------------------------------------------------------------
# Preset moves
# ------------------------------------------------------------------------------------------------

def level_camera(scene, make_camera):
    scene.frame_start, scene.frame_end = 1, 9
    return make_camera(location=(0.0, -6.0, 1.5), rotation=(math.radians(90), 0.0, 0.0))  # looks along +Y


def poses_over_range(scene, cam_obj):
    out = []
    for frame in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(frame)
        out.append(np.array(cam_obj.matrix_world))
    return out


def keyed_frames(cam_obj):
    curve = next(fc for fc in presets.channelbag(cam_obj).fcurves if fc.data_path == "location")
    return [int(k.co.x) for k in curve.keyframe_points]


def test_dolly_in_moves_along_the_view_axis(scene, make_camera):
    cam = level_camera(scene, make_camera)
    scene.frame_set(4)
    assert bpy.ops.wonderland.add_trajectory(preset='dolly_in', amount=2.0) == {'FINISHED'}
    assert scene.frame_current == 4
    assert scene.wonderland.camera == cam
    poses = poses_over_range(scene, cam)
    start = poses[0]
    for i, pose in enumerate(poses):
        np.testing.assert_allclose(pose[:3, :3], start[:3, :3], atol=1e-6)  # no turning
        np.testing.assert_allclose(pose[:3, 3], start[:3, 3] + (0.0, 2.0 * i / 8, 0.0), atol=1e-5)
    assert keyed_frames(cam) == [1, 9]


@pytest.mark.parametrize("preset, direction", [("dolly_out", (0, -1, 0)), ("truck", (1, 0, 0)),
                                               ("crane", (0, 0, 1))])
def test_straight_moves(scene, make_camera, preset, direction):
    cam = level_camera(scene, make_camera)
    bpy.ops.wonderland.add_trajectory(preset=preset, amount=1.5)
    poses = poses_over_range(scene, cam)
    np.testing.assert_allclose(poses[-1][:3, 3] - poses[0][:3, 3], 1.5 * np.array(direction), atol=1e-5)
    np.testing.assert_allclose(poses[-1][:3, :3], poses[0][:3, :3], atol=1e-6)


def test_orbit_keeps_its_distance_and_looks_at_the_target(scene, make_camera):
    cam = level_camera(scene, make_camera)
    bpy.ops.wonderland.add_trajectory(preset='orbit', distance=4.0, angle=math.radians(40))
    target = np.array((0.0, -2.0, 1.5))
    poses = poses_over_range(scene, cam)
    for pose in poses:
        offset = target - pose[:3, 3]
        assert np.linalg.norm(offset) == pytest.approx(4.0, abs=1e-5)
        forward = -pose[:3, 2]
        assert forward @ offset / 4.0 == pytest.approx(1.0, abs=1e-6)
    yaw = math.degrees(math.atan2(poses[-1][1, 2], poses[-1][0, 2]) - math.atan2(poses[0][1, 2], poses[0][0, 2]))
    assert yaw == pytest.approx(40.0, abs=1e-4)
    assert keyed_frames(cam) == list(range(1, 10))
    assert scene.wonderland.checked_rotation_deg == pytest.approx(40.0, abs=1e-3)


def test_pan_turns_in_place(scene, make_camera):
    cam = level_camera(scene, make_camera)
    bpy.ops.wonderland.add_trajectory(preset='pan', angle=math.radians(-25))
    poses = poses_over_range(scene, cam)
    np.testing.assert_allclose(poses[-1][:3, 3], poses[0][:3, 3], atol=1e-6)
    cameras = camera_trajectory(scene, cam, 1, 9)
    from wonderland_blender.intrinsics import relative_motion
    assert relative_motion([f["c2w"] for f in cameras["frames"]])[1] == pytest.approx(25.0, abs=1e-4)


def test_preset_creates_a_camera_when_there_is_none(scene):
    scene.frame_start, scene.frame_end = 1, 3
    assert bpy.ops.wonderland.add_trajectory(preset='truck') == {'FINISHED'}
    cam = scene.wonderland.camera
    assert cam is not None and cam.type == 'CAMERA' and scene.camera == cam


def test_preset_replaces_existing_motion_and_keeps_scale(scene, make_camera):
    cam = level_camera(scene, make_camera)
    cam.scale = (2.0, 2.0, 2.0)
    cam.keyframe_insert("location", frame=5)
    cam.rotation_mode = 'QUATERNION'
    cam.keyframe_insert("rotation_quaternion", frame=5)
    bpy.ops.wonderland.add_trajectory(preset='crane', amount=1.0)
    assert {fc.data_path for fc in presets.channelbag(cam).fcurves} == {"location", "rotation_euler"}
    assert tuple(cam.scale) == pytest.approx((2.0, 2.0, 2.0))


def test_wide_orbit_is_flagged_out_of_range(scene, make_camera):
    level_camera(scene, make_camera)
    bpy.ops.wonderland.add_trajectory(preset='orbit', angle=math.radians(MAX_ROTATION_DEG + 30))
    from wonderland_blender.trajectory import recorded_range
    start, end = properties.effective_frame_range(bpy.context)
    checked = recorded_range(scene.wonderland, scene.wonderland.camera, start, end)
    assert checked is not None and len(checked.warnings()) >= 1
    assert "turns 120°" in checked.warnings()[0]
    scene.wonderland.frame_end = 5  # another range: the recorded check no longer applies
    assert recorded_range(scene.wonderland, scene.wonderland.camera, 1, 5) is None


def test_small_move_is_in_range(scene, make_camera):
    cam = level_camera(scene, make_camera)
    cam.data.dof.focus_distance = 5.0
    bpy.ops.wonderland.add_trajectory(preset='dolly_in', amount=2.0)
    assert scene.wonderland.checked_travel == pytest.approx(0.4)
    from wonderland_blender.trajectory import recorded_range
    assert recorded_range(scene.wonderland, cam, 1, 9).warnings() == []


def test_preset_on_orthographic_camera_refused(scene, make_camera):
    level_camera(scene, make_camera).data.type = 'ORTHO'
    with pytest.raises(RuntimeError, match="only perspective cameras"):
        bpy.ops.wonderland.add_trajectory(preset='orbit')
