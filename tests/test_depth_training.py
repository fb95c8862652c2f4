"""The LaLRM's depth term: depth maps read from scene folders (silhouettes masked), carried through clips and
the latent cache, scaled into the normalized frame, and lowering the rendered depth error when trained."""
import json
import logging

import numpy as np
import pytest
import torch

from backend.data import ClipDataset, collate, load_scenes
from backend.data.depth import load_depth, resize_depth, silhouette_mask
from backend.errors import InputError
from backend.models.lalrm import LaLRM, LaLRMConfig
from backend.render import render
from backend.training.engine import TrainConfig, Trainer
from backend.training.losses import LossWeights, ReconstructionLoss, depth_loss
from backend.training.train_lrm import LaLRMObjective, LRMData, clip_cameras, predict_clip_gaussians
from tests.test_evaluation import make_plane_scene
from tests.test_train_lrm import train_lrm_cli, write_scene

# 5 frames (2 latent frames) of 32×32 px: the cameras move, so the normalization scale is not 1.
MICRO5 = LaLRMConfig(num_frames=5, height=32, width=32, latent_channels=4, hidden_size=32, num_layers=1, num_heads=2)
WALL = 6.0      # world units from the cameras
STEP = 1.0      # camera move per frame, world units: the path is 4, so s = 4 and the wall is at 1.5


