"""The depth prior's shape (backend/prior_scale.py: prior_field, warped): the model's Gaussians slide along camera
0's rays so that their depth there follows a blur of the prior's: its median sets the size, the blurred rest the
broad shape, and camera 0's picture stays."""
import math

import torch

from backend.cameras import CameraBatch
from backend.detail import lift
from backend.prior_scale import prior_field, prior_ratio, warped
from backend.render import render

H, W = 32, 48
K = torch.tensor([[40.0, 0.0, 24.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]])
CAMERA = CameraBatch(K[None], torch.eye(4)[None], W, H)
COLUMNS = torch.linspace(0.0, 1.0, W).expand(H, W)      # 0 at the left edge, 1 at the right


def wall(depth: torch.Tensor):
    """One opaque Gaussian per pixel of a smooth picture at camera z depth [H, W] (the detail layer's lift)."""
    rows = torch.linspace(0.0, 1.0, H)[:, None].expand(H, W)
    return lift(torch.stack([COLUMNS, rows, 1 - COLUMNS], dim=-1), depth, K)


def view(gaussians):
    with torch.no_grad():
        return render(gaussians, CAMERA)


def test_shape_sigma_zero_is_the_one_median_factor():
    model = view(wall(torch.full((H, W), 2.0)))
    prior = 2.0 * torch.exp(COLUMNS)                   # the prior says the wall slants away to the right
    field, size = prior_field(model, prior, 0.0)
    assert size == prior_ratio(model, prior)
    assert torch.allclose(field, torch.full_like(field, math.log(size)))
    assert abs(float(field[0, 0]) - 0.5) < 0.05        # the median of a ramp 0 .. 1


def test_the_field_is_the_blurred_log_ratio():
    model = view(wall(torch.full((H, W), 2.0)))
    field, size = prior_field(model, 2.0 * torch.exp(COLUMNS), 0.05)   # sigma 2.4 px
    inner = slice(8, W - 8)                            # a blurred ramp is the ramp, away from the replicated edges
    assert torch.allclose(field[:, inner], COLUMNS[:, inner], atol=0.01)
    assert float(field[:, 0].mean()) > 0.0 and float(field[:, -1].mean()) < 1.0   # the edges blurred inwards
    assert size == prior_ratio(model, 2.0 * torch.exp(COLUMNS))   # the size stays the median's alone


def test_pixels_the_model_does_not_show_take_their_surroundings():
    depth = torch.full((H, W), 2.0)
    gaussians = wall(depth)
    shown = torch.ones(H, W, dtype=torch.bool)
    shown[10:20, 20:30] = False                        # a hole in the model's wall
    model = view(gaussians[shown.reshape(-1)])
    prior = torch.full((H, W), 3.0)
    prior[12:18, 22:28] = 300.0                        # what the prior says there does not count (the hole's rim
                                                       # shows the neighbours' splats)
    field, _ = prior_field(model, prior, 0.05)
    assert torch.allclose(field, torch.full_like(field, math.log(1.5)), atol=1e-3)


def test_warped_keeps_camera_0s_picture_and_takes_the_priors_broad_depth():
    gaussians = wall(torch.full((H, W), 2.0))
    model, prior = view(gaussians), 1.5 * torch.exp(COLUMNS * math.log(2.0))   # 1.5 m on the left, 3 m on the right
    results = {s: view(warped(gaussians, prior_field(model, prior, s)[0], K)) for s in (0.0, 0.05)}
    inner = (slice(4, H - 4), slice(8, W - 8))
    for out in results.values():   # every Gaussian keeps its pixel: the picture stays (a nearer neighbour's rim
        assert float((out.rgb - model.rgb).abs().max()) < 1.5 / W   # shows a little more: under 1.5 pixel steps
    error = {s: float(((out.depth[0, ..., 0] - prior).abs() / prior)[inner].mean()) for s, out in results.items()}
    assert error[0.05] < 0.02 < 0.1 < error[0.0]       # one factor leaves the slant out; the field puts it in
    moved = warped(gaussians, prior_field(model, prior, 0.05)[0], K)
    assert torch.allclose(moved.means / moved.means.norm(dim=1, keepdim=True),
                          gaussians.means / gaussians.means.norm(dim=1, keepdim=True), atol=1e-5)
    assert torch.allclose(moved.log_scales - gaussians.log_scales,
                          (moved.means.norm(dim=1) / gaussians.means.norm(dim=1)).log()[:, None], atol=1e-5)


def test_gaussians_beside_the_picture_or_behind_the_camera_take_the_median():
    field = torch.full((H, W), math.log(3.0))
    field[:, :W // 3] = math.log(2.0)                  # the left third twice as far, the rest (the median) three times
    gaussians = wall(torch.full((H, W), 2.0))[torch.tensor([0, 1, 2, 3, 4])]
    gaussians.means = torch.tensor([[-0.5, 0.0, 1.0],     # inside, on the left: its pixel's
                                    [0.5, 0.1, 1.0],      # inside, on the right: its pixel's
                                    [-0.62, 0.0, 1.0],    # left of the picture (u = -0.8): the median
                                    [-5.0, 0.0, 1.0],     # far left of it: the median
                                    [0.0, 0.0, -1.0]])    # behind camera 0: the median
    moved = warped(gaussians, field, K)
    assert torch.allclose(moved.means, gaussians.means * torch.tensor([2.0, 3.0, 3.0, 3.0, 3.0])[:, None], rtol=1e-5)
