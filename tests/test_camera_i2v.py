"""The camera-controlled image-to-video sampler (backend.pipelines.camera_i2v) with the tiny model:
agreement with diffusers' CogVideoXImageToVideoPipeline, determinism, progress, cancel, CFG
batching, the ControlNet step fraction, and keeping the condition as latent frame 0."""
import pytest
import torch
from diffusers import CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel

from backend.errors import Cancelled, InputError
from backend.models.video import CameraControlledTransformer, VideoModelConfig, build_scheduler, build_vae
from backend.pipelines.camera_i2v import (compile_blocks, leading_steps, decode_latents, encode_image,
                                         rotary_embeddings, sample_video_latents)

TINY = VideoModelConfig.tiny()
STEPS = 4


@pytest.fixture(scope="module")
def tiny():
    """Seeded random tiny camera model (camera branches perturbed, so cameras matter), VAE, inputs."""
    torch.manual_seed(0)
    model = CameraControlledTransformer(TINY).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in (model.controlnet_camera_embed, model.controlnet_out, model.lora_camera_proj):
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    vae = build_vae(TINY).eval()
    image = torch.rand(1, 3, TINY.height, TINY.width, generator=g) * 2 - 1
    _, _, h, w = TINY.latent_shape
    plucker = torch.randn(1, TINY.num_frames, 6, h, w, generator=g)
    with torch.no_grad():
        image_latents = encode_image(vae, image, torch.Generator().manual_seed(1))
    return model, vae, image, image_latents, plucker


@pytest.fixture(scope="module")
def reference(tiny):
    """Latents from the tiny fixture with seed 0 and the config's defaults (4 steps, no CFG)."""
    model, _, _, image_latents, plucker = tiny
    return sample(model, image_latents, plucker, seed=0)


def sample(model, image_latents, plucker, seed=0, **kwargs):
    kwargs.setdefault("steps", STEPS)
    return sample_video_latents(model, build_scheduler(TINY), image_latents, plucker,
                                generator=torch.Generator().manual_seed(seed), **kwargs)


def count_calls(module):
    """A list that grows by the batch size each time `module` runs; returns (list, hook handle)."""
    calls = []
    handle = module.register_forward_hook(
        lambda m, args, out: calls.append((out[0] if isinstance(out, tuple) else out).shape[0]))
    return calls, handle


def test_matches_diffusers_image_to_video_pipeline_with_an_untrained_camera_model():
    """At init the camera model equals CogVideoX, so our loop must reproduce diffusers' pipeline
    (encode, noise, rotary embeddings, DPM two-step updates, CFG) bit for bit."""
    torch.manual_seed(0)
    base = CogVideoXTransformer3DModel(**TINY.transformer).eval()
    stock = CogVideoXTransformer3DModel(**TINY.transformer).eval()
    stock.load_state_dict(base.state_dict())
    model = CameraControlledTransformer(TINY, base=base).eval()
    vae = build_vae(TINY).eval()
    pipe = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=stock,
                                         scheduler=build_scheduler(TINY))
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, TINY.height, TINY.width, generator=g)  # [0, 1] for the pipeline
    prompt, negative = torch.randn(1, *TINY.text_shape, generator=g), torch.randn(1, *TINY.text_shape, generator=g)
    _, _, h, w = TINY.latent_shape
    plucker = torch.randn(1, TINY.num_frames, 6, h, w, generator=g)
    for guidance in (1.0, 3.0):
        expected = pipe(image=image, prompt_embeds=prompt, negative_prompt_embeds=negative, height=TINY.height,
                        width=TINY.width, num_frames=TINY.num_frames, num_inference_steps=STEPS,
                        guidance_scale=guidance, generator=torch.Generator().manual_seed(5),
                        output_type="latent").frames
        g = torch.Generator().manual_seed(5)  # one generator through encode and sampling, like the pipeline
        with torch.no_grad():
            image_latents = encode_image(vae, image * 2 - 1, g)
        ours = sample_video_latents(model, build_scheduler(TINY), image_latents, plucker, steps=STEPS,
                                    guidance_scale=guidance, prompt_embeds=prompt,
                                    negative_prompt_embeds=negative, generator=g)
        assert torch.equal(ours, expected), guidance


