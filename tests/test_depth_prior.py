"""The depth prior (backend/models/depth_prior.py, backend/prior_scale.py, train-depth-prior): generate scales
the model to the prior's metres and blends the prior into the detail layer, model folders carry it, it is
refused where its metres cannot fit, and its trainer learns depth from scene folders."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from backend.cameras import CameraBatch
from backend.errors import InputError
from backend.evaluation import load_eval_scene
from backend.models.depth_prior import (FLOOR_PRIOR_SHARE, MIN_FALL, DepthPrior, DepthPriorConfig, ground_shift,
                                        ray_channels)
from backend.models.model_dir import CONFIG_FILE, DEPTH_PRIOR_FILE, read_part
from backend.pipelines.wonderland import WonderlandPipeline, generate, load_pipeline
from backend.prior_scale import photo_depth
from backend.render import render
from backend.training.train_depth_prior import FLOOR_WEIGHT, DepthPriorObjective, batch_inputs, ground_labels
from tests.test_evaluation import make_plane_scene
from tests.test_intrinsics import axis_rotation

SMALL = DepthPriorConfig(widths=(8, 16, 16))
GRAVITY = dataclasses.replace(SMALL, gravity=True)
GROUND = dataclasses.replace(GRAVITY, ground=True)


def constant_prior(depth: float, detail_weight: float, shape_sigma: float = 0.0) -> DepthPrior:
    """A prior that says `depth` everywhere (its head's weights zero, its bias log depth); by default it only
    sizes the model (shape_sigma 0: one factor)."""
    prior = DepthPrior(dataclasses.replace(SMALL, detail_weight=detail_weight, shape_sigma=shape_sigma))
    with torch.no_grad():
        prior.head.bias.fill_(math.log(depth))
    return prior.eval()


def tiny_metric(prior: DepthPrior | None = None) -> WonderlandPipeline:
    pipe = load_pipeline("tiny")
    pipe.config = dataclasses.replace(pipe.config, scene_scale="metric")
    pipe.depth_prior = prior
    return pipe


def dolly_and_image():
    c2w = torch.eye(4).repeat(3, 1, 1)
    c2w[:, 2, 3] = torch.tensor([0.0, 0.1, 0.2])
    cameras = CameraBatch(torch.tensor([[80.0, 0, 48], [0, 80, 32], [0, 0, 1]]).repeat(3, 1, 1), c2w, 96, 64)
    return np.random.RandomState(0).rand(64, 96, 3).astype(np.float32), cameras


def median_depth(gaussians, cameras: CameraBatch) -> float:
    with torch.no_grad():
        out = render(gaussians, cameras[0])
    z, alpha = out.depth[0, ..., 0], out.alpha[0, ..., 0]
    return float(z[(alpha > 0.5) & (z > 0)].median())


def test_generate_scales_the_model_to_the_prior_and_blends_it_into_the_detail_layer():
    image, cameras = dolly_and_image()
    plain = generate(tiny_metric(), image, cameras, steps=2, preview_count=0, detail_size=0)
    scaled = generate(tiny_metric(constant_prior(3.0, 0.0)), image, cameras, steps=2, preview_count=0, detail_size=0)
    factor = scaled.info["depth_prior"]["scale"]
    assert "depth_prior" not in plain.info and factor > 0
    # one factor about camera 0: every Gaussian slides along its ray, sizes grow with it, nothing else moves
    assert torch.allclose(scaled.gaussians.means, plain.gaussians.means * factor, rtol=1e-3, atol=1e-4)
    assert torch.allclose(scaled.gaussians.log_scales, plain.gaussians.log_scales + math.log(factor), atol=1e-3)
    assert torch.equal(scaled.gaussians.sh0, plain.gaussians.sh0)
    assert median_depth(scaled.gaussians, cameras) == pytest.approx(3.0, rel=0.05)
    # the detail layer: the model's depth at weight 0, the prior's own at weight 1
    layers = {w: generate(tiny_metric(constant_prior(3.0, w)), image, cameras, steps=2, preview_count=0,
                          detail_size=96) for w in (0.0, 1.0)}
    n = layers[1.0].info["detail"]["count"]
    z_prior = layers[1.0].gaussians.means[-n:, 2]
    assert torch.allclose(z_prior, torch.full_like(z_prior, 3.0), rtol=0.02)
    assert float(layers[0.0].gaussians.means[-n:, 2].std()) > 10 * float(z_prior.std())


def test_generate_bends_the_models_broad_shape_to_the_prior_and_keeps_the_input_view():
    image, cameras = dolly_and_image()
    one, shaped = (generate(tiny_metric(constant_prior(3.0, 0.0, sigma)), image, cameras, steps=2, preview_count=0,
                            detail_size=0) for sigma in (0.0, 0.042))
    assert shaped.info["depth_prior"]["shape_sigma"] == 0.042 and one.info["depth_prior"]["shape_sigma"] == 0.0
    with torch.no_grad():
        views = [render(result.gaussians, cameras[0]) for result in (one, shaped)]
    seen = [(v.alpha[0, ..., 0] > 0.5) & (v.depth[0, ..., 0] > 0) for v in views]
    spread = [float(v.depth[0, ..., 0][s].log().std()) for v, s in zip(views, seen)]
    assert spread[1] < 0.5 * spread[0]      # the random model's lumpy depth flattened towards the flat prior
    assert median_depth(shaped.gaussians, cameras) == pytest.approx(3.0, rel=0.05)
    directions = [r.gaussians.means / r.gaussians.means.norm(dim=1, keepdim=True) for r in (one, shaped)]
    assert torch.allclose(directions[0], directions[1], atol=1e-4)    # each Gaussian stays on its ray


def test_a_metric_model_folder_round_trips_its_prior_and_a_missing_file_is_named(tmp_path):
    pipe = tiny_metric(constant_prior(2.5, 0.5))
    pipe.save_pretrained(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert manifest["depth_prior"] == {"widths": [8, 16, 16], "detail_weight": 0.5, "gravity": False, "ground": False,
                                     "shape_sigma": 0.0}
    loaded = WonderlandPipeline.from_pretrained(tmp_path / "m")
    assert loaded.depth_prior.config == pipe.depth_prior.config and not loaded.depth_prior.training
    for name, tensor in pipe.depth_prior.state_dict().items():
        assert torch.equal(loaded.depth_prior.state_dict()[name], tensor), name
    tiny_metric().save_pretrained(tmp_path / "m")         # saved without one: the key and the file go
    assert "depth_prior" not in json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert not (tmp_path / "m" / DEPTH_PRIOR_FILE).exists() and read_part(tmp_path / "m", "depth_prior") is None
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="names a depth prior but depth_prior.safetensors is missing") as error:
        WonderlandPipeline.from_pretrained(tmp_path / "m")
    assert "train-depth-prior" in error.value.hint


def test_a_path_scale_model_refuses_a_prior():
    pipe = load_pipeline("tiny")
    assert pipe.config.scene_scale == "path"
    with pytest.raises(InputError, match="a depth prior gives metres") as error:
        WonderlandPipeline(pipe.config, pipe.vae, pipe.transformer, pipe.scheduler, pipe.lalrm, "test",
                           depth_prior=constant_prior(2.0, 0.5))
    assert "metric-scale model" in error.value.hint


@pytest.mark.parametrize("field, value, hint", [("detail_weight", 1.5, "the prior's depth alone"),
                                               ("shape_sigma", -0.1, "one factor"),
                                               ("shape_sigma", 2.0, "as wide as the picture"),
                                               ("ground", True, "needs its rise")])
def test_settings_out_of_range_are_refused_with_a_hint(field, value, hint):
    with pytest.raises(InputError, match=f"{field} {value}") as error:
        DepthPriorConfig(**{field: value})
    assert hint in error.value.hint


def test_the_flip_augmentation_is_the_mirrored_camera():
    """Flipping the ray channels left-right and negating x gives the rays of the camera whose principal point is
    mirrored: the same photo seen in a mirror, so depth stays the truth."""
    K = torch.tensor([[70.0, 0, 40.0], [0, 70.0, 30.0], [0, 0, 1]])
    mirrored = K.clone()
    mirrored[0, 2] = 96 - K[0, 2]
    rays = ray_channels(K, 64, 96)
    flipped = rays.flip(-1) * torch.tensor([-1.0, 1.0])[:, None, None]
    assert torch.allclose(flipped, ray_channels(mirrored, 64, 96), atol=1e-6)


def pitched(degrees: float) -> torch.Tensor:
    """An OpenCV camera-to-world pose at 1.5 m above z = 0, looking along +Y, pitched down by `degrees`, yawed
    and rolled a little (so every part of the rotation shows)."""
    level = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])   # x right, y down, z along +Y
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = torch.from_numpy(axis_rotation(2, 17.0) @ level @ axis_rotation(0, -degrees) @ axis_rotation(2, 3.0))
    c2w[:3, 3] = torch.tensor([0.2, -0.4, 1.5])
    return c2w


def test_the_rise_channel_puts_a_floor_where_it_is():
    """A gravity prior's third ray channel, the rise along the world's +Z: a floor h below the camera is at
    camera z = h / -rise, which is what lets the prior read a pitch the picture hardly shows."""
    K = torch.tensor([[70.0, 0, 48.0], [0, 70.0, 32.0], [0, 0, 1]], dtype=torch.float64)
    c2w = pitched(20.0)
    rise = ray_channels(K, 64, 96, c2w)[2]
    d = torch.einsum("ij,hwj->hwi", c2w[:3, :3], torch.cat([ray_channels(K, 64, 96).permute(1, 2, 0),
                                                            torch.ones(64, 96, 1, dtype=torch.float64)], dim=-1))
    floor = rise < 0                                # rays that go down meet the floor at t = 1.5 / -d_z
    t = 1.5 / -d[..., 2][floor]
    assert bool(floor.any()) and not bool(floor.all())
    assert torch.allclose(1.5 / -rise[floor], t, rtol=1e-9)
    assert torch.equal(ray_channels(K, 64, 96, c2w)[:2], ray_channels(K, 64, 96))


def test_the_flip_augmentation_is_the_mirrored_camera_with_gravity_too():
    """The mirrored camera (principal point mirrored, x axis negated) sees the world's up with its x negated: its
    rise at a mirrored pixel is the rise there, so the augmentation flips that channel and negates only x/z."""
    K = torch.tensor([[70.0, 0, 40.0], [0, 70.0, 30.0], [0, 0, 1]], dtype=torch.float64)
    mirrored_K, mirrored_pose, pose = K.clone(), pitched(25.0), pitched(25.0)
    mirrored_K[0, 2] = 96 - K[0, 2]
    mirrored_pose[:3, 0] *= -1
    rays = ray_channels(K, 64, 96, pose)
    flipped = rays.flip(-1) * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)[:, None, None]
    assert torch.allclose(flipped, ray_channels(mirrored_K, 64, 96, mirrored_pose), atol=1e-9)


def one_frame_batch(depth: float) -> dict:
    K = torch.tensor([[20.0, 0, 12], [0, 20, 8], [0, 0, 1]])
    return {"frames": torch.rand(2, 1, 3, 16, 24), "K": K.expand(2, 1, 3, 3),
            "c2w": pitched(10.0).float().expand(2, 1, 4, 4), "depth": torch.full((2, 1, 16, 24), depth)}


def test_the_objective_reads_only_valid_depth():
    batch = one_frame_batch(2.0)
    batch["depth"][:, :, :8] = 0.0                                     # no depth: the top half does not count
    prior = constant_prior(2.0, 0.5)
    assert float(DepthPriorObjective(SMALL)(prior, batch, {})["loss"].detach()) == pytest.approx(0.0, abs=1e-5)
    photo, rays, depth = batch_inputs(batch, SMALL)
    assert photo.shape == (2, 3, 16, 24) and rays.shape == (2, 2, 16, 24) and depth.shape == (2, 16, 24)
    assert batch_inputs(batch, GRAVITY)[1].shape == (2, 3, 16, 24)
    batch["depth"][:, :, 8:] = 2.0 * math.e
    assert float(DepthPriorObjective(SMALL)(prior, batch, {})["loss"].detach()) == pytest.approx(1.0, abs=1e-4)


def test_the_ground_channels_put_the_ground_where_the_rays_meet_it():
    """A ground prior's last two channels: log camera z where each ray meets the plane Z = ground_z (the camera
    1.5 above Z = 0 here) and 1 where it does; zero where the ray rises, and everywhere when the ground is unknown
    or the camera is not above it."""
    K = torch.tensor([[70.0, 0, 48.0], [0, 70.0, 32.0], [0, 0, 1]], dtype=torch.float64)
    c2w = pitched(20.0)
    rays = ray_channels(K, 64, 96, c2w, ground=True, ground_z=0.0)
    rise, log_z, meets = rays[2], rays[3], rays[4]
    assert torch.equal(rays[:3], ray_channels(K, 64, 96, c2w))
    assert torch.equal(meets.bool(), rise < -MIN_FALL) and 0 < float(meets.mean()) < 1
    assert torch.allclose(log_z[meets.bool()], (1.5 / -rise[meets.bool()]).log(), rtol=1e-9)
    assert bool((log_z[~meets.bool()] == 0).all())
    raised = ray_channels(K, 64, 96, c2w, ground=True, ground_z=0.5)   # 1.0 above the ground: all nearer by 2/3
    assert torch.allclose(raised[3] - log_z, torch.full_like(log_z, math.log(1.0 / 1.5)).where(meets.bool(), 0.0))
    for unknown in (None, 1.5, 3.0):                  # no ground, or the camera on or below it
        assert not ray_channels(K, 64, 96, c2w, ground=True, ground_z=unknown)[3:].any()


def test_the_ground_shift_moves_the_answer_onto_the_ground_it_sees():
    """ground_shift: the floor-weighted mean of (ground - answer), shrunk by FLOOR_PRIOR_SHARE of the pixels; no
    ground seen or none told: no shift. In the model, a told ground moves the whole answer by that one shift."""
    log_z, ground = torch.zeros(2, 10, 10), torch.full((2, 10, 10), 0.7)
    meets = torch.zeros(2, 10, 10)
    meets[0, 5:] = 1.0                                                       # 50 pixels see the ground
    shift = ground_shift(log_z, torch.ones(2, 10, 10), ground, meets)
    assert shift[0] == pytest.approx(0.7 * 50 / (50 + FLOOR_PRIOR_SHARE * 100)) and shift[1] == 0.0
    assert ground_shift(log_z, torch.zeros(2, 10, 10), ground, meets).abs().max() == 0.0   # nothing looks like it
    prior = DepthPrior(GROUND).eval()
    with torch.no_grad():
        prior.floor.bias.fill_(20.0)                                         # every pixel looks like the ground
        photo = torch.rand(1, 3, 16, 24)
        K = torch.tensor([[20.0, 0, 12], [0, 20, 8], [0, 0, 1]], dtype=torch.float64)
        told, untold = (ray_channels(K, 16, 24, pitched(20.0), ground=True, ground_z=z)[None].float()
                        for z in (0.0, None))
        moved = prior(photo, told) - prior(photo, untold)
        base = prior(photo, untold)
        expected = ground_shift(base, torch.ones_like(base), told[:, 3], told[:, 4])
    assert torch.allclose(moved, expected[:, None, None].expand_as(moved), atol=1e-4) and float(expected) != 0


def test_the_ground_head_learns_from_where_the_truth_lies_on_the_ground():
    """ground_labels: 1 where the true depth is the ground's (a floor), 0 where something stands in front of it,
    and only falling rays of frames told the ground count; the objective adds the head's cross-entropy."""
    batch = one_frame_batch(1.0)
    rays = batch_inputs(batch, GROUND)[1]
    meets = rays[:, 4] > 0
    batch["depth"][:, 0] = torch.where(meets, rays[:, 3].exp(), torch.tensor(2.0))   # the floor, and a far wall
    batch["depth"][:, 0, :, :6] *= torch.where(meets[:, :, :6], 0.5, 1.0)              # a box on the floor at left
    labels, counted = ground_labels(rays, batch["depth"][:, 0])
    assert torch.equal(counted, meets) and bool(labels[:, :, 6:][meets[:, :, 6:]].all())
    assert not labels[:, :, :6].any() and not labels[~meets].any()
    withheld = batch_inputs(batch, GROUND, torch.tensor([True, True]))[1]
    assert not ground_labels(withheld, batch["depth"][:, 0])[1].any()                 # no ground told, nothing counts
    torch.manual_seed(0)                              # the objective withholds the ground from a random share
    terms = DepthPriorObjective(GROUND)(DepthPrior(GROUND), batch, {})
    assert float(terms["loss"].detach()) == pytest.approx(float(terms["depth"] + FLOOR_WEIGHT * terms["floor"]), rel=1e-5)
    assert float(terms["floor"]) > 0


