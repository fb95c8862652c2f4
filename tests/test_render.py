"""Renderer tests: analytic images from one or two Gaussians, culling, SH, gradients, chunking, K
scaling, and parity of the torch rasterizer with gsplat (CUDA only)."""
from __future__ import annotations

import pytest
import torch

from backend.cameras import CameraBatch
from backend.errors import InputError
from backend.gaussians import SH_C0, Gaussians
from backend.render import render
from backend.render.reference import ALPHA_MIN, EPS2D, render_views
from backend.render.sh import sh_basis, sh_to_rgb

SH_C1 = 0.48860251190292


def camera(width=32, height=24, f=40.0, c2w=None, dtype=torch.float32, principal=None) -> CameraBatch:
    cx, cy = principal or (width / 2, height / 2)
    K = torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=dtype)
    c2w = torch.eye(4, dtype=dtype) if c2w is None else c2w.to(dtype)
    return CameraBatch(K[None], c2w[None], width, height)


def gaussians(means, scale, opacity, rgb, sh_rest=None, dtype=torch.float32) -> Gaussians:
    """Isotropic Gaussians with given std-dev (world units), opacity and SH-DC colour."""
    means = torch.as_tensor(means, dtype=dtype).reshape(-1, 3)
    n = len(means)
    rgb = torch.as_tensor(rgb, dtype=dtype).expand(n, 3)
    return Gaussians(
        means=means,
        log_scales=torch.log(torch.as_tensor(scale, dtype=dtype)).expand(n).reshape(n, 1).repeat(1, 3),
        quats=torch.tensor([[1.0, 0, 0, 0]], dtype=dtype).repeat(n, 1),
        opacity_logits=torch.logit(torch.as_tensor(opacity, dtype=dtype).expand(n)).clone(),
        sh0=(rgb - 0.5) / SH_C0,
        sh_rest=sh_rest)


def pixel_ray_point(cam: CameraBatch, u: float, v: float, z: float) -> list[float]:
    """World point at depth z on the ray through pixel centre (u + 0.5, v + 0.5) of camera 0."""
    K = cam.K[0]
    fx, fy, cx, cy = K[0, 0].item(), K[1, 1].item(), K[0, 2].item(), K[1, 2].item()
    return [(u + 0.5 - cx) / fx * z, (v + 0.5 - cy) / fy * z, z]


def test_single_gaussian_centre_footprint_colour_and_depth():
    # On the optical axis (principal point at the centre of pixel (10, 7)) the projection of an
    # isotropic Gaussian is isotropic.
    cam = camera(principal=(10.5, 7.5))
    z, scale, opacity, colour = 5.0, 0.2, 0.8, [0.9, 0.3, 0.1]
    out = render(gaussians([[0.0, 0.0, z]], scale, opacity, colour), cam)
    alpha = out.alpha[0, :, :, 0]
    assert divmod(int(alpha.argmax()), cam.width) == (7, 10)

    # The projected std-dev is f * scale / z pixels; gsplat adds eps2d to the 2D variance.
    var = (40.0 * scale / z) ** 2 + EPS2D
    v, u = torch.meshgrid(torch.arange(cam.height), torch.arange(cam.width), indexing="ij")
    r2 = (u - 10.0) ** 2 + (v - 7.0) ** 2
    expected = (opacity * torch.exp(-r2 / (2 * var))).clamp_max(0.999)
    expected = torch.where(expected >= ALPHA_MIN, expected, torch.zeros_like(expected))
    torch.testing.assert_close(alpha, expected, atol=1e-6, rtol=1e-5)
    assert int((alpha > 0).sum()) < cam.width * cam.height / 2  # the footprint is finite
    torch.testing.assert_close(out.rgb[0], alpha[..., None] * torch.tensor(colour),
                               atol=1e-6, rtol=1e-5)
    seen = alpha > 0
    torch.testing.assert_close(out.depth[0, :, :, 0][seen], torch.full_like(alpha[seen], z))
    assert torch.all(out.depth[0, :, :, 0][~seen] == 0)