def test_shape_and_determinism_by_seed(tiny, reference):
    model, _, _, image_latents, plucker = tiny
    progress = []
    a = sample_video_latents(model, build_scheduler(TINY), image_latents, plucker,  # config defaults
                             generator=torch.Generator().manual_seed(0), on_step=lambda i, n: progress.append(n))
    assert progress == [TINY.num_inference_steps] * TINY.num_inference_steps
    assert a.shape == (1, *TINY.latent_shape)
    assert torch.isfinite(a).all()
    assert torch.equal(a, reference)
    assert (a - sample(model, image_latents, plucker, seed=1)).abs().mean() > 1e-2
    # The camera conditions the result: another trajectory, another video.
    assert (a - sample(model, image_latents, plucker.flip(1), seed=0)).abs().mean() > 1e-3


def test_keep_image_frame_returns_the_condition_as_frame_zero_and_leaves_the_rest(tiny, reference):
    model, _, _, image_latents, plucker = tiny
    kept = sample(model, image_latents, plucker, seed=0, keep_image_frame=True)
    assert torch.equal(kept[:, :1], image_latents) and not torch.allclose(reference[:, :1], image_latents)
    assert torch.equal(kept[:, 1:], reference[:, 1:])


def test_on_step_reports_every_step_and_cancel_stops_after_step_two(tiny):
    model, _, _, image_latents, plucker = tiny
    progress = []
    controlnet_calls, handle = count_calls(model.controlnet_blocks[0])
    try:
        sample(model, image_latents, plucker, on_step=lambda step, total: progress.append((step, total)))
    finally:
        handle.remove()
    assert progress == [(i, STEPS) for i in range(1, STEPS + 1)]
    assert len(controlnet_calls) == STEPS  # controlnet_fraction 1.0 (the tiny default): every step

    progress.clear()
    calls, handle = count_calls(model.base.patch_embed)
    try:
        with pytest.raises(Cancelled):
            sample(model, image_latents, plucker, on_step=lambda step, total: progress.append(step),
                   should_cancel=lambda: len(progress) >= 2)
    finally:
        handle.remove()
    assert progress == [1, 2] and len(calls) == 2  # no third model call


def test_controlnet_fraction_skips_the_branch_in_later_steps(tiny, reference):
    model, _, _, image_latents, plucker = tiny
    runs = {}
    for fraction in (0.5, 0.0):
        calls, handle = count_calls(model.controlnet_blocks[0])
        try:
            runs[fraction] = sample(model, image_latents, plucker, controlnet_fraction=fraction)
        finally:
            handle.remove()
        assert len(calls) == leading_steps(STEPS, fraction), fraction
    assert [leading_steps(STEPS, f) for f in (1.0, 0.5, 0.0)] == [4, 2, 0]
    assert leading_steps(50, 0.4) == 20
    assert (reference - runs[0.5]).abs().mean() > 1e-4
    assert (runs[0.5] - runs[0.0]).abs().mean() > 1e-4
    with pytest.raises(InputError, match="outside"):
        sample(model, image_latents, plucker, controlnet_fraction=1.5)


def test_cfg_is_batched_only_above_guidance_one(tiny):
    model, _, _, image_latents, plucker = tiny
    g = torch.Generator().manual_seed(11)
    prompt, negative = torch.randn(1, *TINY.text_shape, generator=g), torch.randn(1, *TINY.text_shape, generator=g)
    batches = {}
    results = {}
    for guidance in (1.0, 4.0):
        calls, handle = count_calls(model.base.patch_embed)
        try:
            results[guidance] = sample(model, image_latents, plucker, guidance_scale=guidance,
                                       prompt_embeds=prompt, negative_prompt_embeds=negative)
        finally:
            handle.remove()
        batches[guidance] = calls
    assert batches == {1.0: [1] * STEPS, 4.0: [2] * STEPS}
    assert (results[1.0] - results[4.0]).abs().mean() > 1e-3
    # Without text embeddings both CFG halves would be the same zeros: one batch, the unguided result.
    calls, handle = count_calls(model.base.patch_embed)
    try:
        unguided = sample(model, image_latents, plucker, guidance_scale=4.0)
    finally:
        handle.remove()
    assert calls == [1] * STEPS
    assert torch.equal(unguided, sample(model, image_latents, plucker, guidance_scale=1.0))
    with pytest.raises(InputError, match="prompt embeddings"):
        sample(model, image_latents, plucker, prompt_embeds=prompt[:, :-1])


