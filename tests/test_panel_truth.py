"""The panel's description of a job (model size and frames, the exact crop, warnings), computed by the add-on
without bpy or the backend, checked against the backend's own code and the shipped model."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from backend.cameras import CameraBatch
from backend.pipelines.wonderland import model_inputs
from wonderland_blender.intrinsics import model_crop
from wonderland_blender.model_info import (ModelSpec, find_model_config, ground_text, job_camera_height,
                                           job_scene_scale, job_subject_distance,
                                           job_warnings, move_length, read_model_spec, scale_text, weights_dirs)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("image, camera, model", [
    ((720, 477), (1920, 1080), (96, 64)),    # the issue's case: the backend used 607×405
    ((1024, 1024), (720, 480), (720, 480)),
    ((640, 480), (480, 640), (96, 64)),      # portrait camera
    ((720, 480), (1080, 720), (96, 64)),     # same aspect everywhere: no crop
    ((333, 999), (1920, 1080), (48, 32)),
])
def test_crop_is_the_backends(image, camera, model):
    (img_w, img_h), (cam_w, cam_h), (model_w, model_h) = image, camera, model
    pipe = SimpleNamespace(config=SimpleNamespace(size=(model_w, model_h), frames=2))
    cameras = CameraBatch(torch.eye(3).repeat(2, 1, 1) * 500, torch.eye(4).repeat(2, 1, 1), cam_w, cam_h)
    rng = np.random.default_rng(0)
    _, _, info = model_inputs(pipe, rng.random((img_h, img_w, 3), np.float32), cameras)
    box, differs = model_crop(img_w, img_h, cam_w, cam_h, model_w, model_h)
    np.testing.assert_allclose(box, info["image_crop_box"], atol=1e-3)
    assert differs == bool(info["warnings"])


def test_the_issues_photo():
    box, differs = model_crop(720, 477, 1920, 1080, 96, 64)
    assert (round(box[2]), round(box[3])) == (608, 405) and int(box[2]) == 607 and differs


def test_model_spec_from_the_shipped_default_and_folders(tmp_path):
    config = find_model_config("default", weights_dirs(ROOT, None))
    assert config == ROOT / "backend" / "weights" / "default" / "wonderland.json"
    assert read_model_spec(config) == ModelSpec("default", 96, 64, 9)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "wonderland.json").write_text(json.dumps({"video": {"width": 720, "height": 480, "num_frames": 49}}))
    assert read_model_spec(find_model_config(str(folder), [])) == ModelSpec("mine", 720, 480, 49)
    assert find_model_config("nonexistent", weights_dirs(ROOT, None)) is None
    (folder / "wonderland.json").write_text("{}")
    with pytest.raises(ValueError, match="does not say the model's size"):
        read_model_spec(folder / "wonderland.json")


def test_model_found_in_the_backend_pythons_site_packages(tmp_path):
    weights = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "backend" / "weights" / "small"
    weights.mkdir(parents=True)
    (weights / "wonderland.json").write_text(json.dumps({"video": {"width": 48, "height": 32, "num_frames": 5}}))
    (tmp_path / "venv" / "bin").mkdir()
    python = tmp_path / "venv" / "bin" / "python"
    python.symlink_to(sys.executable)  # as `python -m venv` makes it on Linux and macOS
    assert read_model_spec(find_model_config("small", weights_dirs(tmp_path / "no-checkout", str(python)))).frames == 5


def test_job_warnings_from_meta_and_stderr(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"warnings": ["the image is 720x477 but the cameras are "
                                                                 "1920x1080: the image was centre-cropped"]}))
    (tmp_path / "stderr.log").write_text("loading\nwarning: the image is 720x477 but the cameras are 1920x1080: "
                                         "the image was centre-cropped\nwarning: --model x has no trained weights\n")
    assert job_warnings(tmp_path) == ["the image is 720x477 but the cameras are 1920x1080: the image was "
                                      "centre-cropped", "--model x has no trained weights"]
    assert job_warnings(tmp_path / "absent") == []


def test_the_scale_line_measures_the_camera_move(tmp_path):
    c2w = [np.eye(4) for _ in range(3)]
    c2w[1][:3, 3], c2w[2][:3, 3] = (0.1, 0.0, 0.0), (0.0, 0.3, 0.4)
    (tmp_path / "cameras.json").write_text(json.dumps({"frames": [{"c2w": m.tolist()} for m in c2w]}))
    assert move_length(tmp_path / "cameras.json") == pytest.approx(0.5)
    assert scale_text(0.5) == "Scale follows the camera move (0.5 units here): twice the move, twice the scene"
    assert "only turns" in scale_text(0.0)


def test_the_scale_line_says_when_the_model_sizes_the_scene_in_metres(tmp_path):
    meta = tmp_path / "meta.json"
    assert job_scene_scale(meta) == "path"                        # no meta.json: the paper's rule
    meta.write_text(json.dumps({"scene_scale": "metric"}))
    assert job_scene_scale(meta) == "metric"
    assert scale_text(0.25, "metric").startswith("Scale: metres") and "0.25 units" in scale_text(0.25, "metric")
    meta.write_text(json.dumps({"model": "old"}))                 # older backends write no key
    assert job_scene_scale(meta) == "path" and scale_text(0.5, "path").startswith("Scale follows the camera move")


def test_the_scale_line_says_when_the_artists_subject_distance_sized_the_scene(tmp_path):
    meta = tmp_path / "meta.json"
    assert job_subject_distance(meta) == 0.0                      # no meta.json: the model's own size
    meta.write_text(json.dumps({"scene_scale": "metric", "subject_distance": {"distance": 40.0, "scale": 9.8}}))
    assert job_subject_distance(meta) == 40.0
    assert scale_text(0.5, "metric", 40.0) == ("Scale: set by Subject Distance, the picture's median depth 40 units "
                                               "(the camera moved 0.5)")
    for broken in ({"subject_distance": "far"}, {"subject_distance": {"distance": "x"}}, ["not", "a", "dict"]):
        meta.write_text(json.dumps(broken))
        assert job_subject_distance(meta) == 0.0


def test_the_ground_line_says_how_high_the_camera_stands():
    assert ground_text(1.6, 0.0) == ("Camera 1.60 over the ground: it sizes the scene (eye height: 1.5-1.7 m)", 'INFO')
    assert ground_text(1.6, 0.5)[0].startswith("Camera 1.10 over")
    text, icon = ground_text(-0.25, 0.0)
    assert icon == 'ERROR' and "0.25 below the ground" in text


def test_the_scale_line_says_when_the_cameras_height_over_the_ground_sized_the_scene(tmp_path):
    meta = tmp_path / "meta.json"
    assert job_camera_height(meta) == 0.0                         # no meta.json: no ground
    meta.write_text(json.dumps({"scene_scale": "metric", "depth_prior": {"ground": {"z": 0.0, "camera_height": 1.6}}}))
    assert job_camera_height(meta) == 1.6
    assert scale_text(0.5, "metric", 0.0, 1.6) == ("Scale: metres, from the picture and the camera's 1.6-unit height "
                                                   "over the ground (the camera moved 0.5)")
    assert scale_text(0.5, "metric", 40.0, 1.6).startswith("Scale: set by Subject Distance")   # the artist's wins
    for told_none in ({"depth_prior": {"ground": {"z": None, "camera_height": None}}}, {"depth_prior": {"ground": None}},
                      {"depth_prior": {"ground": "high"}}, {"depth_prior": None}):
        meta.write_text(json.dumps(told_none))
        assert job_camera_height(meta) == 0.0
