"""The camera-controlled CogVideoX transformer (backend.models.video): identity to the stock diffusers
model at init, the camera branches once trained, hook hygiene, LoRA placement, state files, and the
paper configuration's sizes on the meta device."""
import json

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import CogVideoXPatchEmbed

from backend.errors import InputError
from backend.models.video import (LORA_ADAPTER, CameraControlledTransformer, CameraPatchEmbed,
                                  VideoModelConfig, build_vae, count_parameters, lora_modules)
from backend.models.weights import load_state_dict, save_state_dict
from backend.pipelines.camera_i2v import rotary_embeddings

TINY = VideoModelConfig.tiny()


def tiny_models(seed: int = 0):
    """(camera model, stock diffusers model with the same base weights), both from seeded random weights."""
    torch.manual_seed(seed)
    base = CogVideoXTransformer3DModel(**TINY.transformer).eval()
    stock = CogVideoXTransformer3DModel(**TINY.transformer).eval()
    stock.load_state_dict(base.state_dict())
    return CameraControlledTransformer(TINY, base=base).eval(), stock


def tiny_inputs(batch: int = 2, seed: int = 1):
    """Random (noisy + image latents, text, timesteps, per-frame Plücker maps, rotary embeddings)."""
    g = torch.Generator().manual_seed(seed)
    t, c, h, w = TINY.latent_shape
    x = torch.randn(batch, t, 2 * c, h, w, generator=g)
    text = torch.randn(batch, *TINY.text_shape, generator=g)
    timestep = torch.randint(0, 1000, (batch,), generator=g)
    plucker = torch.randn(batch, TINY.num_frames, 6, h, w, generator=g)
    return x, text, timestep, plucker


def rotary(model):
    t, _, h, w = TINY.latent_shape
    return rotary_embeddings(model, h, w, t, torch.device("cpu"))