def test_guidance_fraction_runs_cfg_only_in_the_first_steps(tiny):
    model, _, _, image_latents, plucker = tiny
    g = torch.Generator().manual_seed(11)
    prompt, negative = torch.randn(1, *TINY.text_shape, generator=g), torch.randn(1, *TINY.text_shape, generator=g)
    runs = {}
    for fraction in (1.0, 0.5):
        calls, handle = count_calls(model.base.patch_embed)
        try:
            runs[fraction] = sample(model, image_latents, plucker, guidance_scale=4.0, prompt_embeds=prompt,
                                    negative_prompt_embeds=negative, guidance_fraction=fraction)
        finally:
            handle.remove()
        assert calls == [2] * round(fraction * STEPS) + [1] * (STEPS - round(fraction * STEPS)), fraction
    # the last steps without the unconditional pass change the result, but not by much
    assert 0 < (runs[1.0] - runs[0.5]).abs().mean() < runs[1.0].abs().mean()


def test_pyramid_attention_broadcast_cache_changes_the_work_and_is_removed(tiny, reference):
    model, _, _, image_latents, plucker = tiny
    attn = model.base.transformer_blocks[1].attn1
    calls, handle = count_calls(attn.to_q)  # runs only when attention is computed, not broadcast
    try:
        cached = sample(model, image_latents, plucker, cache="pab")
    finally:
        handle.remove()
    # Timesteps 999, 749, 499, 249: 999 is outside PAB's (100, 800), then every second one is broadcast.
    assert len(calls) == 2
    assert not model.base.is_cache_enabled
    assert torch.isfinite(cached).all() and not torch.equal(cached, reference)
    assert torch.equal(sample(model, image_latents, plucker), reference)  # cache gone afterwards


def test_pyramid_attention_broadcast_starts_over_when_guidance_stops(tiny):
    """PAB re-uses attention outputs between steps; those of the guided batch of 2 cannot stand in for the
    single pass after guidance stops, so the cache starts again there (before, this broke or broadcast)."""
    model, _, _, image_latents, plucker = tiny
    g = torch.Generator().manual_seed(12)
    prompt, negative = torch.randn(1, *TINY.text_shape, generator=g), torch.randn(1, *TINY.text_shape, generator=g)
    calls, handle = count_calls(model.base.transformer_blocks[1].attn1.to_q)
    try:
        latents = sample(model, image_latents, plucker, cache="pab", guidance_scale=4.0, prompt_embeds=prompt,
                         negative_prompt_embeds=negative, guidance_fraction=0.25)
    finally:
        handle.remove()
    # 999 guided (outside PAB's range); 749 single, a fresh cache computes; 499 broadcast; 249 computed
    assert calls == [2, 1, 1]
    assert latents.shape == (1, *TINY.latent_shape)
    assert torch.isfinite(latents).all() and not model.base.is_cache_enabled


def test_encode_image_scales_latents_and_decode_returns_frames(tiny):
    model, vae, image, image_latents, _ = tiny
    assert image_latents.shape == (1, 1, TINY.latent_channels, TINY.latent_height, TINY.latent_width)
    with torch.no_grad():
        dist = vae.encode(image.unsqueeze(2)).latent_dist
        scaled_sample = dist.sample(torch.Generator().manual_seed(1)).permute(0, 2, 1, 3, 4) * 0.7
        again = encode_image(vae, image, torch.Generator().manual_seed(1))
        noisy = encode_image(vae, image, torch.Generator().manual_seed(1), noise_sigma=0.5)
        frames = decode_latents(vae, image_latents)
    assert torch.equal(again, image_latents)
    assert (noisy - image_latents).abs().mean() > 1e-3
    assert torch.equal(image_latents, scaled_sample)  # a latent sample times scaling_factor 0.7
    assert (dist.std > 1e-3).all()  # a real sample, not the mode
    assert frames.shape == (1, 1, 3, TINY.height, TINY.width)
    with pytest.raises(InputError, match="image batch"):
        encode_image(vae, image[0])


