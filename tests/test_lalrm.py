"""LaLRM: shapes of the tiny and the paper model, pixel-aligned Gaussians, pruning, configs."""
import math

import numpy as np
import pytest
import torch

from backend.cameras import CameraBatch
from backend.errors import InputError
from backend.gaussians import Gaussians
from backend.heads import RAW_CHANNELS
from backend.models.lalrm import LaLRM, LaLRMConfig, gaussian_count, select_gaussians
from backend.models.weights import load_config, save_config, save_state_dict


def rodrigues(axis, angle) -> np.ndarray:
    """Rotation matrix about `axis` by `angle` (independent of backend.rotations)."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def trajectory(config: LaLRMConfig, seed: int = 0) -> CameraBatch:
    """A turning, moving camera with per-frame focal lengths and an off-centre principal point."""
    rng = np.random.default_rng(seed)
    n = config.num_frames
    c2w = np.tile(np.eye(4), (n, 1, 1))
    K = np.tile(np.eye(3), (n, 1, 1))
    for i in range(n):
        c2w[i, :3, :3] = rodrigues(rng.normal(size=3), 0.3 * i / n)
        c2w[i, :3, 3] = [i / (n - 1), 0.2 * math.sin(i), 0.1 * i / n]
        K[i, 0, 0], K[i, 1, 1] = 80 + 3 * i, 78 + 2 * i
        K[i, 0, 2], K[i, 1, 2] = config.width / 2 + 3.5, config.height / 2 - 2.25
    return CameraBatch(torch.tensor(K, dtype=torch.float32), torch.tensor(c2w, dtype=torch.float32),
                       config.width, config.height)


def tiny_model(seed: int = 0) -> LaLRM:
    torch.manual_seed(seed)
    return LaLRM(LaLRMConfig.tiny()).eval()


def tiny_latents(config: LaLRMConfig, batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, *config.latent_shape, generator=torch.Generator().manual_seed(seed))


def test_tiny_lalrm_forward_shapes_and_gaussian_count():
    model = tiny_model()
    config = model.config
    assert config.latent_shape == (3, 16, 8, 12) and config.token_grid == (3, 4, 6)
    plucker = torch.randn(2, 9, 6, 64, 96)
    with torch.no_grad():
        raw = model(tiny_latents(config, batch=2), plucker)
    assert raw.shape == (2, 9, 32, 48, RAW_CHANNELS)
    assert gaussian_count(config) == 9 * 32 * 48 == 13824
    with torch.no_grad():
        g = model.predict_gaussians(tiny_latents(config)[0], trajectory(config))
    assert len(g) == 13824 and g.means.shape == (13824, 3) and g.quats.shape == (13824, 4)
    assert g.means.dtype == torch.float32 and torch.isfinite(g.means).all()
    # Batch elements are independent: element 1 alone gives element 1 of the batch.
    with torch.no_grad():
        single = model(tiny_latents(config, batch=2)[1:], plucker[1:])
    torch.testing.assert_close(single[0], raw[1], atol=1e-5, rtol=1e-5)


def test_tiny_lalrm_rejects_wrong_input_shapes():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"latents \[B, 3, 16, 8, 12\]"):
        model(torch.zeros(1, 3, 16, 8, 10), torch.zeros(1, 9, 6, 64, 96))
    with pytest.raises(ValueError, match="Plücker maps"):
        model(torch.zeros(1, 3, 16, 8, 12), torch.zeros(1, 9, 6, 32, 48))
    with pytest.raises(ValueError, match="9 cameras at 96×64"):
        model.predict_gaussians(torch.zeros(3, 16, 8, 12), trajectory(LaLRMConfig.tiny())[:5])


def test_tiny_lalrm_centres_lie_on_output_pixel_rays_at_predicted_distance():
    model = tiny_model()
    config = model.config
    cams = trajectory(config)
    latents = tiny_latents(config)
    with torch.no_grad():
        g = model.predict_gaussians(latents, cams)
        raw = model(latents, torch.from_numpy(reference_plucker(cams)).float()[None])[0].double().numpy()
    f_out, h_out, w_out = config.output_grid
    sx, sy = w_out / config.width, h_out / config.height        # 0.5 and 0.5
    K_out = np.diag([sx, sy, 1.0]) @ cams.K.double().numpy()
    v, u = np.meshgrid(np.arange(h_out) + 0.5, np.arange(w_out) + 0.5, indexing="ij")
    pix = np.stack([u, v, np.ones_like(u)], -1)
    c2w = cams.c2w.double().numpy()
    d = np.einsum("fij,fjk,hwk->fhwi", c2w[:, :3, :3], np.linalg.inv(K_out), pix)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    t = config.near + (config.far - config.near) / (1 + np.exp(-raw[..., 0]))
    expected = c2w[:, None, None, :3, 3] + t[..., None] * d
    np.testing.assert_allclose(g.means.double().numpy(), expected.reshape(-1, 3), atol=2e-4, rtol=0)
    assert t.min() > config.near and t.max() < config.far


def reference_plucker(cams: CameraBatch) -> np.ndarray:
    """[F, 6, H, W] Plücker maps [o × d, d] at the cameras' own size, computed here with numpy."""
    v, u = np.meshgrid(np.arange(cams.height) + 0.5, np.arange(cams.width) + 0.5, indexing="ij")
    pix = np.stack([u, v, np.ones_like(u)], -1)
    c2w = cams.c2w.double().numpy()
    d = np.einsum("fij,fjk,hwk->fhwi", c2w[:, :3, :3], np.linalg.inv(cams.K.double().numpy()), pix)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(c2w[:, None, None, :3, 3], d.shape)
    return np.concatenate([np.cross(o, d), d], -1).transpose(0, 3, 1, 2)


