"""train-video: the CogVideoX diffusion objective with camera conditioning, on the shared engine (CPU, small
configs, data written by the tests)."""
import argparse
import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from backend.data import collate
from backend.errors import InputError
from backend.models.video import CameraControlledTransformer, VideoModelConfig, build_scheduler, build_vae
from backend.training.diffusion import diffusion_loss, diffusion_target, drop_conditions, prepare_batch
from backend.training.engine import Trainer, TrainConfig

FRAMES, HEIGHT, WIDTH = 9, 32, 48


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: these small models run faster so on 2 shared cores; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config() -> VideoModelConfig:
    """The tiny video model at 32 x 48 pixels, 2 heads x 32 (at 2 x 16 the one-clip fit stalls at a 10x
    loss drop), with an 8-channel VAE: seconds per run on 2 CPU cores."""
    tiny = VideoModelConfig.tiny()
    return dataclasses.replace(
        tiny, name="small-test", height=HEIGHT, width=WIDTH,
        transformer={**tiny.transformer, "attention_head_dim": 32, "sample_height": HEIGHT // 8,
                     "sample_width": WIDTH // 8},
        vae={**tiny.vae, "block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4,
             "sample_height": HEIGHT, "sample_width": WIDTH})


def intrinsics(width: int, height: int) -> list[list[float]]:
    f = 0.9 * width
    return [[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]]


def trajectory(n: int, step: float, turn: float = 0.0) -> torch.Tensor:
    """n c2w poses moving along x by `step` while turning about y by `turn` radians per frame."""
    c2w = torch.eye(4).repeat(n, 1, 1)
    for i in range(n):
        a = turn * i
        c2w[i, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        c2w[i, 0, 3] = step * i
    return c2w


def write_scene(root, name: str, frames: int = 12, width: int = 72, height: int = 48, seed: int = 0) -> None:
    """A scene in our folder format: a smooth colour field panning across the frames."""
    rng = np.random.default_rng(seed)
    field = np.asarray(Image.fromarray((rng.random((4, 8, 3)) * 255).astype(np.uint8)).resize(
        (width * 2, height), Image.Resampling.BICUBIC))
    (root / name / "frames").mkdir(parents=True)
    c2w = trajectory(frames, 0.1, 0.02)
    for i in range(frames):
        Image.fromarray(field[:, 2 * i:2 * i + width]).save(root / name / "frames" / f"{i:04d}.png")
    cams = {"width": width, "height": height,
            "frames": [{"frame": i, "K": intrinsics(width, height), "c2w": c2w[i].tolist()} for i in range(frames)]}
    (root / name / "cameras.json").write_text(json.dumps(cams))


def latent_item(config: VideoModelConfig, seed: int = 0, step: float = 0.2, turn: float = 0.05) -> dict:
    """A latent-cache-like item: random latents, cameras at the model's size."""
    g = torch.Generator().manual_seed(seed)
    return {"latents": torch.randn(config.latent_shape, generator=g),
            "K": torch.tensor(intrinsics(config.width, config.height)).expand(config.num_frames, 3, 3).clone(),
            "c2w": trajectory(config.num_frames, step, turn)}


def run_command(module, argv: list[str]) -> int:
    """A command module's add_arguments + run, as `python -m backend <command>` calls them."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args([str(a) for a in argv]))


def metrics(run_dir) -> dict[int, dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if "loss" in r}


# --- the objective --------------------------------------------------------------------------------------
def test_v_target_matches_cogvideox_weighted_x0_loss():
    """Our MSE to v equals diffusers' CogVideoX fine-tuning loss: x0 from the v prediction, weighted 1/(1-ᾱ)."""
    scheduler = build_scheduler(VideoModelConfig.tiny())
    g = torch.Generator().manual_seed(0)
    x0, noise, v_pred = (torch.randn(3, 3, 4, 2, 2, generator=g) for _ in range(3))
    t = torch.tensor([5, 400, 990])
    alpha = scheduler.alphas_cumprod[t].float().reshape(3, 1, 1, 1, 1)
    v = diffusion_target(scheduler, x0, noise, t)
    torch.testing.assert_close(v, alpha.sqrt() * noise - (1 - alpha).sqrt() * x0)
    x_t = scheduler.add_noise(x0, noise, t)
    x0_pred = scheduler.get_velocity(v_pred, x_t, t)             # what the scripts do: sqrt(ᾱ) x_t − sqrt(1−ᾱ) v
    script = ((x0_pred - x0) ** 2 / (1 - alpha)).reshape(3, -1).mean(1)
    ours = ((v_pred - v) ** 2).reshape(3, -1).mean(1)
    torch.testing.assert_close(ours, script, rtol=1e-4, atol=1e-5)


def test_prepare_batch_conditions_like_the_sampler():
    config = small_config()
    torch.manual_seed(0)
    vae = build_vae(config).eval()
    frames = torch.rand(2, FRAMES, 3, HEIGHT, WIDTH)
    c2w = torch.stack([trajectory(FRAMES, 0.3), trajectory(FRAMES, 3.0)])
    c2w[1] = torch.tensor([[1.0, 0, 0, 5], [0, 1, 0, -2], [0, 0, 1, 1], [0, 0, 0, 1]]) @ c2w[1]
    K = torch.tensor(intrinsics(WIDTH, HEIGHT)).expand(2, FRAMES, 3, 3)
    batch = prepare_batch({"frames": frames, "K": K, "c2w": c2w}, config, vae, torch.ones(config.text_shape))
    T, C, h, w = config.latent_shape
    assert batch.latents.shape == (2, T, C, h, w) and batch.image_latents.shape == (2, 1, C, h, w)
    assert batch.text.shape == (2, *config.text_shape) and torch.all(batch.text == 1)
    # Normalized like inference: camera 0 at the origin (zero moments), largest distance 1 -> both clips,
    # the same motion at 10x the scale and elsewhere in the world, give the same rays.
    assert batch.plucker.shape == (2, FRAMES, 6, h, w)
    assert batch.plucker[:, 0, :3].abs().max() < 1e-6
    torch.testing.assert_close(batch.plucker[0], batch.plucker[1], atol=1e-5, rtol=1e-5)
    # The image condition is frame 0 alone: changing later frames leaves it, and the noise draw, unchanged.
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    other = frames.clone()
    other[:, 1:] = 0.5
    a = prepare_batch({"frames": frames, "K": K, "c2w": c2w}, config, vae, torch.zeros(config.text_shape), g1)
    b = prepare_batch({"frames": other, "K": K, "c2w": c2w}, config, vae, torch.zeros(config.text_shape), g2)
    torch.testing.assert_close(a.image_latents, b.image_latents)
    assert not torch.allclose(a.latents[:, 1:], b.latents[:, 1:])
    # Condition dropout with probability 1 zeroes exactly the asked condition.
    dropped = drop_conditions(batch, text_dropout=1.0, camera_dropout=1.0)
    assert torch.all(dropped.text == 0) and torch.all(dropped.plucker == 0)
    torch.testing.assert_close(dropped.image_latents, batch.image_latents)


def test_wrong_clip_size_is_a_clear_error():
    config = small_config()
    item = latent_item(config)
    item["latents"] = item["latents"][:, :, :2]
    with pytest.raises(InputError, match="rebuild the latent cache"):
        prepare_batch(collate([item]), config, None, torch.zeros(config.text_shape))


def test_diffusion_overfits_one_clip_and_learns_the_cameras(tmp_path):
    """The tiny model from scratch on the engine, one clip at a FIXED timestep and noise: the loss falls
    10x, and afterwards the camera branches are non-zero: other cameras, other predictions."""
    config = small_config()
    scheduler = build_scheduler(config)
    data = [latent_item(config)]
    text = torch.zeros(config.text_shape)
    noise = torch.randn(1, *config.latent_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500])
    trainer = Trainer(TrainConfig(output_dir=str(tmp_path / "run"), max_steps=60, lr=1e-2, lr_min=1e-3,
                                  log_every=1, checkpoint_every=0),
                      lambda: CameraControlledTransformer(config).float())
    module = trainer.unwrapped_model

    def step(model, batch, stage):
        return {"loss": diffusion_loss(model, scheduler, prepare_batch(batch, config, None, text), t, noise,
                                       module=module)}

    history = trainer.fit(data, step, collate_fn=collate)
    trainer.end()
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < first / 10, (first, last)

    assert any(p.abs().max() > 0 for p in module.controlnet_out.parameters())
    assert module.lora_camera_proj.weight.abs().max() > 0
    module.eval()
    other = latent_item(config, step=-0.3, turn=-0.2)
    with torch.no_grad():
        a = prepare_batch(collate(data), config, None, text)
        b = prepare_batch(collate([{**data[0], "c2w": other["c2w"]}]), config, None, text)
        loss_a = diffusion_loss(module, scheduler, a, t, noise)
        loss_b = diffusion_loss(module, scheduler, b, t, noise)
    assert loss_b > 2 * loss_a, (loss_a, loss_b)


# --- the command ------------------------------------------------------------------------------------------
@pytest.fixture
def scenes(tmp_path):
    root = tmp_path / "data"
    for i in range(2):
        write_scene(root, f"scene{i}", seed=i)
    return root


def test_train_video_resumes_exactly(tmp_path, scenes):
    """Stopped at step 2 and resumed, the run's steps 3 and 4 have the losses of the uninterrupted run
    (random timesteps, noise, image-noise sigma and dropout all come back with the checkpoint)."""
    from backend.commands import train_video
    from backend.models.model_dir import write_vae
    config = small_config()
    (tmp_path / "small.json").write_text(json.dumps(config.to_dict()))
    torch.manual_seed(0)
    write_vae(tmp_path / "model", build_vae(config))
    args = ["--data", scenes, "--model-config", tmp_path / "small.json", "--train-base", "--vae", tmp_path / "model",
            "--steps", 4, "--lr", 1e-3, "--log-every", 1, "--checkpoint-every", 2, "--validate-every", 0,
            "--val-fraction", 0.5, "--val-clips", 1, "--text-dropout", 0.5, "--camera-dropout", 0.3]
    assert run_command(train_video, ["--out", tmp_path / "full", *args]) == 0
    full = metrics(tmp_path / "full")
    assert "val/diffusion_loss" in json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[-1])

    shutil.copytree(tmp_path / "full", tmp_path / "resumed", ignore=shutil.ignore_patterns("logs", "metrics.jsonl"))
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step_00000004")
    assert run_command(train_video, ["--out", tmp_path / "resumed", *args, "--resume"]) == 0
    resumed = metrics(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    for s in (3, 4):
        assert resumed[s]["loss"] == pytest.approx(full[s]["loss"], rel=1e-5, abs=1e-7), s
    assert full[3]["loss"] != full[4]["loss"]


def test_exported_model_loads_and_generates(tmp_path, scenes):
    """train-vae and train-video export into one folder; with a LaLRM it loads and generates."""
    from backend.cameras import CameraBatch
    from backend.commands import train_vae, train_video
    from backend.models.lalrm import LaLRM, LaLRMConfig
    from backend.models.model_dir import write_lalrm
    from backend.models.weights import load_state_dict
    from backend.pipelines.wonderland import generate, load_pipeline
    config = small_config()
    (tmp_path / "small.json").write_text(json.dumps(config.to_dict()))
    model_dir = tmp_path / "model"
    common = ["--data", scenes, "--model-config", tmp_path / "small.json", "--steps", 2, "--val-fraction", 0]
    assert run_command(train_vae, [*common, "--out", tmp_path / "vae_run", "--export", model_dir]) == 0
    assert run_command(train_video, [*common, "--out", tmp_path / "video_run", "--train-base", "--vae", model_dir,
                                     "--lr", 1e-3, "--export", model_dir]) == 0
    lalrm_config = dataclasses.replace(LaLRMConfig.tiny(), height=HEIGHT, width=WIDTH,
                                       latent_channels=config.latent_channels)
    torch.manual_seed(0)
    write_lalrm(model_dir, LaLRM(lalrm_config))

    pipe = load_pipeline(str(model_dir))
    assert pipe.config.video == config and not pipe.random_weights
    checkpoint = load_state_dict(tmp_path / "video_run" / "checkpoints" / "step_00000002" / "model.safetensors")
    for name, value in pipe.transformer.camera_state_dict().items():
        torch.testing.assert_close(value, checkpoint[name], msg=name)
    torch.testing.assert_close(pipe.transformer.base.proj_out.weight, checkpoint["base.proj_out.weight"])
    vae_checkpoint = load_state_dict(tmp_path / "vae_run" / "checkpoints" / "step_00000002" / "model.safetensors")
    for name, value in pipe.vae.state_dict().items():
        torch.testing.assert_close(value, vae_checkpoint[f"vae.{name}"], msg=name)
    cams = CameraBatch(torch.tensor(intrinsics(WIDTH, HEIGHT)).expand(5, 3, 3).clone(), trajectory(5, 0.1), WIDTH,
                       HEIGHT)
    image = np.random.default_rng(0).random((HEIGHT, WIDTH, 3)).astype(np.float32)
    result = generate(pipe, image, cams, steps=2, preview_count=0)
    assert len(result.gaussians) > 0 and torch.isfinite(result.gaussians.means).all()


def test_train_video_builds_and_reads_a_latent_cache(tmp_path, scenes):
    """--latent-cache with --data and a VAE: the cache is built once, then training reads it."""
    from backend.commands import train_video
    from backend.data.latent_cache import LatentCacheDataset
    from backend.models.model_dir import write_vae
    config = small_config()
    (tmp_path / "small.json").write_text(json.dumps(config.to_dict()))
    torch.manual_seed(0)
    write_vae(tmp_path / "model", build_vae(config))
    args = ["--data", scenes, "--model-config", tmp_path / "small.json", "--train-base", "--vae", tmp_path / "model",
            "--latent-cache", tmp_path / "cache", "--steps", 2, "--log-every", 1, "--val-fraction", 0.5]
    assert run_command(train_video, ["--out", tmp_path / "run", *args]) == 0
    cache = LatentCacheDataset(tmp_path / "cache")
    assert len(cache) == 1 and tuple(cache[0]["latents"].shape) == config.latent_shape
    losses = metrics(tmp_path / "run")
    assert sorted(losses) == [1, 2] and all(math.isfinite(r["loss"]) for r in losses.values())


def test_frozen_base_trains_only_the_camera_branches(tmp_path, scenes):
    """Paper mode (--base without --train-base): the exported base equals the given one, the ControlNet
    starts as a copy of its blocks, and the camera branches move away from their zero start."""
    from backend.commands import train_video
    from backend.models.model_dir import write_vae, write_video
    from backend.models.weights import load_state_dict
    config = small_config()
    (tmp_path / "small.json").write_text(json.dumps(config.to_dict()))
    torch.manual_seed(0)
    base_dir, out_dir = tmp_path / "base", tmp_path / "trained"
    write_video(base_dir, CameraControlledTransformer(config).float(), build_scheduler(config))
    write_vae(base_dir, build_vae(config))
    assert run_command(train_video, ["--data", scenes, "--model-config", tmp_path / "small.json", "--base", base_dir,
                                     "--out", tmp_path / "run", "--steps", 3, "--lr", 1e-3, "--val-fraction", 0,
                                     "--export", out_dir]) == 0
    file = "transformer/diffusion_pytorch_model.safetensors"
    before, after = load_state_dict(base_dir / file), load_state_dict(out_dir / file)
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], msg=name)
    camera = load_state_dict(out_dir / "camera_branches.safetensors")
    assert camera["controlnet_out.0.weight"].abs().max() > 0 and camera["lora_camera_proj.weight"].abs().max() > 0
    assert (out_dir / "vae" / "config.json").is_file()
    # The ControlNet copy started from the base's block 0 and moved only by the training steps.
    drift = (camera["controlnet_blocks.0.attn1.to_q.weight"] - before["transformer_blocks.0.attn1.to_q.weight"]).abs()
    assert 0 < drift.max() < 0.05


