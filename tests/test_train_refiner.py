"""train-refiner (backend/training/train_refiner.py): a few steps lower the loss on a fixture cache, the result
exports into a model folder that generate uses, --resume continues, and bad options are refused clearly."""
import argparse
import json

import pytest
import torch

from backend.cli import main
from backend.errors import InputError
from backend.models.model_dir import CONFIG_FILE, read_part
from backend.models.weights import load_state_dict
from backend.pipelines.wonderland import load_pipeline
from backend.training.engine import list_checkpoints
from tests.test_depth_training import add_depth
from tests.test_train_lrm import train_lrm_cli, write_scene


def train_refiner_cli(*argv):
    from backend.commands import train_refiner
    parser = argparse.ArgumentParser()
    train_refiner.add_arguments(parser)
    return train_refiner.run(parser.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def fixture_cache(tmp_path_factory):
    """A tiny model folder and a latent cache of 2 scene clips (96x64, 9 frames, one with depth maps)."""
    root = tmp_path_factory.mktemp("refiner-data")
    for i in range(2):
        write_scene(root / "data" / f"scene{i}", seed=i)
    add_depth(root / "data" / "scene0")
    load_pipeline("tiny").save_pretrained(root / "model")
    assert train_lrm_cli("--data", root / "data", "--out", root / "cache-run", "--model-config", "tiny",
                         "--vae", root / "model", "--latent-cache", root / "cache", "--steps", "1", "--views", "1",
                         "--stride", "1", "1", "--perceptual-weight", "0", "--val-fraction", "0",
                         "--checkpoint-every", "0") == 0
    return root


@pytest.fixture(scope="module")
def plain_cache(fixture_cache, tmp_path_factory):
    """A second latent cache, of a scene without depth maps (the fixture's stores depth)."""
    root = tmp_path_factory.mktemp("refiner-plain")
    write_scene(root / "data" / "scene", seed=5)
    assert train_lrm_cli("--data", root / "data", "--out", root / "run", "--model-config", "tiny",
                         "--vae", fixture_cache / "model", "--latent-cache", root / "cache", "--steps", "1",
                         "--views", "1", "--stride", "1", "1", "--perceptual-weight", "0", "--val-fraction", "0",
                         "--checkpoint-every", "0") == 0
    return root / "cache"


def test_caches_with_and_without_depth_mix_in_one_run(fixture_cache, plain_cache, tmp_path):
    from backend.data import collate
    from backend.data.latent_cache import LatentCacheDataset, latent_caches
    assert "depth" not in LatentCacheDataset(plain_cache)[0]
    both = latent_caches([fixture_cache / "cache", plain_cache])
    items = [both[0], both[len(both) - 1]]
    batch = collate(items)
    assert batch["depth"].shape[0] == 2 and (batch["depth"][1] == 0).all() and batch["depth"][0].abs().sum() > 0
    with pytest.raises(ValueError, match="differ in their keys"):
        collate([items[0], LatentCacheDataset(plain_cache)[0]])
    common = ["--latent-cache", fixture_cache / "cache", plain_cache, "--steps", "2", "--batch-size", "3",
              "--views", "1", "--checkpoint-every", "0", "--depth-weight", "0.1"]
    (tmp_path / "small.json").write_text(json.dumps({"width": 8, "dilations": [1, 2]}))
    assert train_refiner_cli("--model", fixture_cache / "model", "--out", tmp_path / "ref", *common,
                             "--model-config", tmp_path / "small.json") == 0
    assert train_lrm_cli("--vae", fixture_cache / "model", "--out", tmp_path / "lrm", "--model-config", "tiny",
                         "--perceptual-weight", "0", "--val-fraction", "0", "--stride", "1", "1", *common) == 0


def test_init_gives_the_config_when_model_config_is_left_out(fixture_cache, tmp_path):
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"width": 8, "dilations": [1, 2]}))
    base = ["--model", fixture_cache / "model", "--latent-cache", fixture_cache / "cache", "--views", "1",
            "--steps", "1", "--checkpoint-every", "0"]
    assert train_refiner_cli(*base, "--out", tmp_path / "a", "--model-config", small, "--export", tmp_path / "m") == 0
    assert train_refiner_cli(*base, "--out", tmp_path / "b", "--init", tmp_path / "m", "--export", tmp_path / "n") == 0
    assert read_part(tmp_path / "n", "refiner").config == read_part(tmp_path / "m", "refiner").config
    with pytest.raises(InputError, match="not the one asked for") as error:
        train_refiner_cli(*base, "--out", tmp_path / "c", "--init", tmp_path / "m", "--model-config", "default")
    assert "leave out --model-config" in error.value.hint