def test_tiled_decode_puts_the_frame_together_or_refuses(tiny, reference):
    _, vae, _, _, _ = tiny
    with torch.no_grad():
        whole = decode_latents(vae, reference)
        with pytest.raises(InputError, match="leave out --vae-tiling"):  # its default 32 x 48 tiles do not line up
            decode_latents(vae, reference, tiling=True)
        assert not vae.use_tiling
        vae.tile_sample_min_height, vae.tile_sample_min_width = 48, 40  # tiles that do, smaller than 64 x 96
        try:
            tiled = decode_latents(vae, reference, tiling=True)
        finally:
            vae.tile_sample_min_height, vae.tile_sample_min_width = 32, 48
    assert not vae.use_tiling
    assert tiled.shape == whole.shape == (1, TINY.num_frames, 3, TINY.height, TINY.width)
    assert not torch.equal(tiled, whole)  # it did decode in tiles
    assert torch.corrcoef(torch.stack([tiled.flatten(), whole.flatten()]))[0, 1] > 0.5, "tiles are the same video"


def test_paper_vae_decodes_whole_frames_in_tiles_on_the_meta_device():
    """At 480 x 720 the default 240 x 360 tiles line up: 13 latent frames come back as 49 whole frames."""
    paper = VideoModelConfig.paper()
    with torch.device("meta"):
        vae = build_vae(paper).to(torch.bfloat16)
    with torch.no_grad():
        video = decode_latents(vae, torch.randn(1, *paper.latent_shape, device="meta"), tiling=True)
    assert video.shape == (1, paper.num_frames, 3, paper.height, paper.width)


def test_refuses_sizes_the_learned_positional_embedding_cannot_make(tiny):
    model, _, _, image_latents, plucker = tiny
    with pytest.raises(InputError, match="learned positional embedding"):
        sample(model, image_latents, plucker, num_frames=13)
    with pytest.raises(InputError, match="image_latents"):
        sample(model, image_latents[:, :, :2], plucker)


def test_compiled_blocks_give_the_same_prediction():
    """Regional compilation leaves the camera hooks outside the compiled code (dynamo's "eager" backend
    traces like inductor but needs no C++ compiler, so this runs anywhere)."""
    torch.manual_seed(0)
    model = CameraControlledTransformer(TINY).eval()
    with torch.no_grad():
        for p in model.controlnet_out.parameters():
            p.normal_()
    t, c, h, w = TINY.latent_shape
    g = torch.Generator().manual_seed(2)
    x, text = torch.randn(1, t, 2 * c, h, w, generator=g), torch.randn(1, *TINY.text_shape, generator=g)
    plucker, timestep = torch.randn(1, TINY.num_frames, 6, h, w, generator=g), torch.tensor([500])
    emb = rotary_embeddings(model, h, w, t, torch.device("cpu"))
    with torch.no_grad():
        expected = model(x, text, timestep, plucker, image_rotary_emb=emb)
        compile_blocks(model, backend="eager")
        assert torch.equal(model(x, text, timestep, plucker, image_rotary_emb=emb), expected)
        assert not torch.equal(model(x, text, timestep, plucker, image_rotary_emb=emb, use_controlnet=False),
                               expected)


def test_compiled_sampling_with_the_lever_stack_stops_compiling_after_one_run(tiny):
    """Batch 2 then 1, ControlNet on then off, frozen and trainable blocks: a handful of graphs, all made
    in the first run and fewer than dynamo's recompile limit (at the limit, the rest would run eager);
    a second run reuses them."""
    from torch._dynamo.utils import counters

    _, vae, _, image_latents, plucker = tiny
    torch.manual_seed(0)
    model = CameraControlledTransformer(TINY).eval()
    compile_blocks(model, backend="eager")
    g = torch.Generator().manual_seed(13)
    prompt, negative = torch.randn(1, *TINY.text_shape, generator=g), torch.randn(1, *TINY.text_shape, generator=g)

    def run():
        return sample(model, image_latents, plucker, steps=5, guidance_scale=4.0, prompt_embeds=prompt,
                      negative_prompt_embeds=negative, controlnet_fraction=0.4, guidance_fraction=0.2)

    before = counters["stats"]["unique_graphs"]
    first = run()
    graphs = counters["stats"]["unique_graphs"]
    assert 0 < graphs - before < torch._dynamo.config.recompile_limit
    assert torch.equal(run(), first)
    assert counters["stats"]["unique_graphs"] == graphs