def test_train_base_trains_the_base_weights(tmp_path, scenes):
    """--train-base: the base's own weights train beside the camera branches (peft's LoRA injection freezes
    them, so the trainer must unfreeze them), and without it they stay as they were."""
    from backend.commands import train_video
    from backend.models.model_dir import write_vae, write_video
    from backend.models.weights import load_state_dict
    from backend.training.train_video import build_transformer
    config = small_config()
    assert all(p.requires_grad for p in build_transformer(config, None, True).base_parameters())
    assert not any(p.requires_grad for p in build_transformer(config, None, False).base_parameters())
    (tmp_path / "small.json").write_text(json.dumps(config.to_dict()))
    torch.manual_seed(0)
    write_video(tmp_path / "init", CameraControlledTransformer(config).float(), build_scheduler(config))
    write_vae(tmp_path / "init", build_vae(config))
    assert run_command(train_video, ["--data", scenes, "--model-config", tmp_path / "small.json", "--train-base",
                                     "--init", tmp_path / "init", "--vae", tmp_path / "init", "--out", tmp_path / "run",
                                     "--steps", 2, "--lr", 1e-3,
                                     "--val-fraction", 0, "--export", tmp_path / "out"]) == 0
    file = "transformer/diffusion_pytorch_model.safetensors"
    before, after = load_state_dict(tmp_path / "init" / file), load_state_dict(tmp_path / "out" / file)
    moved = [name for name in before if not torch.equal(before[name], after[name])]
    assert "proj_out.weight" in moved and "transformer_blocks.0.attn1.to_q.weight" in moved, moved


