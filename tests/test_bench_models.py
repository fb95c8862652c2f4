"""benchmarks/bench_models.py: the timed rows run at the tiny shape, and the operation counts on the meta
device add up the way the sampler's levers say they should (each count is exact, so these are equalities)."""
from types import SimpleNamespace

import pytest
import torch

from backend.models.config import ModelConfig
from backend.pipelines.camera_i2v import leading_steps

STEPS = 5


@pytest.fixture(scope="module")
def counts(bench_models):
    """flop_rows and weight_rows of the tiny model, by row name (tests name the model: tiny)."""
    rows, weights = bench_models.flop_rows(ModelConfig.tiny(), SimpleNamespace(steps=STEPS), torch.float32)
    by_name = {name: value for name, value, _ in rows}
    return SimpleNamespace(bench=bench_models, rows=by_name, weights={name: value for name, value, _ in weights})


def row(counts, start):
    (value,) = [v for name, v in counts.rows.items() if name.startswith(start)]
    return value


def test_step_counts_order_stock_below_ours_without_and_with_the_controlnet(counts):
    stock = row(counts, "1 step, stock")
    off, on = row(counts, "1 step, ours, ControlNet off"), row(counts, "1 step, ours, ControlNet on")
    assert 0 < stock < off < on  # LoRA and camera tokens cost a little, the ControlNet's blocks much more


def test_generation_counts_follow_the_levers(counts):
    stock_step, on = row(counts, "1 step, stock"), row(counts, "1 step, ours, ControlNet on")
    off = row(counts, "1 step, ours, ControlNet off")
    encode = row(counts, f"{STEPS} steps, stock") - STEPS * stock_step
    assert encode > 0
    every = row(counts, f"{STEPS} steps, ours: all steps with ControlNet")
    assert every == pytest.approx(encode + STEPS * on, rel=1e-9)
    k = leading_steps(STEPS, 0.4)
    assert 0 < k < STEPS
    assert row(counts, f"{STEPS} steps, ours: ControlNet first 40%") == pytest.approx(
        encode + k * on + (STEPS - k) * off, rel=1e-9)
    guided_half = counts.rows[f"{STEPS} steps, ours: ControlNet 40% + CFG first 50%"]
    assert guided_half < row(counts, f"{STEPS} steps, ours: ControlNet first 40%")  # batch 1 after the CFG steps
    assert row(counts, f"{STEPS} steps, ours: ControlNet 40% + CFG 50% + pyramid") < guided_half  # attention re-used


def test_weight_table_is_the_stock_transformer_plus_the_camera_branches(counts):
    w = counts.weights
    assert w["ours: whole (the largest component under offload)"] == pytest.approx(
        w["stock CogVideoX transformer"] + w["ours: camera branches (ControlNet, LoRA, camera tokens)"])
    assert all(value > 0 for value in w.values())


def test_timed_run_at_the_tiny_shape_prints_every_row(counts, capsys):
    assert counts.bench.main(["--shape", "tiny", "--steps", "2", "--repeats", "1", "--dtype", "fp32",
                              "--compile", "eager"]) == 0  # dynamo's eager backend needs no C++ compiler
    out = capsys.readouterr().out
    assert "device: " in out and "steps: 2" in out
    for name, _ in counts.bench.LEVERS:
        assert f"2 steps, ours: {name}" in out
    assert f"2 steps, ours: {counts.bench.COMPILED[0]}" in out
    assert "LaLRM forward" in out and "whole generate, 2 steps, offload" in out
