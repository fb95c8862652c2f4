import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from backend.cameras import (CameraBatch, Normalization, cameras_from_dict, cameras_to_dict, center_crop_box,
                             crop_resize_intrinsics, fit_cameras, load_cameras, normalize, resample,
                             save_cameras)
from backend.errors import InputError
from backend.gaussians import Gaussians
from backend.rotations import quat_to_rotmat, rotmat_to_quat


def rot_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)


def make_batch(n: int = 4, seed: int = 0, dtype=torch.float32, width: int = 72, height: int = 48) -> CameraBatch:
    """Cameras with random rotations and positions and slightly different intrinsics."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = quat_to_rotmat(q)
    c2w[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64) * 2
    K = torch.tensor([[60.0, 0, width / 2], [0, 61.0, height / 2], [0, 0, 1]], dtype=torch.float64).repeat(n, 1, 1)
    K[:, 0, 0] += torch.arange(n)
    return CameraBatch(K.to(dtype), c2w.to(dtype), width, height, list(range(10, 10 + n)))


def valid_dict() -> dict:
    return cameras_to_dict(make_batch(3))


# --- cameras.json ---------------------------------------------------------------------------------

def test_save_load_round_trip_is_bitwise(tmp_path):
    batch = make_batch(5)
    path = tmp_path / "cameras.json"
    save_cameras(batch, path)
    assert [p.name for p in tmp_path.iterdir()] == ["cameras.json"]  # no temp file left behind
    loaded = load_cameras(path)
    assert loaded.K.dtype == torch.float32 and loaded.c2w.dtype == torch.float32
    assert torch.equal(loaded.K, batch.K) and torch.equal(loaded.c2w, batch.c2w)
    assert (loaded.width, loaded.height, loaded.frames) == (72, 48, [10, 11, 12, 13, 14])
    d = json.loads(path.read_text())
    assert d["frames"][0]["K"][0][2] == 36.0 and d["frames"][2]["frame"] == 12


def test_frame_numbers_default_to_index():
    d = valid_dict()
    for f in d["frames"]:
        del f["frame"]
    assert cameras_from_dict(d).frames == [0, 1, 2]


def _set(path, value):
    def mutate(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _scale_rotation(d):
    for row in d["frames"][1]["c2w"][:3]:
        row[:3] = [2 * x for x in row[:3]]


def _mirror(d):
    for row in d["frames"][1]["c2w"][:3]:
        row[0] = -row[0]


def _shear(d):
    d["frames"][1]["c2w"][0][1] += 0.1


BAD_CASES = {
    "no width": (lambda d: d.pop("width"), ["'width'", "got null"]),
    "width float": (_set(["width"], 72.5), ["'width'", "positive integer"]),
    "height zero": (_set(["height"], 0), ["'height'", "positive integer"]),
    "no frames": (_set(["frames"], []), ["'frames'", "non-empty"]),
    "missing K": (lambda d: d["frames"][1].pop("K"), ["frames[1]", "'K'"]),
    "K shape": (_set(["frames", 1, "K"], [[1, 0, 0], [0, 1, 0]]), ["frames[1]", ".K", "3x3"]),
    "K last row": (_set(["frames", 1, "K", 2], [0, 0, 2]), ["frames[1]", ".K last row"]),
    "fx negative": (_set(["frames", 1, "K", 0, 0], -60.0), ["frames[1]", "fx = -60.0", "> 0"]),
    "fy zero": (_set(["frames", 2, "K", 1, 1], 0), ["frames[2]", "fy = 0"]),
    "nan": (_set(["frames", 1, "c2w", 0, 3], float("nan")), ["frames[1]", "c2w[0][3]", "finite"]),
    "infinite K": (_set(["frames", 0, "K", 0, 2], float("inf")), ["frames[0]", "K[0][2]", "finite"]),
    "string": (_set(["frames", 1, "c2w", 2, 2], "1"), ["frames[1]", "c2w[2][2]", "number"]),
    "c2w last row": (_set(["frames", 1, "c2w", 3], [0, 0, 1, 1]), ["frames[1]", "c2w last row"]),
    "scaled": (_scale_rotation, ["frames[1]", "not orthonormal", "det = 8"]),
    "mirrored": (_mirror, ["frames[1]", "determinant -1"]),
    "sheared": (_shear, ["frames[1]", "not orthonormal"]),
    "frame number": (_set(["frames", 1, "frame"], "one"), ["frames[1].frame", "integer"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_validation_errors_name_file_frame_and_field(tmp_path, case):
    mutate, expected = BAD_CASES[case]
    d = valid_dict()
    mutate(d)
    path = tmp_path / "cams.json"
    path.write_text(json.dumps(d))
    with pytest.raises(InputError) as info:
        load_cameras(path)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message, (part, message)
    assert info.value.hint


def test_top_level_must_be_an_object():
    with pytest.raises(InputError, match="in.json: top level must be an object"):
        cameras_from_dict([valid_dict()], source="in.json")


def test_frame_number_appears_in_message():
    d = valid_dict()
    d["frames"][1]["K"][0][0] = -1.0
    with pytest.raises(InputError, match=r"frames\[1\] \(frame 11\)"):
        cameras_from_dict(d, source="x.json")


def test_missing_file_and_not_json(tmp_path):
    with pytest.raises(InputError, match="does not exist") as info:
        load_cameras(tmp_path / "nope.json")
    assert "nope.json" in str(info.value)
    bad = tmp_path / "bad.json"
    bad.write_text('{"width": 72,\n "height": }')
    with pytest.raises(InputError, match=r"not valid JSON \(line 2, column 12") as info:
        load_cameras(bad)
    assert "bad.json" in str(info.value)


def test_slightly_non_orthonormal_rotation_is_accepted():
    d = valid_dict()
    d["frames"][1]["c2w"][0][0] += 1e-5  # what 6-digit hand-written values look like
    assert len(cameras_from_dict(d)) == 3


# --- resample -------------------------------------------------------------------------------------

def test_resample_hand_computed_midpoints():
    K = torch.tensor([[[100.0, 0, 40], [0, 100, 30], [0, 0, 1]], [[200.0, 0, 50], [0, 200, 20], [0, 0, 1]]])
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[1, :3, :3] = rot_z(math.pi / 2).float()
    c2w[1, :3, 3] = torch.tensor([2.0, -4.0, 6.0])
    out = resample(CameraBatch(K, c2w, 80, 60, [1, 5]), 3)
    assert len(out) == 3
    torch.testing.assert_close(out.c2w[1, :3, 3], torch.tensor([1.0, -2.0, 3.0]))
    torch.testing.assert_close(out.c2w[1, :3, :3], rot_z(math.pi / 4).float())
    torch.testing.assert_close(out.K[1], torch.tensor([[150.0, 0, 45], [0, 150, 25], [0, 0, 1]]))
    torch.testing.assert_close(out.c2w[1, 3], torch.tensor([0.0, 0, 0, 1]))
    assert out.frames == [1, 3, 5]
    # Quarter points with 5 outputs.
    out = resample(CameraBatch(K, c2w, 80, 60, [1, 5]), 5)
    torch.testing.assert_close(out.c2w[3, :3, 3], torch.tensor([1.5, -3.0, 4.5]))
    torch.testing.assert_close(out.c2w[1, :3, :3], rot_z(math.pi / 8).float())


@pytest.mark.parametrize("n", [1, 2, 3, 7, 49])
def test_resample_keeps_first_and_last_frames_bitwise(n):
    batch = make_batch(7, seed=3)
    out = resample(batch, n)
    assert out.K.shape == (n, 3, 3) and out.c2w.shape == (n, 4, 4) and out.c2w.dtype == torch.float32
    assert torch.equal(out.c2w[0], batch.c2w[0]) and torch.equal(out.K[0], batch.K[0])
    if n > 1:
        assert torch.equal(out.c2w[-1], batch.c2w[-1]) and torch.equal(out.K[-1], batch.K[-1])
    R = out.c2w[:, :3, :3].double()
    torch.testing.assert_close(R.transpose(-1, -2) @ R, torch.eye(3, dtype=torch.float64).expand(n, 3, 3),
                               atol=1e-6, rtol=0)


def test_resample_same_count_returns_same_poses_and_subsamples_exactly():
    batch = make_batch(9, seed=4)
    same = resample(batch, 9)
    assert torch.equal(same.c2w, batch.c2w) and torch.equal(same.K, batch.K) and same.frames == batch.frames
    fewer = resample(batch, 5)  # every other source camera
    assert torch.equal(fewer.c2w, batch.c2w[::2]) and fewer.frames == batch.frames[::2]


def test_resample_single_camera_repeats():
    batch = make_batch(1, seed=5)
    out = resample(batch, 4)
    assert torch.equal(out.c2w, batch.c2w.expand(4, 4, 4)) and torch.equal(out.K, batch.K.expand(4, 3, 3))


# --- crop and resize ------------------------------------------------------------------------------

def test_center_crop_box_values():
    assert center_crop_box(720, 480, 480, 480) == (120.0, 0.0, 480.0, 480.0)
    assert center_crop_box(480, 720, 720, 480) == (0.0, 200.0, 480.0, 320.0)
    assert center_crop_box(720, 480, 360, 240) == (0.0, 0.0, 720.0, 480.0)
    x0, y0, w, h = center_crop_box(1000, 333, 720, 480)
    assert (y0, h) == (0.0, 333.0) and w == pytest.approx(499.5) and x0 == pytest.approx(250.25)


def project(K: torch.Tensor, points_cam: torch.Tensor) -> torch.Tensor:
    p = points_cam @ K.T
    return p[:, :2] / p[:, 2:]


def test_crop_resize_intrinsics_matches_image_mapping():
    K = torch.tensor([[500.0, 0.0, 357.3], [0.0, 520.0, 244.1], [0.0, 0.0, 1.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(20, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 5.0], dtype=torch.float64)
    box = (101.5, 12.25, 400.0, 300.0)
    dst_w, dst_h = 160, 120
    uv = project(K, pts)
    mapped = torch.stack([(uv[:, 0] - box[0]) * dst_w / box[2], (uv[:, 1] - box[1]) * dst_h / box[3]], -1)
    torch.testing.assert_close(project(crop_resize_intrinsics(K, box, dst_w, dst_h), pts), mapped)


def test_fit_cameras_centred_principal_point_stays_centred():
    batch = make_batch(2, width=720, height=480)
    fit = fit_cameras(batch, 64, 64)
    assert (fit.width, fit.height) == (64, 64)
    torch.testing.assert_close(fit.K[:, 0, 2], torch.full((2,), 32.0))
    torch.testing.assert_close(fit.K[:, 1, 2], torch.full((2,), 32.0))
    torch.testing.assert_close(fit.K[:, 1, 1], torch.full((2,), 61.0 * 64 / 480))
    assert torch.equal(fit.c2w, batch.c2w)


def test_pillow_resize_with_the_same_box_moves_a_blob_where_k_says():
    """The image pipeline resizes with Pillow and this box; a blob's centroid lands where K projects."""
    src_w, src_h, dst_w, dst_h = 90, 60, 32, 32
    bx, by = 52.3, 27.8  # blob centre, pixel-edge coordinates
    ys, xs = np.mgrid[0:src_h, 0:src_w] + 0.5
    blob = np.exp(-((xs - bx) ** 2 + (ys - by) ** 2) / (2 * 3.0 ** 2)).astype(np.float32)
    box = center_crop_box(src_w, src_h, dst_w, dst_h)
    out = np.asarray(Image.fromarray(blob, mode="F").resize(
        (dst_w, dst_h), Image.Resampling.BILINEAR, box=(box[0], box[1], box[0] + box[2], box[1] + box[3])))
    oy, ox = np.mgrid[0:dst_h, 0:dst_w] + 0.5
    centroid = np.array([(ox * out).sum(), (oy * out).sum()]) / out.sum()
    # A camera whose principal point sits on the blob (ray straight ahead) maps it through the new K.
    K = torch.tensor([[80.0, 0, bx], [0, 80.0, by], [0, 0, 1]], dtype=torch.float64)
    K2 = crop_resize_intrinsics(K, box, dst_w, dst_h)
    np.testing.assert_allclose(centroid, [K2[0, 2].item(), K2[1, 2].item()], atol=0.02)