def test_init_starts_from_a_model_folders_video_model(tmp_path, scenes):
    """--init MODEL_DIR: base and camera branches start as the folder's (a run of one step at a negligible lr
    exports them unchanged); a folder of another config is refused with a hint."""
    from backend.commands import train_video
    from backend.models.model_dir import write_vae, write_video
    from backend.models.weights import load_state_dict
    config = small_config()
    (tmp_path / "small.json").write_text(json.dumps(config.to_dict()))
    torch.manual_seed(3)
    trained = CameraControlledTransformer(config)
    with torch.no_grad():
        for p in trained.parameters():
            p.normal_(0, 0.02)
    write_vae(tmp_path / "init", build_vae(config))
    write_video(tmp_path / "init", trained, build_scheduler(config))
    common = ["--data", scenes, "--model-config", tmp_path / "small.json", "--train-base", "--vae", tmp_path / "init",
              "--steps", 1, "--lr", 1e-12, "--weight-decay", 0, "--val-fraction", 0]
    assert run_command(train_video, [*common, "--init", tmp_path / "init", "--out", tmp_path / "run",
                                     "--export", tmp_path / "out"]) == 0
    exported = load_state_dict(tmp_path / "out" / "camera_branches.safetensors")
    for name, value in trained.camera_state_dict().items():
        torch.testing.assert_close(exported[name], value, msg=name)
    base = load_state_dict(tmp_path / "out" / "transformer" / "diffusion_pytorch_model.safetensors")
    torch.testing.assert_close(base["proj_out.weight"], trained.base.proj_out.weight)

    other = dataclasses.replace(config, lora_rank=2 * config.lora_rank, lora_alpha=2 * config.lora_alpha)
    write_video(tmp_path / "other", CameraControlledTransformer(other), build_scheduler(other))
    with pytest.raises(InputError, match="--init .*other: camera weights have the wrong shapes"):
        run_command(train_video, [*common, "--init", tmp_path / "other", "--out", tmp_path / "run2"])
