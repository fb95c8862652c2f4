"""Clip sampling (strides, crops, K that follows the crop, determinism) and the VAE latent cache, on
small scenes whose frames show a dot where a known 3D point projects."""
from pathlib import Path

import camera_geometry
import numpy as np
import pytest
import torch
from PIL import Image

from backend.cameras import CameraBatch, fit_cameras
from backend.data import ClipDataset, Scene, collate, item_cameras
from backend.data.latent_cache import (LatentCacheDataset, build_latent_cache, clip_generator, encode_video,
                                       vae_config_hash)
from backend.errors import InputError
from backend.models.video import VideoModelConfig, build_vae

POINT = np.array([0.3, 4.0, 0.2])


def look_at(eye, target=(0.0, 4.0, 0.0)) -> np.ndarray:
    return camera_geometry.look_at(eye, target)


def project(K, c2w, point=POINT) -> np.ndarray:
    return camera_geometry.project(K, c2w, point)


def make_scene(directory: Path, name: str, count: int, width: int, height: int, suffix: str = ".png",
               texture: bool = False) -> Scene:
    """`count` frames of a camera sliding sideways; each frame shows a white disk where POINT projects,
    on black or (texture) on seeded noise."""
    f = 0.8 * width
    K = np.array([[f, 0, width / 2 + 1.5], [0, f, height / 2 - 1.0], [0, 0, 1]])
    c2ws = [look_at((0.05 * n - 0.2, 0.0, 0.02 * n)) for n in range(count)]
    radius = width / 30
    v, u = np.mgrid[0:height, 0:width] + 0.5
    frames = []
    for n, c2w in enumerate(c2ws):
        pu, pv = project(K, c2w)
        disk = ((u - pu) ** 2 + (v - pv) ** 2 <= radius ** 2).astype(np.uint8) * 255
        if texture:
            disk = np.maximum(disk, np.random.default_rng(n).integers(0, 128, disk.shape, dtype=np.uint8))
        path = directory / name / f"{n:04d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.repeat(disk[..., None], 3, axis=2)).save(path, quality=95)
        frames.append(path)
    cameras = CameraBatch(torch.tensor(np.stack([K] * count), dtype=torch.float32),
                          torch.tensor(np.stack(c2ws), dtype=torch.float32), width, height, list(range(count)))
    return Scene(name, frames, cameras, str(directory / name))


def centroid(frame: torch.Tensor) -> np.ndarray:
    """Intensity-weighted centre (pixel-edge coordinates) of the bright blob in a [3, H, W] frame."""
    weight = (frame.mean(0) - 0.1).clamp(min=0).numpy()
    v, u = np.mgrid[0:weight.shape[0], 0:weight.shape[1]] + 0.5
    return np.array([(u * weight).sum(), (v * weight).sum()]) / weight.sum()


@pytest.fixture
def scenes(tmp_path):
    return [make_scene(tmp_path, "png", 10, 120, 90), make_scene(tmp_path, "jpeg", 12, 480, 360, ".jpg")]


def test_items_have_the_documented_shapes_and_K_follows_the_random_crop(scenes):
    data = ClipDataset(scenes, num_frames=3, height=24, width=36, stride=(1, 3), crop_scale=(0.8, 1.0), seed=1)
    assert len(data) == 2 and data.problems == []
    for epoch in range(3):
        data.set_epoch(epoch)
        for index in range(len(data)):
            item = data[index]
            assert item["frames"].shape == (3, 3, 24, 36) and item["frames"].dtype == torch.float32
            assert 0.0 <= item["frames"].min() and item["frames"].max() <= 1.0
            assert item["K"].shape == (3, 3, 3) and item["c2w"].shape == (3, 4, 4)
            assert item["scene"] == scenes[index].name and item["index"] == index
            for f in range(3):
                # the dot drawn at POINT's projection in the source frame is where the clip's camera projects it
                expected = project(item["K"][f].double().numpy(), item["c2w"][f].double().numpy())
                assert np.abs(centroid(item["frames"][f]) - expected).max() < 0.12, (epoch, index, f)


def test_strides_starts_and_crops_vary_within_their_ranges(scenes):
    data = ClipDataset(scenes, num_frames=3, height=24, width=36, stride=(1, 3), crop_scale=(0.5, 1.0), seed=0)
    strides, widths = set(), set()
    for epoch in range(40):
        data.set_epoch(epoch)
        scene, indices, box = data.plan(0)
        step = np.diff(indices)
        assert len(set(step)) == 1 and 1 <= step[0] <= 3 and 0 <= indices[0] and indices[-1] < len(scene.frames)
        x0, y0, w, h = box
        assert w / h == pytest.approx(1.5) and 0.5 * 120 - 1e-9 <= w <= 120 and h <= 80
        assert 0 <= x0 <= 120 - w and 0 <= y0 <= 90 - h
        strides.add(int(step[0]))
        widths.add(round(w))
    assert strides == {1, 2, 3}
    assert len(widths) > 10


def test_same_seed_and_epoch_give_identical_items_and_set_epoch_reshuffles(scenes):
    def items(seed, epoch):
        data = ClipDataset(scenes, num_frames=3, height=24, width=36, seed=seed)
        data.set_epoch(epoch)
        return [data[i] for i in range(len(data))]

    a, b, c, d = items(7, 2), items(7, 2), items(7, 3), items(8, 2)
    for x, y in zip(a, b):
        assert torch.equal(x["frames"], y["frames"]) and torch.equal(x["K"], y["K"])
        assert torch.equal(x["frame_indices"], y["frame_indices"])
    def differs(p, q):
        return any(not torch.equal(x["K"], y["K"]) or not torch.equal(x["frame_indices"], y["frame_indices"])
                   for x, y in zip(p, q))

    assert differs(a, c) and differs(a, d)


