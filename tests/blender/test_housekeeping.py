"""Re-generating, previews beside the .blend, the job folder policy, and the panel's truth about a job,
in the real bpy with the real backend (`--model tiny`)."""
from __future__ import annotations

import json
from pathlib import Path

import bpy
import numpy as np
import pytest
from test_generate import FAST_PREVIEWS, generate_ops, job_scene  # noqa: F401 - fixtures

from wonderland_blender import housekeeping, previews
from wonderland_blender.housekeeping import RESULT_KEY, clean_job_folders, job_folders, used_paths
from wonderland_blender.ops_generate import new_job_folder


def write_pngs(folder, count: int) -> list:
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        image = bpy.data.images.new(f"p{i}", 4, 4)
        image.pixels.foreach_set(np.full(64, (i + 1) / count, np.float32))
        image.filepath_raw, image.file_format = str(folder / f"{i:04d}.png"), 'PNG'
        image.save()
        bpy.data.images.remove(image)
        paths.append(folder / f"{i:04d}.png")
    return paths


def test_regenerating_hides_the_previous_result_and_shows_backend_warnings(job_scene, tmp_path):
    scene = job_scene
    assert bpy.ops.wonderland.generate(extra_args=FAST_PREVIEWS) == {'FINISHED'}
    first = next(o for o in scene.objects if RESULT_KEY in o)
    assert scene.wonderland.last_warnings.startswith("--model tiny has no trained weights")  # stderr's warning
    assert "aspect" not in scene.wonderland.last_warnings  # picture and camera are both 64×48
    assert scene.wonderland.last_move_length == pytest.approx(0.3, abs=1e-5)  # the camera's x went 0 → 0.3
    assert scene.wonderland.last_scene_scale == "path"   # meta.json's: the tiny model sizes by the move
    scene.render.resolution_x = 96  # a 2:1 camera for a 4:3 picture: the backend crops and says so
    assert bpy.ops.wonderland.generate(extra_args=FAST_PREVIEWS) == {'FINISHED'}
    second = next(o for o in scene.objects if RESULT_KEY in o and o != first)
    assert first.name in bpy.data.objects  # kept, never deleted
    assert first.hide_render and first.hide_get() and not second.hide_render and not second.hide_get()
    assert "centre-cropped to the cameras' aspect" in scene.wonderland.last_warnings
    assert len(job_folders(tmp_path / "jobs")) == 2  # both used by the .blend


def test_previews_already_beside_the_blend_stay_where_they_are(generate_ops, tmp_path):
    image = previews.load_previews(write_pngs(tmp_path / "shot" / "preview", 2), "Wonderland Preview")
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot" / "shot.blend"))
    assert Path(bpy.path.abspath(image.filepath)) == tmp_path / "shot" / "preview" / "0000.png"
    assert not (tmp_path / "shot" / "shot_wonderland").exists()


def test_previews_are_kept_beside_the_saved_blend(generate_ops, tmp_path):
    job = tmp_path / "jobs" / "20260101-120000"
    image = previews.load_previews(write_pngs(job / "preview", 3), "Wonderland Preview")
    blend = tmp_path / "shot" / "shot.blend"
    blend.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    assert image.filepath == "//shot_wonderland/Wonderland_Preview/0000.png"
    assert sorted(p.name for p in (blend.parent / "shot_wonderland" / "Wonderland_Preview").iterdir()) == \
        ["0000.png", "0001.png", "0002.png"]
    assert previews.find_preview(job) == image  # still found by its job
    for path in (job / "preview").iterdir():  # the job folder may go now
        path.unlink()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    reopened = bpy.data.images["Wonderland Preview"]
    reopened.reload()
    assert tuple(reopened.size) == (4, 4) and reopened.has_data


def test_previews_follow_a_save_as_into_another_folder(generate_ops, tmp_path):
    job = tmp_path / "jobs" / "20260101-120000"
    image = previews.load_previews(write_pngs(job / "preview", 2), "Wonderland Preview")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "a" / "x.blend"))
    blend = tmp_path / "b" / "y.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))  # rebases relative paths from a/ to b/
    first = Path(bpy.path.abspath(image.filepath)).resolve()
    assert first.is_file(), f"the preview points at a missing file: {first}"
    assert first.parent.parent == (tmp_path / "b" / "y_wonderland").resolve()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    reopened = bpy.data.images["Wonderland Preview"]
    reopened.reload()
    assert tuple(reopened.size) == (4, 4) and reopened.has_data


def test_job_folders_beyond_the_newest_go_if_made_in_this_session_and_unused(generate_ops, tmp_path):
    root = tmp_path / "jobs"
    names = [f"20260101-1200{i:02d}" for i in range(14)] + ["20260101-120013-2", "notes", "20250101-000000"]
    for name in names:
        (root / name).mkdir(parents=True)
        if name != "20250101-000000":  # not a job: no cameras.json
            (root / name / "cameras.json").write_text(json.dumps({}))
        if name != "20260101-120005":  # made by an earlier session: another saved .blend may need it
            housekeeping.note_job_folder(root / name)
    used_obj = bpy.data.objects.new("Old result", None)
    used_obj[RESULT_KEY] = str(root / "20260101-120001")
    previews.load_previews(write_pngs(root / "20260101-120002" / "preview", 1), "Old preview")
    removed = clean_job_folders(root, used_paths(), keep=housekeeping.KEEP_JOBS)
    assert sorted(p.name for p in removed) == ["20260101-120000", "20260101-120003", "20260101-120004"]
    kept = sorted(p.name for p in root.iterdir())
    assert "20260101-120013-2" in kept and "notes" in kept and "20250101-000000" in kept
    assert "20260101-120001" in kept and "20260101-120002" in kept  # used by the .blend
    assert "20260101-120005" in kept  # not made in this session