def test_training_withholds_the_ground_in_the_frames_it_is_told():
    batch = one_frame_batch(2.0)
    rays = batch_inputs(batch, GROUND, torch.tensor([False, True]))[1]
    assert rays.shape == (2, 5, 16, 24) and rays[0, 4].any() and not rays[1, 3:].any()
    assert torch.equal(rays[0], batch_inputs(batch, GROUND)[1][1])     # by default told in every frame


class GroundPrior(DepthPrior):
    """A ground prior that answers the ground's depth where it is told one, and 10 elsewhere."""

    def forward(self, photo, rays):
        return torch.where(rays[:, 4] > 0, rays[:, 3], math.log(10.0))


def test_generate_tells_a_ground_prior_the_camera_height_and_meta_says_so():
    """The rig pitched down 30° with camera 0 at Z 1.5: over the ground at Z 0 the scene is sized by the floor
    1.5 below; at Z -1.5 (3 below), twice as far; with no ground, or the camera below it (and a warning), the
    prior is told none."""
    image, cameras = dolly_and_image()
    rig = CameraBatch(cameras.K, pitched(30.0).float() @ cameras.c2w, cameras.width, cameras.height)
    pipe = tiny_metric(GroundPrior(GROUND).eval())
    runs = {z: generate(pipe, image, rig, steps=2, preview_count=0, detail_size=0, ground_z=z).info
            for z in (0.0, -1.5, None, 2.0)}
    assert runs[0.0]["depth_prior"]["ground"] == {"z": 0.0, "camera_height": pytest.approx(1.5, abs=1e-4)}
    assert runs[-1.5]["depth_prior"]["ground"]["camera_height"] == pytest.approx(3.0, abs=1e-4)
    assert runs[-1.5]["depth_prior"]["scale"] == pytest.approx(2 * runs[0.0]["depth_prior"]["scale"], rel=0.02)
    for z in (None, 2.0):
        assert runs[z]["depth_prior"]["ground"] == {"z": None, "camera_height": None}
        assert runs[z]["depth_prior"]["scale"] == runs[None]["depth_prior"]["scale"]        # 10 everywhere:
        assert runs[z]["depth_prior"]["scale"] > 1.5 * runs[-1.5]["depth_prior"]["scale"]   # beyond the floor
    assert not runs[None]["warnings"] and "not above the ground at Z 2" in runs[2.0]["warnings"][0]
    assert "ground" not in str(generate(tiny_metric(constant_prior(3.0, 0.0)), image, rig, steps=2, preview_count=0,
                                        detail_size=0).info["warnings"])