@pytest.mark.parametrize("front_first", [True, False])
def test_front_gaussian_wins_and_blending_is_analytic(front_first):
    cam = camera()
    a1, a2 = 0.7, 0.6
    red, blue = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]
    front = gaussians([pixel_ray_point(cam, 16, 12, 2.0)], 0.1, a1, red)
    back = gaussians([pixel_ray_point(cam, 16, 12, 4.0)], 0.2, a2, blue)
    scene = Gaussians.cat([front, back] if front_first else [back, front])
    out = render(scene, cam)
    rgb, alpha, depth = out.rgb[0, 12, 16], out.alpha[0, 12, 16, 0], out.depth[0, 12, 16, 0]
    torch.testing.assert_close(rgb, torch.tensor([a1, 0.0, (1 - a1) * a2]))
    total = 1 - (1 - a1) * (1 - a2)
    torch.testing.assert_close(alpha, torch.tensor(total))
    torch.testing.assert_close(depth, torch.tensor((a1 * 2.0 + (1 - a1) * a2 * 4.0) / total))


def test_transmittance_cutoff_excludes_the_gaussian_that_ends_the_pixel():
    """gsplat stops a pixel before the Gaussian that would bring T to <= 1e-4 (0.001 * 0.001 here)."""
    cam = camera()
    scene = Gaussians.cat([gaussians([pixel_ray_point(cam, 16, 12, z)], 0.1, 0.99999, c)
                           for z, c in ((2.0, [1.0, 0.0, 0.0]), (3.0, [0.0, 1.0, 0.0]))])
    out = render(scene, cam)
    torch.testing.assert_close(out.rgb[0, 12, 16], torch.tensor([0.999, 0.0, 0.0]))
    torch.testing.assert_close(out.alpha[0, 12, 16, 0], torch.tensor(0.999))


def test_background_is_composited_with_one_minus_alpha():
    cam = camera()
    scene = gaussians([pixel_ray_point(cam, 16, 12, 3.0)], 0.2, 0.5, [0.2, 0.4, 0.6])
    bg = torch.tensor([0.1, 0.8, 0.3])
    plain, over = render(scene, cam), render(scene, cam, background=(0.1, 0.8, 0.3))
    torch.testing.assert_close(over.rgb, plain.rgb + (1 - plain.alpha) * bg)
    torch.testing.assert_close(over.rgb[0, 0, 0], bg)  # a corner the Gaussian does not reach
    empty = render(scene[torch.zeros(1, dtype=torch.bool)], cam, background=bg)
    torch.testing.assert_close(empty.rgb, bg.expand(1, cam.height, cam.width, 3))


def test_camera_batch_renders_each_view_with_its_background():
    scene = small_scene(60, seed=4, sh_degree=1)
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[1, :3, 3] = torch.tensor([0.3, 0.1, -0.2])
    K = camera().K.repeat(2, 1, 1)
    cams = CameraBatch(K, c2w, 32, 24)
    bg = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.5, 0.0]])
    both = render(scene, cams, background=bg)
    assert both.rgb.shape == (2, 24, 32, 3)
    for view in range(2):
        alone = render(scene, cams[view], background=bg[view])
        torch.testing.assert_close(both.rgb[view], alone.rgb[0])
        torch.testing.assert_close(both.depth[view], alone.depth[0])
    assert not torch.allclose(both.alpha[0], both.alpha[1])


def test_gaussians_behind_camera_or_before_near_plane_are_culled():
    cam = camera()
    # Big, opaque Gaussians that would cover the whole image if they were drawn.
    scene = gaussians([[0.0, 0.0, -2.0], [0.0, 0.0, 0.005], [0.1, 0.0, 0.0]], 0.5, 0.9, [1.0, 1.0, 1.0])
    out = render(scene, cam)
    assert torch.all(out.alpha == 0) and torch.all(out.rgb == 0) and torch.all(out.depth == 0)
    visible = render(gaussians([[0.0, 0.0, 0.02]], 0.5, 0.9, [1.0, 1.0, 1.0]), cam)
    assert float(visible.alpha.min()) > 0.5  # just beyond the near plane (0.01) it is drawn


