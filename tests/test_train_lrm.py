"""LaLRM training: overfitting one clip, the losses (VGG-19 from safetensors only), and `train-lrm` end to end
down to a model folder that the generate pipeline loads."""
import argparse
import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from backend.cameras import CameraBatch
from backend.data import collate
from backend.errors import InputError
from backend.models.lalrm import LaLRM, LaLRMConfig
from backend.models.weights import load_state_dict
from backend.training.engine import TrainConfig, Trainer, list_checkpoints
from backend.training.losses import LossWeights, ReconstructionLoss, VGG19Features, load_vgg19
from backend.training.metrics import image_metrics
from backend.training.train_lrm import LaLRMObjective, LRMData, clip_cameras

# One latent frame of 32×32 px (2×2 tokens) -> 16×16 Gaussians: small enough for ~1 s steps on 2 busy cores.
MICRO = LaLRMConfig(num_frames=1, height=32, width=32, latent_channels=4, hidden_size=32, num_layers=1, num_heads=2)


class OneClip(torch.utils.data.Dataset):
    """A fixed latent clip (as the latent cache gives) and a smooth target image."""

    def __init__(self):
        self.latents = torch.randn(MICRO.latent_shape, generator=torch.Generator().manual_seed(1))
        y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
        self.frames = torch.stack([x, y, 0.5 * (1 - x)])[None]

    def __len__(self):
        return 1

    def __getitem__(self, i):
        K = torch.tensor([[[32.0, 0, 16], [0, 32, 16], [0, 0, 1]]])
        return {"latents": self.latents, "frames": self.frames, "K": K, "c2w": torch.eye(4)[None], "index": i}


def test_trainer_overfits_one_clip(tmp_path):
    config = TrainConfig(output_dir=str(tmp_path), max_steps=25, lr=1e-2, lr_min=1e-3, weight_decay=0.0,
                         log_every=1, checkpoint_every=0)
    trainer = Trainer(config, lambda: LaLRM(MICRO))
    objective = LaLRMObjective(trainer.unwrapped_model, ReconstructionLoss(LossWeights(perceptual=0)),
                               LRMData(views=1, render_height=16, render_width=16))
    history = trainer.fit(OneClip(), objective, collate_fn=collate)
    mse = [r["mse"] for r in history]
    assert mse[0] > 0.05 and min(mse[-3:]) * 10 <= mse[0], mse
    assert {"loss", "mse", "scale_reg", "opacity_reg", "lr", "grad_norm"} <= set(history[-1])
    rendered, target = objective.render_clip(collate([OneClip()[0]]), {})
    assert image_metrics(rendered, target)["psnr"] > 10 * math.log10(1 / mse[0]) + 8


