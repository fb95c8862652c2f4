"""The shared training engine: config, schedule, checkpoints (safetensors + JSON), exact resume, two
gloo processes vs one."""
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from backend.errors import InputError
from backend.models.weights import load_state_dict
from backend.training.engine import (TrainConfig, Trainer, checkpoint_weights, cosine_with_warmup, epoch_batches,
                                     list_checkpoints)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Regression(torch.utils.data.Dataset):
    """y = x · w for 10 fixed points."""

    def __init__(self, n=10):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.randn(4, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def mse_step(model, batch, stage):
    loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
    return {"loss": loss, "abs": (model(batch["x"]) - batch["y"]).abs().mean()}


def small_model():
    return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Tanh(), nn.Linear(16, 1))  # dropout: RNG matters


def test_config_json_round_trip_and_checks():
    config = TrainConfig(output_dir="x", max_steps=7, betas=[0.8, 0.9], ema_decay=0.99,
                         stages=[{"steps": 3, "height": 8, "width": 8}, {"steps": 4}])
    again = TrainConfig.from_json(config.to_json())
    assert again == config and again.betas == (0.8, 0.9)
    assert [config.stage_at(s) for s in range(9)] == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    with pytest.raises(InputError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(InputError, match="unknown fields"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(InputError, match="stage 0"):
        TrainConfig(stages=[{"height": 8}])


def test_cosine_schedule_warms_up_then_decays_to_lr_min():
    config = TrainConfig(max_steps=110, lr=1.0, lr_min=0.1, warmup_steps=10)
    factors = [cosine_with_warmup(s, config) for s in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.55)
    assert factors[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_epoch_batches_are_seeded_permutations():
    a = epoch_batches(10, 4, seed=3, epoch=0)
    assert len(a) == 2 and len(set(sum(a, []))) == 8 and a == epoch_batches(10, 4, seed=3, epoch=0)
    assert a != epoch_batches(10, 4, seed=3, epoch=1)
    assert epoch_batches(3, 8, seed=0, epoch=0)[0] and len(epoch_batches(3, 8, seed=0, epoch=0)[0]) == 8


class Crash(Exception):
    pass


def run(out, crash_at_call=None, resume=False, **overrides):
    calls = []

    def step(model, batch, stage):
        calls.append(1)
        if len(calls) == crash_at_call:
            raise Crash()  # the process dies in the middle of a step
        return mse_step(model, batch, stage)

    config = TrainConfig(output_dir=str(out), max_steps=8, lr=1e-2, lr_min=1e-3, warmup_steps=2, batch_size=3,
                         log_every=1, checkpoint_every=3, keep_checkpoints=2, ema_decay=0.9, **overrides)
    trainer = Trainer(config, small_model)
    if resume:
        assert trainer.resume()
    try:
        history = trainer.fit(Regression(), step)
    except Crash:
        history = trainer.history
    trainer.end()
    return trainer, {r["step"]: r["loss"] for r in history}


def test_resume_continues_with_the_same_next_loss_and_checkpoints_hold_no_pickle(tmp_path):
    _, full = run(tmp_path / "full")
    _, first = run(tmp_path / "cut", crash_at_call=8)         # dies during step 8, after the step-6 checkpoint
    assert sorted(first) == list(range(1, 8))
    trainer, resumed = run(tmp_path / "cut", resume=True)
    assert sorted(resumed) == [7, 8]
    assert resumed[7] == pytest.approx(full[7], abs=1e-6) and resumed[8] == pytest.approx(full[8], abs=1e-6)
    assert first[7] == pytest.approx(full[7], abs=1e-6)     # the cut run was on the same path
    assert len(set(full.values())) == len(full)               # the losses really change step to step

    kept = list_checkpoints(tmp_path / "cut")
    assert [p.name for p in kept] == ["step_00000006", "step_00000008"]  # keep_checkpoints=2
    assert not [p for p in (tmp_path / "cut" / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    for folder in kept:
        names = sorted(os.listdir(folder))
        assert names == ["ema.safetensors", "model.safetensors", "optimizer.json", "optimizer.safetensors",
                         "rng_rank0.safetensors", "trainer_state.json"]
        for name in names:
            head = (folder / name).read_bytes()[:4]
            assert not head.startswith(b"PK") and head[:1] != b"\x80"  # no torch.save zip, no raw pickle
    state = json.loads((kept[-1] / "trainer_state.json").read_text())
    assert state["step"] == 8 and state["data_position"] == 8 and state["world_size"] == 1
    config = TrainConfig.from_json((tmp_path / "cut" / "train_config.json").read_text())
    assert config.max_steps == 8 and json.loads((tmp_path / "cut" / "run.json").read_text())["seed"] == 0
    ema = trainer.full_state_dict(ema=True)
    raw = trainer.full_state_dict(ema=False)
    assert set(ema) == set(raw) and not torch.equal(ema["0.weight"], raw["0.weight"])
    # what an export of the last checkpoint writes: its EMA weights
    assert torch.equal(load_state_dict(checkpoint_weights(kept[-1]))["0.weight"], ema["0.weight"])


def test_resume_refuses_another_world_size(tmp_path):
    run(tmp_path / "r")
    path = list_checkpoints(tmp_path / "r")[-1] / "trainer_state.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "world_size": 2}))
    config = TrainConfig(output_dir=str(tmp_path / "r"), max_steps=8, ema_decay=0.9)
    with pytest.raises(InputError, match="2 processes"):
        Trainer(config, small_model).resume()


TWO_RANKS = textwrap.dedent("""
    import json, sys, torch
    from torch import nn
    from backend.training.engine import TrainConfig, Trainer

    class Two(torch.utils.data.Dataset):
        def __len__(self):
            return 2
        def __getitem__(self, i):
            x = torch.randn(4, generator=torch.Generator().manual_seed(i))
            return {"x": x, "y": x.sum(0, keepdim=True)}

    out, batch = sys.argv[1], int(sys.argv[2])
    config = TrainConfig(output_dir=out, max_steps=1, lr=1e-2, batch_size=batch, log_every=1, checkpoint_every=0,
                         grad_clip=None)
    trainer = Trainer(config, lambda: nn.Linear(4, 1))
    grads = {}
    step = trainer.optimizer.step
    def record_then_step(*a, **k):
        grads["g"] = [p.grad.flatten().tolist() for p in trainer.unwrapped_model.parameters()]
        return step(*a, **k)
    trainer.optimizer.step = record_then_step
    trainer.fit(Two(), lambda m, b, s: {"loss": ((m(b["x"]) - b["y"]) ** 2).mean()})
    rank = trainer.accelerator.process_index
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"world_size": trainer.world_size, "grad": grads["g"], "loss": trainer.history[-1]["loss"]}, f)
    trainer.end()
""")


def test_two_gloo_processes_average_the_gradient_like_one_process_with_the_whole_batch(tmp_path):
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    two = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29561"]
    for out, launcher in (("two", two), ("one", [sys.executable])):
        batch = "1" if out == "two" else "2"
        result = subprocess.run([*launcher, str(script), str(tmp_path / out), batch], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert [r["world_size"] for r in ranks] == [2, 2] and one["world_size"] == 1
    for rank in ranks:  # DDP's all-reduced mean over 2 × 1 samples == the gradient of one batch of 2
        for got, want in zip(rank["grad"], one["grad"]):
            assert got == pytest.approx(want, abs=1e-6)
        assert rank["loss"] == pytest.approx(one["loss"], abs=1e-6)  # logged loss is the mean over ranks
    assert not math.isclose(ranks[0]["grad"][1][0], 0.0)