def test_sh_degree_1_colour_follows_view_direction():
    dc = torch.tensor([0.2, 0.5, 0.1])
    rest = torch.tensor([[[0.3, -0.2, 0.1], [0.1, 0.4, -0.3], [-0.5, 0.2, 0.6]]])  # [1, 3, 3]
    scene = gaussians([[0.0, 0.0, 0.0]], 0.3, 0.99, dc, sh_rest=rest)
    # Camera 1 at (0, 0, -4) looks along +z; camera 2 at (4, 0, 0) looks along -x (OpenCV axes).
    c2w_side = torch.tensor([[0.0, 0, -1, 4], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    c2w_front = torch.eye(4)
    c2w_front[2, 3] = -4.0
    for c2w, d in ((c2w_front, (0.0, 0.0, 1.0)), (c2w_side, (-1.0, 0.0, 0.0))):
        cam = camera(width=16, height=16, c2w=c2w)
        x, y, z = d
        sh_value = SH_C0 * scene.sh0[0] + SH_C1 * (-y * rest[0, 0] + z * rest[0, 1] - x * rest[0, 2])
        colour = torch.clamp_min(sh_value + 0.5, 0.0)
        out = render(scene, cam)
        alpha = out.alpha[0, 7:9, 7:9]
        torch.testing.assert_close(out.rgb[0, 7:9, 7:9], alpha * colour, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(sh_to_rgb(scene.sh, torch.tensor([[0.0, 0, 1]])),
                              sh_to_rgb(scene.sh, torch.tensor([[-1.0, 0, 0]])))


def test_sh_basis_matches_gsplat_reference_up_to_degree_4():
    from gsplat.cuda._torch_impl import _eval_sh_bases_fast

    dirs = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    for degree in range(5):
        torch.testing.assert_close(sh_basis(degree, dirs), _eval_sh_bases_fast((degree + 1) ** 2, dirs))


def small_scene(n: int, seed: int, sh_degree: int = 0, dtype=torch.float32) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    z = 2 + 2 * torch.rand(n, 1, generator=gen, dtype=dtype)
    xy = (torch.rand(n, 2, generator=gen, dtype=dtype) - 0.5) * z
    return Gaussians(means=torch.cat([xy, z], 1),
                     log_scales=-2.5 + 0.5 * torch.randn(n, 3, generator=gen, dtype=dtype),
                     quats=torch.randn(n, 4, generator=gen, dtype=dtype),
                     opacity_logits=torch.randn(n, generator=gen, dtype=dtype),
                     sh0=torch.randn(n, 3, generator=gen, dtype=dtype),
                     sh_rest=0.3 * torch.randn(n, (sh_degree + 1) ** 2 - 1, 3, generator=gen, dtype=dtype))


def test_gradients_match_finite_differences():
    """gradcheck in float64: 3 broad Gaussians on 8x8 (every pair well above the 1/255 threshold)."""
    cam = camera(width=8, height=8, f=8.0, dtype=torch.float64)
    base = Gaussians(
        means=torch.tensor([[0.1, -0.2, 3.0], [-0.3, 0.2, 3.5], [0.2, 0.3, 4.0]], dtype=torch.float64),
        log_scales=torch.log(torch.tensor([[1.5, 1.2, 1.4], [1.4, 1.6, 1.5], [1.8, 1.5, 1.2]],
                                          dtype=torch.float64)),
        quats=torch.tensor([[1.0, 0.1, 0.2, 0.0], [0.9, 0.0, 0.3, 0.1], [1.0, -0.2, 0.0, 0.3]],
                           dtype=torch.float64),
        opacity_logits=torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64),
        sh0=torch.tensor([[0.5, -0.3, 0.2], [-0.4, 0.6, 0.1], [0.2, 0.2, -0.5]], dtype=torch.float64),
        sh_rest=0.2 * torch.ones(3, 3, 3, dtype=torch.float64))
    names = ["means", "log_scales", "quats", "opacity_logits", "sh0", "sh_rest"]
    inputs = [getattr(base, name).clone().requires_grad_(True) for name in names]

    def fn(*tensors):
        out = render(Gaussians(**dict(zip(names, tensors))), cam, backend="torch")
        return out.rgb, out.alpha, out.depth

    assert float(fn(*inputs)[1].detach().min()) > 0.3  # every pixel sees all three Gaussians
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_small_chunk_budget_gives_the_same_image_and_gradients():
    scene = small_scene(150, seed=1, sh_degree=1)
    cam = camera(width=40, height=30)
    w2c = torch.linalg.inv(cam.c2w)
    results = []
    for budget in (300, 1 << 21):
        params = scene.means.clone().requires_grad_(True)
        g = Gaussians(params, scene.log_scales, scene.quats, scene.opacity_logits, scene.sh0, scene.sh_rest)
        rgb, alpha, depth = render_views(g, w2c, cam.K, cam.width, cam.height, pair_budget=budget)
        (rgb.sum() + depth.sum()).backward()
        results.append((rgb, alpha, depth, params.grad))
    assert float(results[0][1].detach().mean()) > 0.2
    for small, large in zip(results[0][:3], results[1][:3]):
        torch.testing.assert_close(small, large, atol=1e-5, rtol=1e-4)
    grad_small, grad_large = results[0][3], results[1][3]
    assert float(grad_large.abs().max()) > 1.0
    torch.testing.assert_close(grad_small, grad_large, atol=1e-5 * float(grad_large.abs().max()), rtol=1e-4)


def test_other_size_scales_intrinsics():
    cam = camera(width=32, height=24)
    scene = gaussians([pixel_ray_point(cam, 10, 7, 5.0)], 0.2, 0.8, [0.9, 0.3, 0.1])
    out = render(scene, cam, width=64, height=72)
    assert out.rgb.shape == (1, 72, 64, 3)
    # K' = diag(2, 3, 1) K: pixel centre (10.5, 7.5) maps to (21, 22.5), i.e. pixels 20/21 x row 22.
    K = cam.K.clone()
    K[:, 0] *= 2
    K[:, 1] *= 3
    same = render(scene, CameraBatch(K, cam.c2w, 64, 72))
    torch.testing.assert_close(out.rgb, same.rgb)
    alpha = out.alpha[0, :, :, 0]
    row, col = divmod(int(alpha.argmax()), 64)
    assert row == 22 and col in (20, 21)
    torch.testing.assert_close(alpha[22, 20], alpha[22, 21])


def test_bad_requests_raise_clear_errors():
    cam = camera()
    scene = gaussians([[0.0, 0.0, 3.0]], 0.2, 0.5, [0.5, 0.5, 0.5])
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            render(scene, cam, backend="gsplat")
    with pytest.raises(InputError, match="backend"):
        render(scene, cam, backend="opengl")
    with pytest.raises(InputError, match="background"):
        render(scene, cam, background=(1.0, 0.0))
    with pytest.raises(InputError, match="width"):
        render(scene, cam, width=0)


def gsplat_semantics_by_brute_force(scene: Gaussians, cam: CameraBatch) -> tuple[torch.Tensor, ...]:
    """gsplat's own torch projection and SH, then its CUDA forward kernel's loop transcribed literally
    (every Gaussian against every pixel, front to back): an independent oracle that runs on a CPU."""
    from gsplat.cuda._torch_impl import (_fully_fused_projection, _quat_scale_to_covar_preci,
                                         _spherical_harmonics)

    viewmats = torch.linalg.inv(cam.c2w)
    covars, _ = _quat_scale_to_covar_preci(scene.quats, scene.scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        scene.means, covars, viewmats, cam.K, cam.width, cam.height)
    radii, means2d, depths, conics = radii[0], means2d[0], depths[0], conics[0]
    dirs = scene.means - cam.c2w[0, :3, 3]
    colors = torch.clamp_min(_spherical_harmonics(scene.sh_degree, dirs, scene.sh) + 0.5, 0.0)
    v, u = torch.meshgrid(torch.arange(cam.height), torch.arange(cam.width), indexing="ij")
    px, py = u.flatten() + 0.5, v.flatten() + 0.5
    T = torch.ones(len(px))
    done = torch.zeros(len(px), dtype=torch.bool)
    out = torch.zeros(len(px), 4)
    for g in torch.argsort(depths, stable=True).tolist():
        if (radii[g] <= 0).any():
            continue
        dx, dy = means2d[g, 0] - px, means2d[g, 1] - py
        sigma = 0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
        alpha = torch.clamp_max(torch.sigmoid(scene.opacity_logits[g]) * torch.exp(-sigma), 0.999)
        live = ~done & (sigma >= 0) & (alpha >= 1 / 255)
        next_T = T * (1 - alpha)
        stop = live & (next_T <= 1e-4)
        done |= stop
        use = live & ~stop
        feature = torch.cat([colors[g], depths[g, None]])
        out += (use * alpha * T)[:, None] * feature
        T = torch.where(use, next_T, T)
    alpha = (1 - T).view(cam.height, cam.width, 1)
    out = out.view(cam.height, cam.width, 4)
    return out[..., :3], alpha, out[..., 3:] / alpha.clamp_min(1e-10)


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_torch_rasterizer_matches_gsplat_semantics_on_cpu(sh_degree):
    scene = small_scene(400, seed=3, sh_degree=sh_degree)
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor([[0.995, 0.0, 0.0998], [0.0, 1.0, 0.0], [-0.0998, 0.0, 0.995]])
    c2w[:3, 3] = torch.tensor([0.2, -0.1, -0.3])
    cam = camera(width=48, height=36, f=45.0, c2w=c2w)
    # Some Gaussians behind the camera or just before its near plane (camera z up to 0.0099), some
    # off to the sides.
    in_camera = torch.stack([torch.full((20,), 0.001), torch.zeros(20), torch.linspace(-1.0, 0.0099, 20)], 1)
    scene.means[:20] = in_camera @ c2w[:3, :3].T + c2w[:3, 3]
    scene.means[20:40, 0] *= 3
    rgb, alpha, depth = gsplat_semantics_by_brute_force(scene, cam)
    ours = render(scene, cam, backend="torch")
    assert float(alpha.mean()) > 0.3
    torch.testing.assert_close(ours.rgb[0], rgb, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ours.alpha[0], alpha, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ours.depth[0], depth, atol=1e-4, rtol=1e-4)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a - b) ** 2)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat parity needs a CUDA GPU")
@pytest.mark.parametrize("sh_degree", [0, 3])
def test_torch_rasterizer_matches_gsplat(sh_degree):
    scene = small_scene(4000, seed=2, sh_degree=sh_degree).to("cuda")
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([0.3, -0.2, -0.5])
    cam = camera(width=96, height=64, f=70.0, c2w=c2w).to("cuda")
    ours = render(scene, cam, background=(0.2, 0.3, 0.4), backend="torch")
    theirs = render(scene, cam, background=(0.2, 0.3, 0.4), backend="gsplat")
    assert float(theirs.alpha.mean()) > 0.3
    assert psnr(ours.rgb.clamp(0, 1), theirs.rgb.clamp(0, 1)) >= 40
    torch.testing.assert_close(ours.alpha, theirs.alpha, atol=2e-3, rtol=0)
    seen = theirs.alpha > 0.5
    torch.testing.assert_close(ours.depth[seen], theirs.depth[seen], atol=1e-2, rtol=1e-3)