# --- normalization --------------------------------------------------------------------------------

def test_normalize_camera0_identity_and_radius():
    batch = make_batch(6, seed=7)
    norm, nz = normalize(batch, radius=2.0)
    assert torch.equal(norm.c2w[0], torch.eye(4))
    distances = norm.c2w[:, :3, 3].double().norm(dim=-1)
    assert distances.max().item() == pytest.approx(2.0, abs=1e-6)
    world = batch.c2w.double()
    expected_scale = (world[:, :3, 3] - world[0, :3, 3]).norm(dim=-1).max().item() / 2.0
    assert nz.scale == pytest.approx(expected_scale, rel=1e-6)
    # Relative poses are preserved: camera i seen from camera 0.
    rel = torch.linalg.inv(world[0]) @ world[3]
    torch.testing.assert_close(norm.c2w[3, :3, :3].double(), rel[:3, :3], atol=1e-6, rtol=0)
    torch.testing.assert_close(norm.c2w[3, :3, 3].double(), rel[:3, 3] / nz.scale, atol=1e-6, rtol=0)
    assert torch.equal(norm.K, batch.K)


def test_normalize_inverse_for_cameras_and_points():
    batch = make_batch(5, seed=8)
    norm, nz = normalize(batch)
    back = nz.cameras_to_world(norm)
    torch.testing.assert_close(back.c2w, batch.c2w, atol=1e-5, rtol=0)
    pts = torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(nz.points_to_world(nz.points_to_normalized(pts)), pts)
    # Camera centres map through points_to_world as well.
    torch.testing.assert_close(nz.points_to_world(norm.c2w[:, :3, 3]), batch.c2w[:, :3, 3], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["pure rotation", "single camera"])