def wall_depth(height, width, near_box=True):
    """Camera z of a wall at WALL with a box at WALL / 2 in the middle, its left edge one anti-aliased pixel."""
    depth = np.full((height, width), WALL, np.float32)
    if near_box:
        depth[height // 4:3 * height // 4, width // 3:2 * width // 3] = WALL / 2
        depth[height // 4:3 * height // 4, width // 3 - 1] = 0.75 * WALL   # the mixed silhouette pixel
    return depth


def test_silhouette_mask_drops_mixed_and_edge_pixels_and_keeps_surfaces():
    depth = wall_depth(16, 24)
    valid = silhouette_mask(depth)
    assert not valid[8, 7]                           # the mixed pixel (at 0.75 · WALL, on no surface)
    assert not valid[8, 6] and not valid[8, 8]      # beside the edge: their renders blend too
    assert valid[8, 2] and valid[8, 12] and valid[0, 0]
    slanted = np.linspace(2, 3, 24, dtype=np.float32)[None].repeat(16, 0)   # a floor-like ramp: no edge
    assert silhouette_mask(slanted).all()
    bad = depth.copy()
    bad[0, 0], bad[15, 23], bad[15, 0] = np.nan, 0, 1e10     # 1e10: Cycles' depth where a ray hits nothing
    assert not silhouette_mask(bad)[0, 0] and not silhouette_mask(bad)[15, 23] and not silhouette_mask(bad)[15, 0]
    assert not silhouette_mask(bad)[14, 1] and silhouette_mask(bad)[12, 3]


def test_depth_is_cropped_like_the_frames_and_never_interpolated_across_an_edge(tmp_path):
    np.save(tmp_path / "d.npy", wall_depth(16, 24))
    same = load_depth(tmp_path / "d.npy", (24, 16), (0.0, 0.0, 24.0, 16.0), 24, 16)
    assert same[8, 12] == WALL / 2 and same[8, 7] == 0
    half = load_depth(tmp_path / "d.npy", (24, 16), (2.0, 4.0, 12.0, 8.0), 24, 16)   # a 2× zoom on the box edge
    values = half[half > 0]
    assert set(np.round(values, 4)) <= {WALL, WALL / 2}      # only the two surfaces, no blend of them
    assert (half[:, :2] == WALL).all() and (half == 0).any() and (half == WALL / 2).any()
    small = resize_depth(torch.from_numpy(same), 8, 12)
    assert set(np.round(small[small > 0].numpy(), 4)) <= {WALL, WALL / 2} and (small == 0).any()
    with pytest.raises(InputError, match="scene's frames are 32x16"):
        load_depth(tmp_path / "d.npy", (32, 16), (0.0, 0.0, 32.0, 16.0), 32, 16)


def add_depth(folder, frames=9, size=(96, 64), missing=()):
    (folder / "depth").mkdir()
    for i in range(frames):
        if i not in missing:
            np.save(folder / "depth" / f"{i:04d}.npy", wall_depth(size[1], size[0]))


def test_scene_folders_carry_depth_into_clips_and_partial_depth_trains_without_it(tmp_path, caplog):
    for name in ("with", "without", "partial"):
        write_scene(tmp_path / name)
    add_depth(tmp_path / "with")
    add_depth(tmp_path / "partial", missing=(3,))
    with caplog.at_level(logging.WARNING):
        scenes, problems = load_scenes(tmp_path)
    assert sorted(s.name for s in scenes) == ["partial", "with", "without"] and not problems
    assert any("lacks 1 of the 9" in r.getMessage() and "0003.npy" in r.getMessage() for r in caplog.records)
    by_name = {s.name: s for s in scenes}
    assert by_name["without"].depth is None and by_name["partial"].depth is None and len(by_name["with"].depth) == 9

    item = ClipDataset([by_name["with"]], 9, 64, 96, fixed=True)[0]
    assert item["depth"].shape == (9, 64, 96) and item["depth"][0, 32, 48] == WALL / 2
    assert "depth" not in ClipDataset([by_name["without"]], 9, 64, 96, fixed=True)[0]
    mixed = ClipDataset([by_name["with"], by_name["without"]], 9, 64, 96, fixed=True)
    batch = collate([mixed[0], mixed[1]])        # a scene without depth gives all-invalid maps, so batches stack
    assert batch["depth"].shape == (2, 9, 64, 96) and (batch["depth"][1] == 0).all()


class WallClips(torch.utils.data.Dataset):
    """A fixed latent clip of cameras sliding sideways in front of the wall, with its depth maps."""

    def __init__(self):
        self.latents = torch.randn(MICRO5.latent_shape, generator=torch.Generator().manual_seed(1))

    def __len__(self):
        return 1

    def __getitem__(self, i):
        c2w = torch.eye(4).repeat(5, 1, 1)
        c2w[:, 0, 3] = STEP * torch.arange(5.0)
        K = torch.tensor([[32.0, 0, 16], [0, 32, 16], [0, 0, 1]]).repeat(5, 1, 1)
        frames = torch.full((5, 3, 32, 32), 0.5)
        depth = torch.from_numpy(wall_depth(32, 32, near_box=False)).repeat(5, 1, 1)
        return {"latents": self.latents, "frames": frames, "K": K, "c2w": c2w, "depth": depth, "index": i}


def rendered_depth_error(lalrm: LaLRM) -> float:
    """AbsRel of the rendered depth at camera 0 against the wall in the normalized frame (WALL / s)."""
    batch = collate([WallClips()[0]])
    inputs, all_cams, norm = clip_cameras(batch["K"][0], batch["c2w"][0], 32, 32, list(range(5)))
    assert norm.scale == pytest.approx(4 * STEP)
    with torch.no_grad():
        g = predict_clip_gaussians(lalrm, lalrm, MICRO5, batch["latents"], [inputs])[0]
        out = render(g, all_cams[[0]], backend="torch")
    z = out.depth[0, ..., 0][out.alpha[0, ..., 0] > 0.01]   # an untrained model is nearly transparent
    truth = WALL / norm.scale
    return float(((z - truth).abs() / truth).mean())


def train_wall(tmp_path, depth_weight: float) -> LaLRM:
    config = TrainConfig(output_dir=str(tmp_path / f"run{depth_weight}"), max_steps=15, lr=1e-2, lr_min=1e-3,
                         weight_decay=0.0, log_every=1, checkpoint_every=0, seed=0)
    torch.manual_seed(0)
    trainer = Trainer(config, lambda: LaLRM(MICRO5))
    loss = ReconstructionLoss(LossWeights(perceptual=0, opacity=0, depth=depth_weight))
    objective = LaLRMObjective(trainer.unwrapped_model, loss, LRMData(views=2, renderer="torch"))
    history = trainer.fit(WallClips(), objective, collate_fn=collate)
    assert ("depth" in history[-1]) == (depth_weight > 0)
    return trainer.unwrapped_model


def test_a_few_steps_with_the_depth_weight_lower_the_depth_error_and_without_it_do_not(tmp_path):
    torch.manual_seed(0)
    before = rendered_depth_error(LaLRM(MICRO5))
    with_depth = rendered_depth_error(train_wall(tmp_path, 1.0))
    without = rendered_depth_error(train_wall(tmp_path, 0.0))   # a flat grey wall: colour says nothing of depth
    assert with_depth < 0.5 * before and with_depth < 0.5 * without, (before, with_depth, without)


def test_depth_loss_is_a_log_l1_over_valid_pixels_only():
    truth = torch.tensor([[[2.0, 0.0, 4.0]]])
    alpha = torch.tensor([[[1.0, 1.0, 0.2]]])
    rendered = torch.tensor([[[2.0 * np.e, 99.0, 1.0]]], requires_grad=True)
    value = depth_loss(rendered, alpha, truth)       # pixel 1 has no truth, pixel 2 too little alpha
    assert value.item() == pytest.approx(1.0)
    value.backward()
    assert rendered.grad[0, 0, 1] == 0 and rendered.grad[0, 0, 2] == 0
    assert depth_loss(rendered, alpha * 0, truth).item() == 0
    with pytest.raises(InputError, match="finite weights >= 0"):
        LossWeights(depth=-1)


def test_train_lrm_with_depth_weight_stores_depth_in_the_latent_cache_and_logs_the_term(tmp_path):
    from backend.data.latent_cache import LatentCacheDataset
    from backend.models.model_dir import write_vae
    from backend.pipelines.wonderland import load_pipeline

    for i in range(2):
        write_scene(tmp_path / "data" / f"scene{i}", seed=i)
    add_depth(tmp_path / "data" / "scene0")
    write_vae(tmp_path / "model", load_pipeline("tiny").vae)
    code = train_lrm_cli("--data", tmp_path / "data", "--out", tmp_path / "run", "--model-config", "tiny",
                         "--vae", tmp_path / "model", "--latent-cache", tmp_path / "cache", "--steps", "2",
                         "--views", "2", "--stride", "1", "1", "--perceptual-weight", "0", "--val-fraction", "0",
                         "--checkpoint-every", "0", "--log-every", "1", "--depth-weight", "0.5")
    assert code == 0
    cache = LatentCacheDataset(tmp_path / "cache")
    assert cache.signature["depth_stored"] is True
    depths = {item["scene"]: item["depth"] for item in cache}
    assert (depths["scene0"][0, 32, 48] == WALL / 2) and (depths["scene1"] == 0).all()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["depth"]) for m in metrics if "loss" in m)


