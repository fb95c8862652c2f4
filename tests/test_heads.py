"""Activation heads: value ranges on known inputs, ray geometry of the centres, gradients."""
import math

import pytest
import torch

from backend.gaussians import SH_C0
from backend.heads import (CHANNEL_SLICES, RAW_CHANNELS, distance_head, gaussians_from_raw, opacity_head,
                           rgb_head, rotation_head, scale_head)


def test_channel_layout_covers_twelve_channels_in_order():
    covered = [i for s in CHANNEL_SLICES.values() for i in range(s.start, s.stop)]
    assert covered == list(range(RAW_CHANNELS)) == list(range(12))
    assert [s.stop - s.start for s in CHANNEL_SLICES.values()] == [1, 3, 3, 4, 1]


def test_distance_head_maps_into_near_far():
    raw = torch.tensor([-30.0, 0.0, 30.0, 1.0])
    t = distance_head(raw, 0.5, 4.5)
    assert t[0].item() == pytest.approx(0.5, abs=1e-6)
    assert t[1].item() == pytest.approx(2.5)
    assert t[2].item() == pytest.approx(4.5, abs=1e-6)
    assert t[3].item() == pytest.approx(0.5 + 4.0 / (1 + math.exp(-1.0)))
    # one near/far pair per scene, broadcast over the pixels
    t = distance_head(torch.zeros(2, 5), torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [10.0]]))
    assert torch.allclose(t, torch.tensor([[2.0] * 5, [6.0] * 5]))


def test_rgb_head_gives_sh_dc_of_sigmoid_colour():
    raw = torch.linspace(-8, 8, 17)
    sh0 = rgb_head(raw)
    assert rgb_head(torch.zeros(1)).item() == 0.0
    assert torch.allclose(0.5 + SH_C0 * sh0, torch.sigmoid(raw), atol=1e-6)
    rgb = 0.5 + SH_C0 * sh0
    assert bool((rgb >= 0).all() and (rgb <= 1).all())


def test_scale_head_shifts_and_caps_log_scales():
    raw = torch.tensor([0.0, -3.0, 1.0, 10.0])
    log_scales = scale_head(raw, max_scale=0.5)
    assert torch.exp(log_scales[0]).item() == pytest.approx(math.exp(-2.3))
    assert log_scales[1].item() == pytest.approx(-5.3)
    assert log_scales[2].item() == pytest.approx(-1.3)
    assert log_scales[3].item() == pytest.approx(math.log(0.5))  # capped: exp(7.7) would be ~2200
    per_scene = scale_head(torch.full((2, 3), 10.0), torch.tensor([[0.5], [2.0]]))
    assert torch.allclose(torch.exp(per_scene), torch.tensor([[0.5] * 3, [2.0] * 3]))
    with pytest.raises(ValueError, match="max_scale"):
        scale_head(raw, 0.0)


def test_scale_head_gradient_is_zero_only_above_the_cap():
    raw = torch.tensor([0.0, 10.0], requires_grad=True)
    scale_head(raw, 1.0).sum().backward()
    assert raw.grad.tolist() == [1.0, 0.0]


def test_rotation_head_normalizes_and_survives_zero():
    raw = torch.tensor([[2.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    quats = rotation_head(raw)
    assert quats[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert torch.allclose(quats[1], torch.tensor([0.5, -0.5, 0.5, -0.5]))
    assert quats[2].tolist() == [0.0, 0.0, 0.0, 0.0]
    random = rotation_head(torch.randn(100, 4))
    assert torch.allclose(random.norm(dim=-1), torch.ones(100), atol=1e-6)


def test_opacity_head_shifts_logits():
    logits = opacity_head(torch.tensor([0.0, 2.0]))
    assert logits.tolist() == [-2.0, 0.0]
    assert torch.sigmoid(logits[0]).item() == pytest.approx(1 / (1 + math.exp(2.0)))


def test_gaussians_from_raw_puts_centres_on_rays_in_row_major_order():
    torch.manual_seed(0)
    raw = torch.randn(2, 3, 4, RAW_CHANNELS)
    origins = torch.randn(2, 1, 1, 3)                    # one camera centre per view, broadcast over pixels
    dirs = torch.nn.functional.normalize(torch.randn(2, 3, 4, 3), dim=-1)
    near, far = 0.1, 20.0
    g = gaussians_from_raw(raw, origins, dirs, near, far, max_scale=0.3)
    assert len(g) == 24 and g.sh_degree == 0
    flat = raw.reshape(24, RAW_CHANNELS)
    o = origins.expand(2, 3, 4, 3).reshape(24, 3)
    d = dirs.reshape(24, 3)
    t = near + torch.sigmoid(flat[:, 0]) * (far - near)
    offset = g.means - o
    assert torch.allclose((offset * d).sum(-1), t, atol=1e-5)        # distance t along the ray
    assert torch.allclose(torch.linalg.cross(offset, d), torch.zeros(24, 3), atol=1e-5)  # on the ray
    assert torch.equal(g.opacity_logits, flat[:, 11] - 2.0)
    assert torch.allclose(g.rgb, torch.sigmoid(flat[:, 1:4]), atol=1e-6)
    assert torch.allclose(g.quats, flat[:, 7:11] / flat[:, 7:11].norm(dim=-1, keepdim=True))
    assert bool((g.scales <= 0.3 + 1e-7).all())


def test_gaussians_from_raw_takes_per_scene_bounds():
    raw = torch.zeros(2, 5, RAW_CHANNELS)
    raw[..., 4:7] = 10.0
    dirs = torch.tensor([0.0, 0.0, 1.0]).expand(2, 5, 3)
    g = gaussians_from_raw(raw, torch.zeros(3), dirs, torch.tensor([[1.0], [2.0]]),
                           torch.tensor([[3.0], [4.0]]),
                           torch.tensor([[0.1], [0.2]]))
    assert torch.allclose(g.means[:, 2], torch.tensor([2.0] * 5 + [3.0] * 5))
    assert torch.allclose(g.scales, torch.tensor([[0.1] * 3] * 5 + [[0.2] * 3] * 5))


def test_gaussians_from_raw_is_differentiable_in_every_channel():
    torch.manual_seed(1)
    raw = torch.randn(3, 4, RAW_CHANNELS, requires_grad=True)
    origins = torch.randn(3, 4, 3, requires_grad=True)
    dirs = torch.nn.functional.normalize(torch.randn(3, 4, 3), dim=-1)
    g = gaussians_from_raw(raw, origins, dirs, 0.5, 5.0, max_scale=10.0)
    loss = (g.means.sum() + g.log_scales.sum() + (g.quats * torch.randn(12, 4)).sum()
            + g.opacity_logits.sum() + g.sh0.sum())
    loss.backward()
    assert torch.isfinite(raw.grad).all()
    assert bool((raw.grad.abs().reshape(-1, RAW_CHANNELS) > 0).all(dim=0).all())
    assert torch.allclose(origins.grad, torch.ones(3, 4, 3))


def test_gaussians_from_raw_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="11 channels"):
        gaussians_from_raw(torch.zeros(4, 11), torch.zeros(3), torch.zeros(4, 3), 0.1, 1.0, 1.0)