def test_tiny_lalrm_output_grid_intrinsics_are_the_input_ones_scaled():
    """Output pixel (0, 0) covers input pixels 0..1: its centre is the input point (1.0, 1.0)."""
    model = tiny_model()
    config = model.config
    cams = trajectory(config)
    with torch.no_grad():
        g = model.predict_gaussians(tiny_latents(config), cams)
    f_out, h_out, w_out = config.output_grid
    frame, row, col = 4, 0, 0
    index = (frame * h_out + row) * w_out + col
    centre = cams.c2w[frame, :3, 3].double()
    got = (g.means[index].double() - centre)
    got /= got.norm()
    point = torch.tensor([(col + 0.5) * config.width / w_out, (row + 0.5) * config.height / h_out, 1.0],
                         dtype=torch.float64)
    assert point.tolist() == [1.0, 1.0, 1.0]
    want = cams.c2w[frame, :3, :3].double() @ torch.linalg.inv(cams.K[frame].double()) @ point
    torch.testing.assert_close(got, want / want.norm(), atol=1e-5, rtol=0)


def test_tiny_lalrm_pruning_and_cap():
    model = tiny_model()
    config = model.config
    cams, latents = trajectory(config), tiny_latents(config)
    with torch.no_grad():
        full = model.predict_gaussians(latents, cams)
        threshold = full.opacities.median().item()
        pruned = model.predict_gaussians(latents, cams, prune_opacity=threshold)
        capped = model.predict_gaussians(latents, cams, prune_opacity=threshold, max_count=100)
    keep = full.opacities >= threshold
    assert 0 < len(pruned) == int(keep.sum()) < len(full)
    assert torch.equal(pruned.means, full.means[keep])
    assert len(capped) == 100
    assert capped.opacities.min() >= pruned.opacities.sort(descending=True).values[99]
    # The kept ones are a subset in input order: their means appear in `pruned` in the same order.
    positions = [int((pruned.means == m).all(-1).nonzero()[0]) for m in capped.means[:10]]
    assert positions == sorted(positions)


def test_select_gaussians_breaks_ties_by_input_order():
    n = 6
    opacity_logits = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, -1.0])
    g = Gaussians(torch.arange(n * 3, dtype=torch.float32).reshape(n, 3), torch.zeros(n, 3),
                  torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), opacity_logits, torch.zeros(n, 3), None)
    assert select_gaussians(g, max_count=2).means[:, 0].tolist() == [3.0, 9.0]     # indices 1, 3
    assert select_gaussians(g, max_count=4).means[:, 0].tolist() == [0.0, 3.0, 9.0, 12.0]
    assert len(select_gaussians(g, min_opacity=0.5)) == 5          # sigmoid(0) = 0.5 is kept
    assert select_gaussians(g, max_count=10) is g
    with pytest.raises(ValueError, match="max_count"):
        select_gaussians(g, max_count=-1)