def test_clip_cameras_normalize_inputs_like_inference_and_carry_other_frames_along():
    c2w = torch.eye(4).repeat(3, 1, 1)
    c2w[:, :3, 3] = torch.tensor([[1.0, 2, 3], [3.0, 2, 3], [5.0, 2, 3]])  # camera 0 at (1,2,3), then +2, +4 in x
    K = torch.tensor([[50.0, 0, 16], [0, 50, 16], [0, 0, 1]]).repeat(3, 1, 1)
    inputs, all_cams, norm = clip_cameras(K, c2w, 32, 32, [0, 1])
    assert norm.scale == pytest.approx(2.0)  # camera 1 is 2 world units from camera 0
    assert torch.allclose(inputs.c2w[0], torch.eye(4))
    assert torch.allclose(inputs.c2w[1, :3, 3], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(all_cams.c2w[2, :3, 3], torch.tensor([2.0, 0, 0]))  # beyond the inputs: same map


def test_perceptual_loss_refuses_without_vgg_weights_and_loads_torchvision_keys(tmp_path):
    with pytest.raises(InputError) as error:
        ReconstructionLoss(LossWeights(perceptual=0.5))
    assert "--perceptual-weight 0" in error.value.hint and "--vgg19" in error.value.hint
    with pytest.raises(InputError, match="no --vgg19 file"):
        load_vgg19(None)
    torch.save({}, tmp_path / "vgg19.pth")
    with pytest.raises(InputError, match="pickle"):
        load_vgg19(tmp_path / "vgg19.pth")

    reference = VGG19Features()  # random weights, saved in torchvision's layout with its classifier keys
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    assert "features.34.weight" in state and state["features.0.weight"].shape == (64, 3, 3, 3)
    save_file({**state, "classifier.0.weight": torch.zeros(2, 2)}, tmp_path / "vgg19.safetensors")
    vgg = load_vgg19(tmp_path / "vgg19.safetensors")
    assert torch.equal(vgg.features[34].weight, state["features.34.weight"])
    assert not any(p.requires_grad for p in vgg.parameters())
    loss = ReconstructionLoss(LossWeights(perceptual=0.5, ssim=0.2), vgg)
    a = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    same, other = loss(a, a), loss(a.flip(-1), a)
    assert same["perceptual"] == 0 and other["perceptual"] > 0 and same["ssim"] == pytest.approx(1.0)
    assert other["loss"] > other["mse"] + 0.5 * other["perceptual"] - 1e-6


def write_scene(folder, frames=9, size=(96, 64), seed=0):
    """Our scene layout: cameras.json + frames/NNNN.png, a camera dollying sideways past a textured wall."""
    w, h = size
    (folder / "frames").mkdir(parents=True)
    rng = np.random.RandomState(seed)
    base = rng.rand(h // 8, w // 8 + frames, 3)
    entries = []
    for i in range(frames):
        crop = base[:, i:i + w // 8]
        pixels = (np.kron(crop, np.ones((8, 8, 1))) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "frames" / f"{i:04d}.png")
        c2w = np.eye(4)
        c2w[0, 3] = 0.1 * i
        entries.append({"frame": i, "K": [[80, 0, w / 2], [0, 80, h / 2], [0, 0, 1]], "c2w": c2w.tolist()})
    (folder / "cameras.json").write_text(json.dumps({"width": w, "height": h, "frames": entries}))


def train_lrm_cli(*argv):
    from backend.commands import train_lrm
    parser = argparse.ArgumentParser()
    train_lrm.add_arguments(parser)
    return train_lrm.run(parser.parse_args([str(a) for a in argv]))


def test_train_lrm_needs_valid_scenes(tmp_path):
    (tmp_path / "data" / "broken").mkdir(parents=True)
    (tmp_path / "data" / "broken" / "cameras.json").write_text("{not json")
    with pytest.raises(InputError, match="scene"):
        train_lrm_cli("--data", tmp_path / "data", "--out", tmp_path / "run", "--latent-cache", tmp_path / "cache",
                      "--perceptual-weight", "0")
    with pytest.raises(InputError, match="--perceptual-weight 0"):  # refused before any data is read
        train_lrm_cli("--data", tmp_path / "data", "--out", tmp_path / "run")


def test_train_lrm_command_exports_a_model_folder_that_generate_loads(tmp_path, caplog):
    from backend.models.config import ModelConfig
    from backend.models.model_dir import write_vae, write_video
    from backend.pipelines.wonderland import generate, load_pipeline

    for i in range(2):
        write_scene(tmp_path / "data" / f"scene{i}", seed=i)
    (tmp_path / "data" / "bad").mkdir()
    (tmp_path / "data" / "bad" / "cameras.json").write_text('{"width": 96, "height": 64, "frames": [{"K": 1}]}')
    model = tmp_path / "model"
    tiny = load_pipeline("tiny")
    write_vae(model, tiny.vae)
    write_video(model, tiny.transformer, tiny.scheduler)
    with caplog.at_level(logging.WARNING):
        code = train_lrm_cli("--data", tmp_path / "data", "--out", tmp_path / "run", "--model-config", "tiny",
                             "--vae", model, "--steps", "2", "--views", "1", "--render-size", "16", "24",
                             "--stride", "1", "1", "--perceptual-weight", "0", "--ssim-weight", "0.1",
                             "--val-fraction", "0.5", "--val-clips", "1", "--checkpoint-every", "1",
                             "--log-every", "1", "--export", model)
    assert code == 0
    assert any("bad" in r.getMessage() and "cameras.json" in r.getMessage() for r in caplog.records)
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2]
    assert any("val/psnr" in m and math.isfinite(m["val/psnr"]) for m in metrics)
    assert list((run / "logs").rglob("events.out.tfevents*"))  # TensorBoard scalars and sample images
    checkpoint = list_checkpoints(run)[-1]
    assert all(p.suffix in (".safetensors", ".json") for p in checkpoint.iterdir())

    pipe = load_pipeline(str(model))
    assert not pipe.random_weights and pipe.lalrm.config == ModelConfig.tiny().lalrm
    trained = load_state_dict(checkpoint / "model.safetensors")
    assert torch.equal(pipe.lalrm.state_dict()["fuse.weight"], trained["fuse.weight"])
    assert not torch.equal(trained["fuse.weight"], tiny.lalrm.state_dict()["fuse.weight"])
    c2w = torch.eye(4).repeat(3, 1, 1)
    c2w[:, 0, 3] = torch.tensor([0.0, 0.1, 0.2])
    cameras = CameraBatch(torch.tensor([[80.0, 0, 48], [0, 80, 32], [0, 0, 1]]).repeat(3, 1, 1), c2w, 96, 64)
    result = generate(pipe, np.full((64, 96, 3), 0.5, dtype=np.float32), cameras, preview_count=0)
    assert len(result.gaussians) > 0 and torch.isfinite(result.gaussians.means).all()


def test_supervision_renderer_is_chosen_by_lrm_data(tmp_path):
    """LRMData.renderer reaches the supervision renders: "gsplat" on CPU tensors is render's own refusal (so the
    choice is not ignored); an unknown name, or one without gradients, is refused when the options are read."""
    with pytest.raises(InputError, match="renderer 'cuda' is unknown"):
        LRMData(renderer="cuda")
    with pytest.raises(InputError, match="renderer 'compiled' is unknown or cannot train") as err:
        LRMData(renderer="compiled")  # its renders have no gradients: training would fit the regularisers only
    assert "compiled" not in err.value.hint
    lalrm = LaLRM(MICRO)
    batch = collate([OneClip()[0]])
    for renderer in ("torch", "gsplat"):
        objective = LaLRMObjective(lalrm, ReconstructionLoss(LossWeights(perceptual=0)),
                                   LRMData(views=1, render_height=16, render_width=16, renderer=renderer))
        if renderer == "gsplat" and not torch.cuda.is_available():
            with pytest.raises(InputError, match="gsplat renderer needs the Gaussians on a CUDA device"):
                objective(lalrm, batch, {})
        else:
            assert torch.isfinite(objective(lalrm, batch, {})["loss"])
