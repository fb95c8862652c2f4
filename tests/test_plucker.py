import math

import pytest
import torch

from backend.cameras import CameraBatch
from backend.plucker import group_frames_for_latents, pixel_rays, plucker_embedding, scale_intrinsics
from backend.rotations import quat_to_rotmat


def make_cameras(n=3, width=72, height=48, dtype=torch.float64, seed=0, at_origin=False) -> CameraBatch:
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = quat_to_rotmat(torch.randn(n, 4, generator=g, dtype=torch.float64))
    if not at_origin:
        c2w[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64) * 3
    K = torch.tensor([[50.0, 0, 37.0], [0, 55.0, 22.5], [0, 0, 1]], dtype=torch.float64).repeat(n, 1, 1)
    K[:, 0, 0] += 10 * torch.arange(n)
    return CameraBatch(K.to(dtype), c2w.to(dtype), width, height)


def test_scale_intrinsics_values():
    K = torch.tensor([[100.0, 0, 36.0], [0, 90.0, 24.0], [0, 0, 1]])
    out = scale_intrinsics(K, 72, 48, 18, 16)
    torch.testing.assert_close(out, torch.tensor([[25.0, 0, 9.0], [0, 30.0, 8.0], [0, 0, 1]]))
    assert torch.equal(K[0, 0], torch.tensor(100.0))  # input untouched


@pytest.mark.parametrize("height,width", [(48, 72), (4, 6), (5, 9)])
def test_rays_project_back_to_pixel_centres(height, width):
    cams = make_cameras()
    o, d = pixel_rays(cams, height, width)
    assert o.shape == d.shape == (3, height, width, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(3, height, width, dtype=torch.float64))
    # Project a point on each ray with the original K and w2c: it lands on the grid's pixel centre,
    # expressed in the cameras' own width x height pixels.
    X = o + 2.5 * d
    w2c = cams.w2c
    x_cam = torch.einsum("nij,nhwj->nhwi", w2c[:, :3, :3], X) + w2c[:, None, None, :3, 3]
    assert (x_cam[..., 2] > 0).all()  # in front of the camera
    p = torch.einsum("nij,nhwj->nhwi", cams.K, x_cam)
    uv = p[..., :2] / p[..., 2:]
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    expected = torch.stack([(u + 0.5) * cams.width / width, (v + 0.5) * cams.height / height], -1)
    torch.testing.assert_close(uv, expected.expand_as(uv))


def test_moment_is_the_same_for_every_point_on_the_ray():
    cams = make_cameras(seed=1)
    emb = plucker_embedding(cams, 4, 6)
    assert emb.shape == (3, 6, 4, 6) and emb.dtype == torch.float64
    o, d = pixel_rays(cams, 4, 6)
    moment = emb[:, :3].permute(0, 2, 3, 1)
    torch.testing.assert_close(emb[:, 3:].permute(0, 2, 3, 1), d)
    for lam in (-1.0, 0.7, 10.0):
        torch.testing.assert_close(torch.cross(o + lam * d, d, dim=-1), moment)
    # The moment is orthogonal to the direction and its norm is the ray's distance from the origin.
    torch.testing.assert_close((moment * d).sum(-1), torch.zeros(3, 4, 6, dtype=torch.float64))
    foot = o - (o * d).sum(-1, keepdim=True) * d  # closest point of the ray to the world origin
    torch.testing.assert_close(moment.norm(dim=-1), foot.norm(dim=-1))


def test_principal_pixel_of_odd_grid_looks_down_camera_z():
    cams = make_cameras(width=7, height=5)
    cams.K[:, 0, 2], cams.K[:, 1, 2] = 3.5, 2.5  # centre of pixel (3, 2)
    _, d = pixel_rays(cams, 5, 7)
    torch.testing.assert_close(d[:, 2, 3], cams.c2w[:, :3, 2])
    # One pixel to the right tilts by atan(1/fx) towards camera x.
    cos = (d[:, 2, 4] * cams.c2w[:, :3, 2]).sum(-1)
    torch.testing.assert_close(cos, torch.cos(torch.atan(1 / cams.K[:, 0, 0])))
    assert ((d[:, 2, 4] * cams.c2w[:, :3, 0]).sum(-1) > 0).all()