def test_no_translation_gives_unit_scale(kind):
    batch = make_batch(1 if kind == "single camera" else 4, seed=9)
    batch.c2w[:, :3, 3] = torch.tensor([1.0, 2.0, 3.0])
    norm, nz = normalize(batch)
    assert nz.scale == 1.0
    assert norm.c2w[:, :3, 3].abs().max().item() < 1e-6
    torch.testing.assert_close(nz.cameras_to_world(norm).c2w, batch.c2w)


def covariance(g: Gaussians) -> torch.Tensor:
    R = quat_to_rotmat(g.quats)
    S = torch.diag_embed(g.scales)
    return R @ S @ S @ R.transpose(-1, -2)


def test_gaussians_to_world_transforms_positions_and_covariances():
    batch = make_batch(4, seed=10, dtype=torch.float64)
    norm, nz = normalize(batch)
    g = torch.Generator().manual_seed(1)
    n = 7
    gs = Gaussians(means=torch.randn(n, 3, generator=g, dtype=torch.float64),
                   log_scales=torch.randn(n, 3, generator=g, dtype=torch.float64) - 2,
                   quats=torch.randn(n, 4, generator=g, dtype=torch.float64) * 2,
                   opacity_logits=torch.randn(n, generator=g, dtype=torch.float64),
                   sh0=torch.randn(n, 3, generator=g, dtype=torch.float64),
                   sh_rest=torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    gs.means.requires_grad_(True)
    world = nz.gaussians_to_world(gs)
    R0, t0, s = batch.c2w[0, :3, :3], batch.c2w[0, :3, 3], nz.scale
    torch.testing.assert_close(world.means, gs.means @ (s * R0).T + t0)
    torch.testing.assert_close(covariance(world), (s * R0) @ covariance(gs) @ (s * R0).T)
    torch.testing.assert_close(world.quats.norm(dim=-1), gs.quats.norm(dim=-1))  # raw norm kept
    assert world.opacity_logits is gs.opacity_logits and world.sh0 is gs.sh0 and world.sh_rest is gs.sh_rest
    torch.testing.assert_close(nz.points_to_normalized(world.means), gs.means)
    # A Gaussian centred on camera k in normalized space lands on camera k in the world.
    on_cam = nz.points_to_world(norm.c2w[:, :3, 3])
    torch.testing.assert_close(on_cam, batch.c2w[:, :3, 3])
    world.means.sum().backward()
    torch.testing.assert_close(gs.means.grad, (s * R0).sum(0).expand(n, 3))


def test_normalization_works_in_float32_on_batch_device():
    batch = make_batch(3, seed=11)
    norm, nz = normalize(batch)
    assert norm.c2w.dtype == torch.float32 and nz.c2w0.dtype == torch.float64
    x = torch.randn(4, 3)
    assert nz.points_to_world(x).dtype == torch.float32
    q = rotmat_to_quat(norm.c2w[:, :3, :3])
    torch.testing.assert_close(q[0], torch.tensor([1.0, 0, 0, 0]))


def test_normalization_is_a_plain_dataclass():
    nz = Normalization(c2w0=torch.eye(4, dtype=torch.float64), scale=2.0)
    torch.testing.assert_close(nz.points_to_world(torch.tensor([[1.0, 0, 0]])), torch.tensor([[2.0, 0, 0]]))