def losses(run):
    return [m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in m]


def test_a_few_steps_lower_the_loss_and_export_a_refiner_generate_uses(fixture_cache, tmp_path):
    model = tmp_path / "model"
    load_pipeline("tiny").save_pretrained(model)
    # all 9 views every step and batches of both clips: the loss is the same function at every step
    assert train_refiner_cli("--model", fixture_cache / "model", "--latent-cache", fixture_cache / "cache",
                             "--out", tmp_path / "run", "--steps", "8", "--views", "9", "--batch-size", "2",
                             "--lr", "3e-3", "--lr-min", "3e-3", "--log-every", "1", "--depth-weight", "5",
                             "--checkpoint-every", "4", "--export", model) == 0
    logged = losses(tmp_path / "run")
    assert len(logged) == 8 and logged[-1] < 0.9 * logged[0]
    refiner = read_part(model, "refiner")
    trained = load_state_dict(list_checkpoints(tmp_path / "run")[-1] / "model.safetensors")
    assert torch.equal(refiner.state_dict()["head.weight"], trained["head.weight"])
    assert trained["head.weight"].abs().sum() > 0                    # it left its zero start
    assert json.loads((model / CONFIG_FILE).read_text())["refiner"]["width"] == 32
    assert load_pipeline(str(model)).refiner is not None


def test_resume_continues_from_the_last_checkpoint(fixture_cache, tmp_path):
    args = ["--model", fixture_cache / "model", "--latent-cache", fixture_cache / "cache", "--out", tmp_path / "run",
            "--views", "2", "--log-every", "1", "--checkpoint-every", "2", "--model-config", tmp_path / "small.json"]
    (tmp_path / "small.json").write_text(json.dumps({"width": 8, "dilations": [1, 2]}))
    assert train_refiner_cli(*args, "--steps", "2") == 0
    assert train_refiner_cli(*args, "--steps", "3", "--resume") == 0
    steps = [m["step"] for m in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())]
    assert steps == [1, 2, 3]


@pytest.mark.parametrize("options, message", [
    (["--views", "0"], "--views 0"),
    (["--data", "scenes"], "reads latent caches, not scene folders"),
    (["--model", "no-such-model"], "--model 'no-such-model' is neither a folder nor a shipped model"),
    (["--model-config", "no-such.json"], "neither a named config nor a JSON file"),
    (["--depth-weight", "-1"], "loss weights"),
    (["--latent-cache", "no-such-cache"], "holds no finished latent cache"),
    (["--val-fraction", "0.1"], "does not validate on held-out clips: --val-fraction"),
    (["--val-clips", "4", "--validate-every", "5"], "--val-clips, --validate-every would do nothing"),
])
def test_bad_options_are_refused_with_what_to_do(tmp_path, options, message, capsys):
    argv = ["train-refiner", "--out", str(tmp_path / "run"), "--latent-cache", str(tmp_path / "none"), *options]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "hint:" in err


def test_a_model_folder_without_lalrm_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no lalrm.safetensors"):
        train_refiner_cli("--model", tmp_path / "empty", "--latent-cache", tmp_path / "cache", "--out", tmp_path / "r")