def test_a_model_folder_states_its_scene_scale_and_older_folders_read_as_path():
    from backend.models.config import SCENE_SCALES
    from backend.models.model_dir import read_config, read_manifest
    from backend.pipelines.wonderland import DEFAULT_MODEL, SHIPPED_DIR
    folder = SHIPPED_DIR / DEFAULT_MODEL
    manifest = read_manifest(folder)            # read_config leaves out the optional parts' keys (depth_prior)
    assert manifest["scene_scale"] in SCENE_SCALES
    assert read_config(folder, manifest).scene_scale == manifest["scene_scale"]
    older = {k: v for k, v in manifest.items() if k != "scene_scale"}
    assert read_config(folder, older).scene_scale == "path"
    with pytest.raises(InputError, match="'scene_scale' is \"feet\", this backend knows path, metric") as error:
        read_config(folder, {**manifest, "scene_scale": "feet"})
    assert "train-lrm --scene-scale" in error.value.hint


def test_a_metric_lalrm_learns_the_wall_in_world_units(tmp_path):
    """scene_scale "metric": the clip keeps the world's unit (s = 1, the cameras 1 unit apart), and the depth
    term pulls the rendered depth to the wall at WALL itself, not WALL / path length."""
    batch = collate([WallClips()[0]])
    inputs, _, norm = clip_cameras(batch["K"][0], batch["c2w"][0], 32, 32, list(range(5)), by_path=False)
    assert norm.scale == 1.0 and torch.allclose(inputs.c2w[:, 0, 3], STEP * torch.arange(5.0))
    config = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=25, lr=1e-2, lr_min=1e-3, weight_decay=0.0,
                         checkpoint_every=0, seed=0)
    torch.manual_seed(0)
    trainer = Trainer(config, lambda: LaLRM(MICRO5))
    objective = LaLRMObjective(trainer.unwrapped_model, ReconstructionLoss(LossWeights(perceptual=0, opacity=0,
                               depth=1.0)), LRMData(views=2, renderer="torch", scene_scale="metric"))
    trainer.fit(WallClips(), objective, collate_fn=collate)
    with torch.no_grad():
        g = predict_clip_gaussians(trainer.unwrapped_model, trainer.unwrapped_model, MICRO5, batch["latents"],
                                   [inputs])[0]
        out = render(g, inputs[[0]], backend="torch")
    z = out.depth[0, ..., 0][out.alpha[0, ..., 0] > 0.01]
    assert abs(float(z.median()) / WALL - 1) < 0.25, float(z.median())   # path-normalized it would be 1.5
    with pytest.raises(InputError, match="scene scale 'feet' is unknown"):
        LRMData(scene_scale="feet")


