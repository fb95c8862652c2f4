"""--subject-distance (backend/prior_scale.py, generate): the artist's answer to how far the picture's subject
is sizes the whole result about the first camera, over the model's guess and over a depth prior's; and the CLI
refuses a bad --ground-z (the ground such a prior is told)."""
import json
import math

import pytest
import torch

from backend.cameras import CameraBatch
from backend.errors import InputError
from backend.pipelines.wonderland import generate, load_pipeline
from backend.prior_scale import MAX_SUBJECT_DISTANCE, check_subject_distance
from backend.render import render
from test_backend_generate import events_of, write_job
from test_depth_prior import constant_prior, dolly_and_image, median_depth, tiny_metric


def moved_away(cameras: CameraBatch) -> CameraBatch:
    """The same move with camera 0 away from the world's origin and turned, so "about camera 0" is tested."""
    turn = torch.eye(4)
    turn[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    turn[:3, 3] = torch.tensor([1.0, -2.0, 3.0])
    return CameraBatch(cameras.K, turn @ cameras.c2w, cameras.width, cameras.height)


def test_the_input_views_median_depth_becomes_the_distance_and_its_picture_stays():
    image, cameras = dolly_and_image()
    cameras = moved_away(cameras)
    pipe = load_pipeline("tiny")        # path scale: its size would follow the move's length
    plain = generate(pipe, image, cameras, steps=2, preview_count=0, detail_size=96)
    sized = generate(pipe, image, cameras, steps=2, preview_count=0, detail_size=96, subject_distance=7.5)
    factor = sized.info["subject_distance"]["scale"]
    assert sized.info["subject_distance"]["distance"] == 7.5 and "subject_distance" not in plain.info
    assert median_depth(sized.gaussians, cameras) == pytest.approx(7.5, rel=0.03)
    assert median_depth(plain.gaussians, cameras) == pytest.approx(7.5 / factor, rel=0.03)
    # one factor about camera 0's centre: the detail layer's Gaussians exactly; the model's are culled against
    # it alike (a borderline one may flip in float32) and lie `factor` times as far
    centre = cameras.c2w[0, :3, 3]
    n = plain.info["detail"]["count"]
    assert sized.info["detail"]["count"] == n
    assert torch.allclose(sized.gaussians.means[-n:] - centre, (plain.gaussians.means[-n:] - centre) * factor,
                          rtol=1e-3, atol=1e-3 * factor)
    assert torch.allclose(sized.gaussians.log_scales[-n:], plain.gaussians.log_scales[-n:] + math.log(factor),
                          atol=1e-3)
    model = [g.gaussians.means[:-n] - centre for g in (plain, sized)]
    assert abs(len(model[1]) - len(model[0])) <= len(model[0]) // 1000
    assert float(model[1].norm(dim=1).median()) == pytest.approx(factor * float(model[0].norm(dim=1).median()),
                                                                  rel=1e-3)
    with torch.no_grad():
        views = [render(g.gaussians, cameras[0]).rgb for g in (plain, sized)]
    assert float((views[0] - views[1]).abs().mean()) < 0.01      # the input view looks the same


def test_the_distance_wins_over_a_depth_prior_and_moves_its_share_of_the_layer():
    image, cameras = dolly_and_image()
    prior = constant_prior(3.0, 1.0, shape_sigma=0.042)     # shaped first, then sized: the distance still holds
    result = generate(tiny_metric(prior), image, cameras, steps=2, preview_count=0, detail_size=96,
                      subject_distance=6.0)
    assert result.info["depth_prior"]["scale"] > 0 and result.info["subject_distance"]["scale"] == \
        pytest.approx(2.0, rel=0.05)
    n = result.info["detail"]["count"]
    z = result.gaussians.means[-n:, 2]      # the layer at the prior's depth (weight 1), moved to 6 with the rest
    assert torch.allclose(z, torch.full_like(z, 6.0), rtol=0.03)
    assert median_depth(result.gaussians, cameras) == pytest.approx(6.0, rel=0.03)


@pytest.mark.parametrize("value", [0.0, -2.0, math.inf, math.nan, MAX_SUBJECT_DISTANCE * 2, True, "3"])
def test_bad_distances_are_refused_with_a_hint(value):
    with pytest.raises(InputError) as err:
        check_subject_distance(value)
    assert "--subject-distance" in str(err.value) and "above 0" in err.value.hint


def test_cli_sizes_the_scene_and_says_so_in_meta(tmp_path, run_backend):
    image, cams = write_job(tmp_path)
    out = tmp_path / "out"
    run_backend("generate", "--image", image, "--cameras", cams, "--out", out, "--model", "tiny", "--previews", "0",
                "--detail-size", "0", "--subject-distance", "12", check=0)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["subject_distance"]["distance"] == 12.0 and meta["subject_distance"]["scale"] > 0


@pytest.mark.parametrize("args, named", [(["--ground-z", "nan"], "--ground-z"), (["--ground-z", "1e9"], "--ground-z"),
                                         (["--ground-z", "0", "--no-ground"], "both given")])
def test_cli_refuses_a_bad_ground_with_exit_2(tmp_path, run_backend, args, named):
    image, cams = write_job(tmp_path)
    out = tmp_path / "out"
    result = run_backend("generate", "--image", image, "--cameras", cams, "--out", out, "--model", "tiny", *args,
                         check=2)
    assert named in result.stderr and not (out / "scene.ply").exists()


@pytest.mark.parametrize("value", ["0", "-1", "inf", "far"])
def test_cli_refuses_a_bad_distance_with_exit_2(tmp_path, run_backend, value):
    image, cams = write_job(tmp_path)
    out = tmp_path / "out"
    result = run_backend("generate", "--image", image, "--cameras", cams, "--out", out, "--model", "tiny",
                         "--subject-distance", value, check=2)
    assert "--subject-distance" in result.stderr
    assert not (out / "scene.ply").exists()