def test_moment_zero_for_camera_at_origin():
    emb = plucker_embedding(make_cameras(at_origin=True), 4, 6)
    assert emb[:, :3].abs().max().item() == 0.0
    assert emb[:, 3:].abs().max().item() > 0.5


def test_float32_cameras_give_float32_embedding():
    cams = make_cameras(dtype=torch.float32)
    emb = plucker_embedding(cams, 3, 5)
    assert emb.dtype == torch.float32 and emb.device == cams.device and emb.is_contiguous()
    ref = plucker_embedding(make_cameras(dtype=torch.float64), 3, 5)
    torch.testing.assert_close(emb.double(), ref, atol=1e-5, rtol=0)


def test_group_frames_order_and_shapes():
    F, C, H, W = 9, 2, 3, 4
    x = (torch.arange(F)[:, None] * 10 + torch.arange(C)[None, :]).float()[:, :, None, None].expand(F, C, H, W)
    out = group_frames_for_latents(x)
    assert out.shape == (3, 8, H, W)
    # frame-major: channel f*C + c holds frame (group frame f), channel c
    assert out[:, :, 0, 0].tolist() == [[0, 1, 0, 1, 0, 1, 0, 1],
                                        [10, 11, 20, 21, 30, 31, 40, 41],
                                        [50, 51, 60, 61, 70, 71, 80, 81]]
    assert torch.equal(out[1, 2:4], x[2])


def test_group_frames_batched_and_single_frame():
    x = torch.randn(2, 5, 6, 2, 3)
    out = group_frames_for_latents(x)
    assert out.shape == (2, 2, 24, 2, 3)
    assert torch.equal(out[1], group_frames_for_latents(x[1]))
    one = group_frames_for_latents(torch.randn(1, 6, 2, 2))
    assert one.shape == (1, 24, 2, 2) and torch.equal(one[0, :6], one[0, 18:])
    assert group_frames_for_latents(torch.randn(49, 6, 2, 2)).shape == (13, 24, 2, 2)


@pytest.mark.parametrize("shape", [(8, 6, 2, 2), (2, 4, 6, 2, 2), (6, 2, 2)])
def test_group_frames_rejects_bad_input(shape):
    with pytest.raises(ValueError, match="F = 1 \\+ 4k|expects"):
        group_frames_for_latents(torch.zeros(shape))


def test_embedding_is_differentiable_in_pose():
    cams = make_cameras(n=1)
    cams.c2w.requires_grad_(True)
    plucker_embedding(cams, 2, 3)[:, :3].sum().backward()
    assert cams.c2w.grad is not None and math.isfinite(cams.c2w.grad.abs().sum().item())
    assert cams.c2w.grad[0, :3, 3].abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_camera_maths_on_cuda_match_cpu():
    from backend.cameras import normalize, resample

    cams = make_cameras(n=5, dtype=torch.float32)
    gpu = cams.to("cuda")
    torch.testing.assert_close(resample(gpu, 9).c2w.cpu(), resample(cams, 9).c2w)
    norm_gpu, nz_gpu = normalize(gpu)
    norm_cpu, nz_cpu = normalize(cams)
    assert norm_gpu.device.type == "cuda" and nz_gpu.scale == nz_cpu.scale
    torch.testing.assert_close(plucker_embedding(norm_gpu, 4, 6).cpu(), plucker_embedding(norm_cpu, 4, 6),
                               atol=1e-5, rtol=0)
    x = torch.randn(3, 3, device="cuda")
    torch.testing.assert_close(nz_gpu.points_to_normalized(nz_gpu.points_to_world(x)), x, atol=1e-5, rtol=0)