def test_train_lrm_exports_the_frame_it_trained_in_and_generate_uses_it(tmp_path):
    """--scene-scale metric reaches wonderland.json; a metric model's Gaussians keep the world's unit, so twice
    the move is not twice the scene, where a path model's scene grows with the move exactly."""
    import dataclasses

    from backend.cameras import CameraBatch
    from backend.models.model_dir import read_manifest, write_vae
    from backend.pipelines.wonderland import generate, load_pipeline

    for i in range(2):
        write_scene(tmp_path / "data" / f"scene{i}", seed=i)
    write_vae(tmp_path / "model", load_pipeline("tiny").vae)
    assert train_lrm_cli("--data", tmp_path / "data", "--out", tmp_path / "run", "--model-config", "tiny",
                         "--vae", tmp_path / "model", "--steps", "1", "--views", "2", "--stride", "1", "1",
                         "--perceptual-weight", "0", "--val-fraction", "0", "--checkpoint-every", "0",
                         "--scene-scale", "metric", "--export", tmp_path / "model") == 0
    assert read_manifest(tmp_path / "model")["scene_scale"] == "metric"

    tiny = load_pipeline("tiny")
    c2w = torch.eye(4).repeat(3, 1, 1)
    c2w[:, 0, 3] = torch.tensor([0.0, 0.2, 0.4])
    K = torch.tensor([[80.0, 0, 48], [0, 80, 32], [0, 0, 1]]).repeat(3, 1, 1)
    image = np.random.default_rng(0).random((64, 96, 3), dtype=np.float32)

    def means(pipe, move: float):
        moved = c2w.clone()
        moved[:, :3, 3] *= move
        cams = CameraBatch(K, moved, 96, 64)
        result = generate(pipe, image, cams, preview_count=0, detail_size=0, prune_opacity=0)
        return result.gaussians.means, result.info

    path1, _ = means(tiny, 1.0)
    path2, info = means(tiny, 2.0)
    assert info["scene_scale"] == "path" and torch.allclose(path2, 2 * path1, atol=1e-4)
    metric = dataclasses.replace(tiny, config=dataclasses.replace(tiny.config, scene_scale="metric"))
    metric1, _ = means(metric, 1.0)
    metric2, info = means(metric, 2.0)
    assert info["scene_scale"] == "metric" and info["normalization_scale"] == 1.0
    assert not torch.allclose(metric2, 2 * metric1, atol=1e-2)


def test_bench_scene_scale_reports_the_spread_in_metres_and_in_units_of_the_move(tmp_path, capsys, bench_scene_scale):
    for i, wall in enumerate((2.0, 4.0)):      # the same move (0.8 units), rooms of two sizes
        write_scene(tmp_path / f"scene{i}")
        (tmp_path / f"scene{i}" / "depth").mkdir()
        np.save(tmp_path / f"scene{i}" / "depth" / "0000.npy", np.full((64, 96), wall, np.float32))
    write_scene(tmp_path / "pan")              # a camera that only turns: no move length, so it is skipped
    cameras = json.loads((tmp_path / "pan" / "cameras.json").read_text())
    for entry in cameras["frames"]:
        entry["c2w"][0][3] = 0.0
    (tmp_path / "pan" / "cameras.json").write_text(json.dumps(cameras))
    (tmp_path / "pan" / "depth").mkdir()
    np.save(tmp_path / "pan" / "depth" / "0000.npy", np.full((64, 96), 50.0, np.float32))
    assert bench_scene_scale.main(["--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 scenes" in out and "1 skipped" in out and "median 0.8 m" in out
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in out.splitlines() if line.startswith("| ")}
    assert float(rows["metres"][0]) == pytest.approx(np.sqrt(8), rel=2e-3)            # geometric mean of 2 and 4
    assert float(rows["normalized by the move"][0]) == pytest.approx(np.sqrt(8) / 0.8, rel=2e-3)
    assert float(rows["metres"][1]) == pytest.approx(np.log(2) / 2, abs=1e-3)          # std of log 2, log 4


def test_bench_scene_scale_measures_where_a_path_scale_model_gets_its_scale(tmp_path, capsys, bench_scene_scale):
    """A path-scale model's depth follows the move by construction: b must come out 1; the true-latent and
    full-pipeline rows are both there, with finite ratios."""
    make_plane_scene(tmp_path / "scene_0000001", frames=9)
    assert bench_scene_scale.main(["--data", str(tmp_path), "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in out.splitlines() if line.startswith("| ")}
    for name in ("the video model's (full pipeline)", "the real frames'"):
        assert np.isfinite(float(rows[name][0])) and float(rows[name][1]) >= 0
    b = float(out.split("b = ")[1].split()[0])
    assert b == pytest.approx(1.0, abs=2e-3)