def test_fixed_mode_uses_the_smallest_stride_and_the_centred_crop_in_every_epoch(scenes):
    data = ClipDataset(scenes, num_frames=3, height=24, width=36, stride=(2, 4), seed=3, fixed=True,
                       clips_per_scene=3)
    assert len(data) == 6
    starts = [data.plan(i)[1][0] for i in range(3)]
    assert starts == [0, 2, 5]  # spread evenly over 10 frames: room for 10 - 5 = 5 more starts
    first = data[1]
    assert first["frame_indices"].tolist() == [2, 4, 6]
    expected = fit_cameras(scenes[0].cameras[2:7:2], 36, 24)  # largest centred crop, as inference does
    torch.testing.assert_close(first["K"], expected.K)
    torch.testing.assert_close(first["c2w"], scenes[0].cameras.c2w[2:7:2])
    data.set_epoch(5)
    again = data[1]
    assert torch.equal(again["frames"], first["frames"]) and torch.equal(again["K"], first["K"])


def test_short_scenes_are_skipped_with_a_problem_and_none_left_is_an_input_error(tmp_path, scenes):
    short = make_scene(tmp_path, "short", 4, 60, 40)
    data = ClipDataset(scenes + [short], num_frames=3, height=24, width=36, stride=(2, 3))
    assert [s.name for s in data.scenes] == ["png", "jpeg"]
    [problem] = data.problems
    assert "scene short has 4 frames, fewer than the 5" in problem.reason and problem.path == Path(short.source)
    with pytest.raises(InputError, match="none of the 1 scene"):
        ClipDataset([short], num_frames=3, height=24, width=36, stride=(2, 3))
    with pytest.raises(InputError, match="stride range"):
        ClipDataset(scenes, num_frames=3, height=24, width=36, stride=(3, 2))


def test_collate_stacks_items_and_item_cameras_matches_the_frames(scenes):
    data = ClipDataset(scenes, num_frames=3, height=24, width=36, fixed=True)
    batch = collate([data[0], data[1]])
    assert batch["frames"].shape == (2, 3, 3, 24, 36) and batch["K"].shape == (2, 3, 3, 3)
    assert batch["c2w"].shape == (2, 3, 4, 4) and batch["scene"] == ["png", "jpeg"]
    assert batch["index"].tolist() == [0, 1] and batch["frame_indices"].tolist() == [[0, 1, 2]] * 2
    cams = item_cameras(data[1])
    assert (cams.width, cams.height, cams.frames) == (36, 24, [0, 1, 2])
    torch.testing.assert_close(cams.K, data[1]["K"])


def test_frame_of_another_size_than_its_scene_is_an_input_error(tmp_path):
    scene = make_scene(tmp_path, "odd", 3, 60, 40)
    Image.new("RGB", (30, 20)).save(scene.frames[1])
    data = ClipDataset([scene], num_frames=3, height=24, width=36, fixed=True)
    with pytest.raises(InputError, match="is 30x20, but its scene's cameras are for 60x40"):
        data[0]


# --- latent cache ----------------------------------------------------------------------------------

def test_latent_cache_round_trip_equals_encoding_on_the_fly_and_refuses_another_vae(tmp_path):
    config = VideoModelConfig.tiny()
    torch.manual_seed(0)
    vae = build_vae(config)
    # textured: on flat black frames a random VAE's group norms amplify float rounding between batch sizes
    scenes = [make_scene(tmp_path, "a", 10, 120, 90, texture=True),
              make_scene(tmp_path, "b", 9, 96, 64, texture=True)]
    data = ClipDataset(scenes, config.num_frames, config.height, config.width, fixed=True)
    progress = []

    build_latent_cache(vae, data, tmp_path / "cache", batch_size=2, on_progress=lambda *p: progress.append(p))

    assert progress == [(0, 2), (2, 2)]
    cache = LatentCacheDataset(tmp_path / "cache", vae=vae, num_frames=9, height=64, width=96)
    assert len(cache) == 2 and cache.latent_shape == config.latent_shape
    for index in range(2):
        item, clip = cache[index], data[index]
        assert item["scene"] == clip["scene"] and item["index"] == index
        expected = encode_video(vae, clip["frames"][None], [clip_generator(0, index)])[0]
        assert item["latents"].shape == config.latent_shape
        torch.testing.assert_close(item["latents"], expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(item["frames"], clip["frames"])  # stored as uint8, exactly the clip's pixels
        assert torch.equal(item["K"], clip["K"]) and torch.equal(item["c2w"], clip["c2w"])
    assert not torch.allclose(cache[0]["latents"], cache[1]["latents"])

    # building again re-uses every finished clip
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("clip_*.safetensors")}
    progress.clear()
    build_latent_cache(vae, data, tmp_path / "cache", on_progress=lambda *p: progress.append(p))
    assert progress == [(2, 2)]
    assert files == {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("clip_*.safetensors")}

    assert vae_config_hash(config.vae) == vae_config_hash(vae)
    other = VideoModelConfig.tiny()
    other.vae["scaling_factor"] = 0.5
    with pytest.raises(InputError, match="vae_config_sha256"):
        LatentCacheDataset(tmp_path / "cache", vae=other.vae)
    torch.manual_seed(1)
    with pytest.raises(InputError, match="vae_weights"):
        LatentCacheDataset(tmp_path / "cache", vae=build_vae(config))
    with pytest.raises(InputError, match="height is 64 in the cache, 32 expected"):
        LatentCacheDataset(tmp_path / "cache", height=32)
    with pytest.raises(InputError, match="no finished latent cache"):
        LatentCacheDataset(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="fixed=True"):
        build_latent_cache(vae, ClipDataset(scenes, 9, 64, 96), tmp_path / "random")