class FloorPrior(DepthPrior):
    """A gravity prior that sees a floor 1.5 below the camera everywhere the rays go down (10 far elsewhere)."""

    def forward(self, photo, rays):
        return torch.where(rays[:, 2] < -0.05, (1.5 / -rays[:, 2].clamp(max=-0.05)).log(), math.log(10.0))


def test_generate_gives_a_gravity_prior_the_world_pose_of_camera_0():
    """The whole rig pitched in the world: the model's cameras, normalized to camera 0, are the same, so only a
    prior that reads the world's up can answer differently, and it does (a plain prior answers the same)."""
    image, cameras = dolly_and_image()
    rigs = [CameraBatch(cameras.K, pitched(degrees).float() @ cameras.c2w, cameras.width, cameras.height)
            for degrees in (0.0, 30.0)]
    plain, floor = constant_prior(3.0, 0.0), FloorPrior(GRAVITY).eval()
    scales = {prior: [generate(tiny_metric(prior), image, rig, steps=2, preview_count=0, detail_size=0)
                      .info["depth_prior"]["scale"] for rig in rigs] for prior in (plain, floor)}
    assert scales[plain][0] == pytest.approx(scales[plain][1], rel=1e-4)
    assert scales[floor][0] > 1.5 * scales[floor][1]      # looking down, the floor is nearer


