"""train-vae: a small CogVideoX-style VAE on the shared engine (CPU, small configs, data written by the tests)."""
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from backend.errors import InputError
from backend.training.engine import Trainer, TrainConfig
from backend.training.train_vae import ReconstructingVAE, reconstruct, vae_loss
from test_train_video import metrics, run_command, scenes, single_thread, small_config  # noqa: F401 (fixtures)


def smooth_clip(frames: int, height: int, width: int) -> torch.Tensor:
    """[F, 3, H, W] in [0, 1]: one smooth colour field fading into another over the clip."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 3, 4, generator=g)
    w = torch.linspace(0, 1, frames).reshape(frames, 1, 1, 1)
    return F.interpolate(a * (1 - w) + b * w, size=(height, width), mode="bilinear", align_corners=False)


def test_vae_overfits_one_clip(tmp_path):
    from diffusers import AutoencoderKLCogVideoX
    config = small_config()
    clip = smooth_clip(9, 16, 24)
    trainer = Trainer(TrainConfig(output_dir=str(tmp_path / "run"), max_steps=90, lr=1e-2, lr_min=1e-2,
                                  log_every=1, checkpoint_every=0),
                      lambda: ReconstructingVAE(AutoencoderKLCogVideoX(**config.vae)))

    def step(model, batch, stage):
        return vae_loss(model, batch["frames"], "mse", 1e-6)

    history = trainer.fit([{"frames": clip}], step, collate_fn=lambda items: {"frames": items[0]["frames"][None]})
    trainer.end()
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < first / 10, (first, last)
    rec = reconstruct(trainer.unwrapped_model.eval(), clip[None])
    assert rec.shape == (1, 9, 3, 16, 24)
    assert F.mse_loss(rec, clip[None]) < 0.25 * clip.var()


def test_train_vae_resumes_exactly_and_validates(tmp_path, scenes):
    from backend.commands import train_vae
    (tmp_path / "small.json").write_text(json.dumps(small_config().to_dict()))
    args = ["--data", scenes, "--model-config", tmp_path / "small.json", "--frames", 9, "--size", 16, 24,
            "--steps", 4, "--lr", 1e-3, "--log-every", 1, "--checkpoint-every", 2, "--validate-every", 0,
            "--val-fraction", 0.5, "--val-clips", 1]
    assert run_command(train_vae, ["--out", tmp_path / "full", *args]) == 0
    full = metrics(tmp_path / "full")
    last = json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 5 < last["val/psnr"] < 60 and -1 <= last["val/ssim"] <= 1

    shutil.copytree(tmp_path / "full", tmp_path / "resumed", ignore=shutil.ignore_patterns("logs", "metrics.jsonl"))
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step_00000004")
    assert run_command(train_vae, ["--out", tmp_path / "resumed", *args, "--resume"]) == 0
    resumed = metrics(tmp_path / "resumed")
    assert sorted(resumed) == [3, 4]
    for s in (3, 4):
        assert resumed[s]["loss"] == pytest.approx(full[s]["loss"], rel=1e-5, abs=1e-7), s


def test_train_vae_refuses_the_paper_model(tmp_path, scenes):
    from backend.commands import train_vae
    with pytest.raises(InputError) as error:
        run_command(train_vae, ["--data", scenes, "--out", tmp_path / "run", "--model-config", "paper"])
    assert "paper" in error.value.message and "CogVideoX-5b-I2V" in error.value.hint
    assert not (tmp_path / "run").exists()


def test_train_vae_refuses_frame_counts_it_cannot_reconstruct(tmp_path, scenes):
    from backend.commands import train_vae
    with pytest.raises(InputError, match="do not decode back to 5 frames"):
        run_command(train_vae, ["--data", scenes, "--out", tmp_path / "run", "--frames", 5])