def perturb(modules, seed: int = 3, scale: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def lora_b_layers(model):
    return [m.lora_B[LORA_ADAPTER] for m in model.base.modules() if hasattr(m, "lora_B") and m.lora_B]


def test_tiny_camera_model_equals_stock_cogvideox_at_init():
    model, stock = tiny_models()
    x, text, timestep, plucker = tiny_inputs()
    emb = rotary(model)
    with torch.no_grad():
        expected = stock(x, text, timestep, image_rotary_emb=emb, return_dict=False)[0]
        for use_controlnet in (True, False):
            out = model(x, text, timestep, plucker, image_rotary_emb=emb, use_controlnet=use_controlnet)
            assert out.shape == (2, *TINY.latent_shape)
            assert torch.equal(out, expected)
    assert expected.abs().mean() > 0.1  # a real, non-degenerate prediction


def test_trained_camera_branches_make_the_camera_matter():
    model, stock = tiny_models()
    # The zero-initialised parts: ControlNet input embedding and output linears, LoRA-branch projection, LoRA B.
    perturb([model.controlnet_camera_embed, model.controlnet_out, model.lora_camera_proj, *lora_b_layers(model)])
    x, text, timestep, plucker = tiny_inputs()
    other = torch.roll(plucker, shifts=1, dims=1)  # the same rays, reordered in time: another trajectory
    emb = rotary(model)
    with torch.no_grad():
        a = model(x, text, timestep, plucker, image_rotary_emb=emb)
        a_again = model(x, text, timestep, plucker.clone(), image_rotary_emb=emb)
        b = model(x, text, timestep, other, image_rotary_emb=emb)
        no_cn = model(x, text, timestep, plucker, image_rotary_emb=emb, use_controlnet=False)
        stock_out = stock(x, text, timestep, image_rotary_emb=emb, return_dict=False)[0]
    assert torch.equal(a, a_again)
    assert (a - b).abs().mean() > 1e-3
    assert (a - no_cn).abs().mean() > 1e-3      # the ControlNet branch contributes
    assert (no_cn - stock_out).abs().mean() > 1e-3  # and so does the LoRA branch on its own


def test_controlnet_residuals_reach_only_the_first_k_blocks():
    model, _ = tiny_models()
    perturb([model.controlnet_camera_embed, model.controlnet_out])
    x, text, timestep, plucker = tiny_inputs()
    seen = {}

    def record(i):
        def hook(module, args, kwargs, output):
            seen.setdefault(i, []).append((kwargs["hidden_states"], output[0]))
        return hook

    blocks = model.base.transformer_blocks
    handles = [b.register_forward_hook(record(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            model(x, text, timestep, plucker, image_rotary_emb=rotary(model))
    finally:
        for h in handles:
            h.remove()
    k = TINY.controlnet_layers
    assert k < len(blocks)
    # A hook registered before ours sees the block's own output; block i+1 reads block i's output
    # plus the ControlNet residual, for i < K, and exactly block i's output after that.
    for i in range(len(blocks) - 1):
        own_output, next_input = seen[i][0][1], seen[i + 1][0][0]
        assert torch.equal(own_output, next_input) == (i >= k), i


def test_camera_hooks_are_removed_and_base_runs_stock_afterwards():
    model, stock = tiny_models()
    perturb([model.controlnet_camera_embed, model.controlnet_out, model.lora_camera_proj])
    x, text, timestep, plucker = tiny_inputs()
    emb = rotary(model)
    hooked = [model.base.time_embedding, model.base.patch_embed, *model.base.transformer_blocks]
    with torch.no_grad():
        camera_out = model(x, text, timestep, plucker, image_rotary_emb=emb)
        with pytest.raises(RuntimeError):  # fails inside the base, after the hooks went in
            model(x, text[..., :-1], timestep, plucker, image_rotary_emb=emb)
        base_out = model.base(x, text, timestep, image_rotary_emb=emb, return_dict=False)[0]
        expected = stock(x, text, timestep, image_rotary_emb=emb, return_dict=False)[0]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in hooked)
    assert not torch.equal(camera_out, expected)
    assert torch.equal(base_out, expected)


def test_lora_sits_on_the_attention_projections_with_the_configured_rank():
    model, _ = tiny_models()
    expected = {f"transformer_blocks.{i}.attn1.{name}"
                for i in range(TINY.transformer["num_layers"]) for name in ("to_q", "to_k", "to_v", "to_out.0")}
    found = lora_modules(model)
    assert set(found) == expected
    assert set(found.values()) == {TINY.lora_rank}
    dim = TINY.inner_dim
    to_q = model.base.transformer_blocks[0].attn1.to_q
    assert tuple(to_q.lora_A[LORA_ADAPTER].weight.shape) == (TINY.lora_rank, dim)
    assert tuple(to_q.lora_B[LORA_ADAPTER].weight.shape) == (dim, TINY.lora_rank)
    assert to_q.scaling[LORA_ADAPTER] == TINY.lora_alpha / TINY.lora_rank
    assert not any("lora" in n for n, _ in model.controlnet_blocks.named_parameters())
    # Camera parameters are trainable, the CogVideoX weights frozen; together they are all parameters.
    camera, base = list(model.camera_parameters()), list(model.base_parameters())
    assert camera and all(p.requires_grad for p in camera)
    assert base and not any(p.requires_grad for p in base)
    assert len(camera) + len(base) == len(list(model.parameters()))


def test_gradients_reach_the_camera_branches_with_and_without_checkpointing():
    x, text, timestep, plucker = tiny_inputs(batch=1)
    grads = []
    for checkpointing in (False, True):
        model, _ = tiny_models()
        model.train()
        if checkpointing:
            model.base.enable_gradient_checkpointing()
        model(x, text, timestep, plucker, image_rotary_emb=rotary(model)).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    plain, checkpointed = grads
    # Zero-initialised outputs get gradients at once (they see non-zero inputs).
    assert plain["controlnet_out.0.weight"].abs().sum() > 0
    assert plain["lora_camera_proj.weight"].abs().sum() > 0
    assert set(plain) == set(checkpointed)
    for name in plain:
        assert (plain[name] is None) == (checkpointed[name] is None), name
        if plain[name] is not None:
            torch.testing.assert_close(plain[name], checkpointed[name], rtol=1e-4, atol=1e-6)


def test_per_frame_and_grouped_plucker_give_the_same_output_and_bad_shapes_are_refused():
    model, _ = tiny_models()
    perturb([model.controlnet_camera_embed, model.controlnet_out, model.lora_camera_proj])
    x, text, timestep, plucker = tiny_inputs()
    t, _, h, w = TINY.latent_shape
    # VAE grouping: latent 0 = frame 0 (four times), latent 1 = frames 1-4, latent 2 = frames 5-8.
    grouped = torch.stack([plucker[:, [0, 0, 0, 0]], plucker[:, 1:5], plucker[:, 5:9]], dim=1).reshape(2, t, 24, h, w)
    with torch.no_grad():
        assert torch.equal(model(x, text, timestep, plucker), model(x, text, timestep, grouped))
        with pytest.raises(InputError, match="Plücker"):
            model(x, text, timestep, plucker[..., :-1])
        with pytest.raises(InputError, match="Plücker batch"):
            model(x, text, timestep, plucker[:1])
        with pytest.raises(InputError, match="Plücker"):  # 8 frames is not 1 + 4k
            model(x, text, timestep, plucker[:, :-1])


def test_camera_tokens_follow_cogvideox_token_order():
    """Camera token i must cover the pixels of video token i (CogVideoXPatchEmbed's order)."""
    torch.manual_seed(0)
    ours = CameraPatchEmbed(24, 32, 2, zero_init=False)
    theirs = CogVideoXPatchEmbed(patch_size=2, in_channels=24, embed_dim=32, text_embed_dim=8,
                                 use_positional_embeddings=False, use_learned_positional_embeddings=False)
    theirs.proj.load_state_dict(ours.proj.state_dict())
    cams = torch.randn(2, 3, 24, 8, 12)
    with torch.no_grad():
        expected = theirs(torch.zeros(2, 0, 8), cams)
        assert torch.equal(ours(cams), expected)


def test_camera_state_dict_round_trips_through_safetensors(tmp_path):
    model, _ = tiny_models(seed=0)
    perturb([model.controlnet_camera_embed, model.controlnet_out, model.lora_camera_proj, *lora_b_layers(model)])
    state = model.camera_state_dict()
    assert state and all(not k.startswith("base.") or ".lora_" in k for k in state)
    assert any(k.startswith("controlnet_blocks.") for k in state)
    save_state_dict(state, tmp_path / "camera.safetensors")

    fresh, _ = tiny_models(seed=0)  # same base weights, untrained camera branches
    x, text, timestep, plucker = tiny_inputs()
    with torch.no_grad():
        before = fresh(x, text, timestep, plucker)
        fresh.load_camera_state_dict(load_state_dict(tmp_path / "camera.safetensors"))
        assert torch.equal(fresh(x, text, timestep, plucker), model(x, text, timestep, plucker))
        assert not torch.equal(before, model(x, text, timestep, plucker))

    # Inference path: camera branches built without values around a loaded base, then filled.
    torch.manual_seed(0)
    base = CogVideoXTransformer3DModel(**TINY.transformer).eval()
    with torch.device("meta"):
        lean = CameraControlledTransformer(TINY, base=base).eval()
    assert any(p.is_meta for p in lean.camera_parameters())
    lean.load_camera_state_dict(load_state_dict(tmp_path / "camera.safetensors"))
    assert not any(p.is_meta for p in lean.parameters())
    with torch.no_grad():
        assert torch.equal(lean(x, text, timestep, plucker), model(x, text, timestep, plucker))

    with pytest.raises(InputError, match="missing"):
        fresh.load_camera_state_dict({k: v for k, v in state.items() if "controlnet_out.0" not in k})
    bad = dict(state, **{"lora_camera_proj.weight": torch.zeros(3, 3)})
    with pytest.raises(InputError, match="wrong shapes"):
        fresh.load_camera_state_dict(bad)


def test_paper_configuration_sizes_on_the_meta_device():
    config = VideoModelConfig.paper()
    with torch.device("meta"):
        model = CameraControlledTransformer(config)
    base = model.base
    assert all(p.is_meta for p in model.parameters())
    assert len(base.transformer_blocks) == 42
    assert base.config.num_attention_heads * base.config.attention_head_dim == 3072
    assert (base.config.in_channels, base.config.out_channels, base.config.text_embed_dim) == (32, 16, 4096)
    assert len(model.controlnet_blocks) == 21 and len(model.controlnet_out) == 21
    base_count = sum(p.numel() for p in model.base_parameters())
    controlnet_count = count_parameters(model.controlnet_blocks)
    assert abs(base_count / 5.6e9 - 1) < 0.03, base_count
    assert abs(controlnet_count / 2.8e9 - 1) < 0.03, controlnet_count
    lora = lora_modules(model)
    assert len(lora) == 42 * 4 and set(lora.values()) == {256}
    assert config.latent_shape == (13, 16, 60, 90)
    with torch.device("meta"):
        vae = build_vae(config)
    assert abs(count_parameters(vae) / 216e6 - 1) < 0.03
    assert vae.config.scaling_factor == 0.7
    sched = config.scheduler
    assert (sched["prediction_type"], sched["timestep_spacing"], sched["rescale_betas_zero_snr"],
            sched["snr_shift_scale"], sched["beta_start"], sched["beta_end"]) == (
        "v_prediction", "trailing", True, 1.0, 0.00085, 0.012)


def test_config_json_round_trip_and_clear_errors():
    for config in (VideoModelConfig.paper(), VideoModelConfig.tiny()):
        assert VideoModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    d = TINY.to_dict()
    with pytest.raises(InputError, match="unknown"):
        VideoModelConfig.from_dict(dict(d, colour="red"))
    with pytest.raises(InputError, match="in/out channels"):
        VideoModelConfig.from_dict(dict(d, transformer=dict(d["transformer"], in_channels=16)))
    with pytest.raises(InputError, match="learned positional"):
        VideoModelConfig.from_dict(dict(d, height=128))
    with pytest.raises(InputError, match="1 \\+ 4k"):
        VideoModelConfig.from_dict(dict(d, num_frames=10))
    with pytest.raises(InputError, match="controlnet_layers"):
        VideoModelConfig.from_dict(dict(d, controlnet_layers=5))