def test_train_depth_prior_learns_a_wall_and_exports_into_a_metric_folder_only(tmp_path, run_backend):
    for i in range(3):
        scene = tmp_path / "data" / f"scene_{i:07d}"
        make_plane_scene(scene, frames=3)
        for f in range(1, 3):
            (scene / "depth" / f"{f:04d}.npy").write_bytes((scene / "depth" / "0000.npy").read_bytes())
    config = tmp_path / "prior.json"
    config.write_text(json.dumps({"widths": [8, 16], "detail_weight": 0.5}))
    path_folder = tmp_path / "path-model"
    load_pipeline("tiny").save_pretrained(path_folder)
    args = ["train-depth-prior", "--data", str(tmp_path / "data"), "--model-config", str(config), "--size", "48x32",
            "--batch-size", "4", "--steps", "60", "--lr", "3e-2", "--val-fraction", "0", "--log-every", "20"]
    refused = run_backend(*args, "--out", str(tmp_path / "refused"), "--export", str(path_folder))
    assert refused.returncode == 2 and "scene_scale 'path'" in refused.stderr
    metric_folder = tmp_path / "metric-model"
    tiny_metric().save_pretrained(metric_folder)
    done = run_backend(*args, "--out", str(tmp_path / "run"), "--export", str(metric_folder))
    assert done.returncode == 0, done.stderr
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0]
    prior = WonderlandPipeline.from_pretrained(metric_folder).depth_prior
    truth = np.load(tmp_path / "data" / "scene_0000000" / "depth" / "0000.npy")
    scene = load_eval_scene(tmp_path / "data" / "scene_0000000")
    got = photo_depth(prior, torch.from_numpy(scene.image(0)), scene.cameras[0])
    assert float(np.median(got.numpy())) == pytest.approx(float(np.median(truth)), rel=0.15)