def test_paper_lalrm_on_meta_device_has_paper_shapes():
    config = LaLRMConfig.paper()
    with torch.device("meta"):
        model = LaLRM(config)
        latents = torch.empty(1, 13, 16, 60, 90)
        plucker = torch.empty(1, 49, 6, 480, 720)
        tokens = model.tokens(latents, plucker)
        raw = model(latents, plucker)
    assert config.token_grid == (13, 30, 45) and tuple(tokens.shape) == (1, 17550, 1024)
    assert tuple(raw.shape) == (1, 49, 240, 360, 12)
    assert gaussian_count(config) == 4_233_600
    assert tuple(model.latent_embed.weight.shape) == (1024, 16, 2, 2)
    assert tuple(model.camera_embed.weight.shape) == (1024, 6, 4, 16, 16)
    assert model.camera_embed.padding == (2, 0, 0)
    assert tuple(model.fuse.weight.shape) == (1024, 2048)
    assert len(model.blocks) == 24 and model.blocks[0].num_heads == 16
    assert tuple(model.blocks[0].mlp[0].weight.shape) == (4096, 1024)
    assert tuple(model.head.weight.shape) == (1024, 12, 5, 8, 8)
    assert model.head.stride == (4, 8, 8) and model.head.padding == (2, 0, 0)
    params = sum(p.numel() for p in model.parameters())
    assert 300e6 < params < 330e6     # 24 blocks × 12.6M + embeddings and head


def test_lalrm_config_geometry_is_validated():
    with pytest.raises(InputError, match=r"30×45 latent grid is not divisible by the latent patch 2"):
        LaLRMConfig(height=240, width=360)
    low = LaLRMConfig.paper_low_res()
    assert (low.height, low.width, low.token_grid, low.output_grid) == (256, 384, (13, 16, 24), (49, 128, 192))
    with pytest.raises(InputError, match=r"1 \+ 4·k frames.*use e.g. 49"):
        LaLRMConfig(num_frames=48)
    with pytest.raises(InputError, match=r"camera Conv3d .* gives a \(13, 60, 90\) grid"):
        LaLRMConfig(camera_kernel=(4, 8, 8))
    with pytest.raises(InputError, match="head makes 52 frames"):
        LaLRMConfig(head_kernel=(8, 8, 8))
    with pytest.raises(InputError, match="not divisible by num_heads"):
        LaLRMConfig(hidden_size=1000)
    with pytest.raises(InputError, match="hidden_size must be a positive integer, got '64'"):
        LaLRMConfig.from_dict({**LaLRMConfig.tiny().to_dict(), "hidden_size": "64"})
    with pytest.raises(InputError, match="0 < near < far"):
        LaLRMConfig(near=5.0, far=1.0)


def test_lalrm_config_json_round_trip(tmp_path):
    config = LaLRMConfig.tiny()
    save_config(config, tmp_path / "lalrm.json")
    loaded = load_config(tmp_path / "lalrm.json", LaLRMConfig)
    assert loaded == config and isinstance(loaded.camera_kernel, tuple)
    assert LaLRM.from_config(config.to_dict()).config == config
    (tmp_path / "bad.json").write_text('{"num_frames": 9, "hidden_sise": 64}')
    with pytest.raises(InputError, match=r"bad.json.*unknown fields for LaLRMConfig: hidden_sise"):
        load_config(tmp_path / "bad.json", LaLRMConfig)


def test_tiny_lalrm_gradient_checkpointing_gives_same_output_and_gradients():
    model = tiny_model().train()
    latents = tiny_latents(model.config)
    plucker = torch.randn(1, 9, 6, 64, 96)
    outputs, grads = [], []
    for flag in (False, True):
        model.gradient_checkpointing = flag
        model.zero_grad()
        raw = model(latents, plucker)
        raw.square().mean().backward()
        outputs.append(raw.detach())
        grads.append(model.blocks[0].qkv.weight.grad.clone())
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0


def test_tiny_lalrm_save_pretrained_round_trip_is_bit_exact(tmp_path):
    model = tiny_model(seed=3)
    model.save_pretrained(tmp_path / "lalrm.safetensors")
    loaded = LaLRM.from_pretrained(tmp_path / "lalrm.safetensors")
    assert loaded.config == model.config and not loaded.training
    latents, plucker = tiny_latents(model.config), torch.randn(1, 9, 6, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(latents, plucker), loaded(latents, plucker))
    bf16 = LaLRM.from_pretrained(tmp_path / "lalrm.safetensors", dtype=torch.bfloat16)
    assert bf16.fuse.weight.dtype == torch.bfloat16
    with torch.no_grad():
        g = bf16.predict_gaussians(latents, trajectory(model.config))
    assert g.means.dtype == torch.float32 and torch.isfinite(g.means).all()


def test_tiny_lalrm_from_pretrained_needs_the_config_in_the_header(tmp_path):
    save_state_dict(tiny_model().state_dict(), tmp_path / "bare.safetensors")
    with pytest.raises(InputError, match=r"bare.safetensors has no LaLRM config in its header"):
        LaLRM.from_pretrained(tmp_path / "bare.safetensors")