def test_a_new_job_folder_is_noted_as_made_in_this_session(generate_ops, tmp_path):
    root = tmp_path / "jobs"
    old = root / "20200101-000000"
    old.mkdir(parents=True)
    (old / "cameras.json").write_text(json.dumps({}))
    new = new_job_folder(root)
    (new / "cameras.json").write_text(json.dumps({}))
    assert clean_job_folders(root, [], keep=0) == [new]
    assert old.is_dir()




def test_a_metric_models_result_says_its_scale_is_metres(job_scene, tmp_path):
    """The panel's scale line follows the job's meta.json: a model folder of scene_scale "metric" (the tiny
    model's weights, written as a folder) gives "metric", and its line speaks of metres, not the move."""
    import dataclasses

    from backend.models.model_dir import write_model
    from backend.pipelines.wonderland import load_pipeline
    from wonderland_blender.model_info import scale_text

    tiny = load_pipeline("tiny")
    folder = tmp_path / "metric-model"
    write_model(folder, dataclasses.replace(tiny.config, scene_scale="metric"), tiny.vae, tiny.transformer,
                tiny.scheduler, tiny.lalrm)
    job_scene.wonderland.model = str(folder)
    assert bpy.ops.wonderland.generate(extra_args=FAST_PREVIEWS) == {'FINISHED'}
    settings = job_scene.wonderland
    assert settings.last_scene_scale == "metric"
    assert scale_text(settings.last_move_length, settings.last_scene_scale).startswith("Scale: metres")


def test_subject_distance_reaches_the_backend_and_the_scale_line(job_scene):
    """The panel's Subject Distance goes to the job as --subject-distance; the result's meta.json and the scale
    line say the scene was sized to it (the geometry itself: tests/test_subject_distance.py)."""
    from wonderland_blender.model_info import scale_text

    settings = job_scene.wonderland
    settings.subject_distance = 4.5
    assert bpy.ops.wonderland.generate(extra_args=FAST_PREVIEWS) == {'FINISHED'}
    folder = Path(next(o for o in job_scene.objects if RESULT_KEY in o)[RESULT_KEY])
    assert json.loads((folder / "meta.json").read_text())["subject_distance"]["distance"] == 4.5
    assert settings.last_subject_distance == pytest.approx(4.5)
    assert "Subject Distance" in scale_text(settings.last_move_length, settings.last_scene_scale,
                                            settings.last_subject_distance)
    settings.subject_distance = 0.0                     # back to the model's own size
    assert bpy.ops.wonderland.generate(extra_args=FAST_PREVIEWS) == {'FINISHED'}
    assert settings.last_subject_distance == 0.0


def test_the_ground_reaches_a_ground_reading_prior_and_the_scale_line(job_scene, tmp_path):
    """Ground and Ground Z go to the job (--ground-z / --no-ground); a model whose depth prior reads the ground
    reports the camera's height over it, which the scale line then names."""
    import dataclasses

    from backend.models.depth_prior import DepthPrior, DepthPriorConfig
    from backend.models.model_dir import write_model
    from backend.pipelines.wonderland import load_pipeline
    from wonderland_blender.model_info import scale_text

    tiny = load_pipeline("tiny")
    folder = tmp_path / "ground-model"
    write_model(folder, dataclasses.replace(tiny.config, scene_scale="metric"), tiny.vae, tiny.transformer,
                tiny.scheduler, tiny.lalrm, depth_prior=DepthPrior(DepthPriorConfig(widths=(8, 16), gravity=True,
                                                                                    ground=True)))
    settings = job_scene.wonderland
    settings.model, settings.ground_z = str(folder), -0.5
    assert bpy.ops.wonderland.generate(extra_args=FAST_PREVIEWS) == {'FINISHED'}
    folder = Path(next(o for o in job_scene.objects if RESULT_KEY in o)[RESULT_KEY])
    ground = json.loads((folder / "meta.json").read_text())["depth_prior"]["ground"]
    assert ground["z"] == -0.5 and ground["camera_height"] == pytest.approx(1.5, abs=1e-3)   # the camera at Z 1
    assert settings.last_camera_height == pytest.approx(1.5, abs=1e-3)
    assert "height over the ground" in scale_text(settings.last_move_length, settings.last_scene_scale,
                                                  settings.last_subject_distance, settings.last_camera_height)
    settings.use_ground = False
    assert bpy.ops.wonderland.generate(extra_args=FAST_PREVIEWS) == {'FINISHED'}
    folder = Path(settings.last_result_path).parent
    assert json.loads((folder / "meta.json").read_text())["depth_prior"]["ground"]["z"] is None
    assert settings.last_camera_height == 0.0
