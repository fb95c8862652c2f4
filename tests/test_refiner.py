"""The detail layer's learned refiner (backend/models/refiner.py): an untrained one changes nothing, its
corrections stay in bounds at any size, and model folders carry it (or not) through save and load."""
import json
import math

import numpy as np
import pytest
import torch

from backend.cameras import CameraBatch
from backend.detail import SPLAT_OPACITY, detail_layer, lift
from backend.errors import InputError
from backend.gaussians import Gaussians
from backend.models.model_dir import CONFIG_FILE, REFINER_FILE, read_part
from backend.models.refiner import INPUT_CHANNELS, Refiner, RefinerConfig
from backend.pipelines.wonderland import DEFAULT_MODEL, SHIPPED_DIR, WonderlandPipeline, generate, load_pipeline


def camera(width: int, height: int, f: float) -> CameraBatch:
    return CameraBatch(torch.tensor([[[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]]), torch.eye(4)[None],
                       width, height)


def model_and_photo(seed: int = 0):
    """A stand-in for the model's Gaussians (a photo lifted onto a slanted wall with a box, at 48x32) and the
    photo at the detail size (96x64)."""
    g = torch.Generator().manual_seed(seed)
    v, u = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(48) + 0.5, indexing="ij")
    depth = 2.0 + u / 48
    depth[8:24, 16:32] = 1.2
    local = lift(torch.rand(32, 48, 3, generator=g), depth, camera(48, 32, 40.0).K[0])
    return local, torch.rand(64, 96, 3, generator=g), camera(48, 32, 40.0)


def busy(refiner: Refiner, seed: int = 0) -> Refiner:
    """The refiner with a random (non-zero) output layer, as training leaves it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        refiner.head.weight.copy_(torch.randn(refiner.head.weight.shape, generator=g) * 0.5)
        refiner.head.bias.copy_(torch.randn(refiner.head.bias.shape, generator=g) * 0.1)
    return refiner


def test_an_untrained_refiner_reproduces_the_detail_layer_exactly():
    local, photo, cam = model_and_photo()
    plain, keep, info = detail_layer(local, photo, cam)
    refined, keep_r, info_r = detail_layer(local, photo, cam, Refiner(RefinerConfig()))
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh0"):
        assert torch.equal(getattr(plain, name), getattr(refined, name)), name
    assert torch.equal(keep, keep_r) and info["refiner"] is False and info_r["refiner"] is True
    assert info_r["culled"] == info["culled"] > 0


def test_a_trained_refiner_moves_depth_opacity_and_size_within_its_bounds():
    local, photo, cam = model_and_photo()
    plain = detail_layer(local, photo, cam)[0]
    refiner = busy(Refiner(RefinerConfig()))
    refined = detail_layer(local, photo, cam, refiner)[0]
    depth_ratio = refined.means[:, 2] / plain.means[:, 2]
    scale_ratio = (refined.log_scales - plain.log_scales).exp()
    assert depth_ratio.min() >= math.exp(-0.5) - 1e-5 and depth_ratio.max() <= math.exp(0.5) + 1e-5
    assert depth_ratio.std() > 0.01                          # per pixel, not one factor for all
    # the splat size follows the depth (constant pixel footprint) times the refiner's own factor in 1/4..4
    own = scale_ratio[:, 0] / depth_ratio
    assert own.min() >= 0.25 - 1e-4 and own.max() <= 4 + 1e-4 and own.std() > 0.01
    assert not torch.allclose(refined.opacities, torch.full_like(refined.opacities, SPLAT_OPACITY))
    # the means stay on their pixels' rays: x / z and y / z unchanged
    assert torch.allclose(refined.means[:, :2] / refined.means[:, 2:], plain.means[:, :2] / plain.means[:, 2:],
                          atol=1e-5)


def test_the_refiner_is_fully_convolutional_and_small():
    refiner = busy(Refiner(RefinerConfig()))
    assert sum(p.numel() for p in refiner.parameters()) < 300_000
    for h, w in ((64, 96), (341, 512)):
        outputs = refiner(torch.rand(1, INPUT_CHANNELS, h, w))
        assert [tuple(o.shape) for o in outputs] == [(1, h, w)] * 3


def test_refiner_config_refuses_bad_values():
    with pytest.raises(InputError, match="dilations"):
        RefinerConfig(dilations=(1, 0))
    with pytest.raises(InputError, match="max_log_depth"):
        RefinerConfig(max_log_depth=0)
    with pytest.raises(InputError, match="unknown fields"):
        RefinerConfig.from_dict({"width": 8, "depth": 3})


def test_the_shipped_model_folder_works_without_a_refiner():
    folder = SHIPPED_DIR / DEFAULT_MODEL
    if "refiner" in json.loads((folder / CONFIG_FILE).read_text()):
        pytest.skip("this checkout ships a refiner")
    assert read_part(folder, "refiner") is None


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_the_detail_layer_is_built_on_the_cpu_whatever_the_photo_device(device):
    """train-refiner passes CUDA frames: the layer (and its mask) must still come out on the CPU, where the
    model's kept Gaussians are joined to it."""
    local, photo, cam = model_and_photo()
    refiner = busy(Refiner(RefinerConfig(width=8, dilations=(1, 2)))).to(device)
    detail, keep, _ = detail_layer(local.to(device), photo.double().to(device), cam, refiner)
    assert detail.means.device.type == "cpu" and detail.sh0.device.type == "cpu" and keep.device.type == "cpu"
    assert detail.sh0.dtype == torch.float32
    assert len(Gaussians.cat([local[keep], detail])) == int(keep.sum()) + len(detail)


@pytest.fixture(scope="module")
def tiny_with_refiner(tmp_path_factory):
    """A tiny model folder saved with a (non-zero) refiner, and the pipeline it came from."""
    pipe = load_pipeline("tiny")
    pipe.refiner = busy(Refiner(RefinerConfig(width=8, dilations=(1, 2))))
    folder = tmp_path_factory.mktemp("tiny-refined")
    pipe.save_pretrained(folder)
    return folder, pipe


def test_a_model_folder_round_trips_its_refiner(tiny_with_refiner):
    folder, pipe = tiny_with_refiner
    manifest = json.loads((folder / CONFIG_FILE).read_text())
    assert manifest["refiner"] == {"width": 8, "dilations": [1, 2], "max_log_depth": 0.5,
                                   "max_log_scale": math.log(4.0)}
    loaded = WonderlandPipeline.from_pretrained(folder)
    assert loaded.refiner.config == pipe.refiner.config and not loaded.refiner.training
    for name, tensor in pipe.refiner.state_dict().items():
        assert torch.equal(loaded.refiner.state_dict()[name], tensor), name


def test_a_folder_without_refiner_loads_and_a_missing_file_is_named(tiny_with_refiner, tmp_path):
    folder, pipe = tiny_with_refiner
    old = tmp_path / "old"
    plain = load_pipeline("tiny")
    plain.save_pretrained(old)
    assert "refiner" not in json.loads((old / CONFIG_FILE).read_text())
    assert WonderlandPipeline.from_pretrained(old).refiner is None
    (old / REFINER_FILE).write_bytes((folder / REFINER_FILE).read_bytes())   # a stray file is not used unasked
    assert read_part(old, "refiner") is None
    manifest = json.loads((folder / CONFIG_FILE).read_text())
    (old / CONFIG_FILE).write_text(json.dumps(manifest))
    (old / REFINER_FILE).unlink()
    with pytest.raises(InputError, match="names a refiner but refiner.safetensors is missing") as error:
        WonderlandPipeline.from_pretrained(old)
    assert "train-refiner" in error.value.hint and "remove the \"refiner\" key" in error.value.hint


def test_saving_a_model_without_refiner_into_a_folder_with_one_removes_it(tiny_with_refiner, tmp_path):
    folder, pipe = tiny_with_refiner
    target = tmp_path / "reused"
    pipe.save_pretrained(target)
    assert "refiner" in json.loads((target / CONFIG_FILE).read_text()) and (target / REFINER_FILE).is_file()
    load_pipeline("tiny").save_pretrained(target)      # write_model(..., refiner=None)
    assert "refiner" not in json.loads((target / CONFIG_FILE).read_text())
    assert not (target / REFINER_FILE).exists() and read_part(target, "refiner") is None
    assert WonderlandPipeline.from_pretrained(target).refiner is None


def test_generate_runs_the_refiner_with_the_detail_layer_only(tiny_with_refiner):
    folder, _ = tiny_with_refiner
    refined, plain = WonderlandPipeline.from_pretrained(folder), load_pipeline("tiny")
    c2w = torch.eye(4).repeat(3, 1, 1)
    c2w[:, 0, 3] = torch.tensor([0.0, 0.1, 0.2])
    cameras = CameraBatch(torch.tensor([[80.0, 0, 48], [0, 80, 32], [0, 0, 1]]).repeat(3, 1, 1), c2w, 96, 64)
    image = np.random.RandomState(0).rand(64, 96, 3).astype(np.float32)
    runs = {(name, size): generate(pipe, image, cameras, steps=2, preview_count=0, detail_size=size)
            for name, pipe in (("refined", refined), ("plain", plain)) for size in (0, 96)}
    assert runs["refined", 96].info["detail"]["refiner"] is True
    assert runs["plain", 96].info["detail"]["refiner"] is False
    assert runs["refined", 0].info["detail"]["refiner"] is False
    n = runs["plain", 96].info["detail"]["count"]            # the detail Gaussians come last, one per pixel
    assert n == 96 * 64 and not torch.allclose(runs["refined", 96].gaussians.means[-n:],
                                               runs["plain", 96].gaussians.means[-n:])
    assert torch.equal(runs["refined", 0].gaussians.means, runs["plain", 0].gaussians.means)   # the paper's path


def test_bench_quality_scores_a_refiner_beside_the_plain_detail_layer(tiny_with_refiner, tmp_path, capsys,
                                                                       bench_quality):
    from tests.test_evaluation import make_plane_scene
    folder, _ = tiny_with_refiner
    scene = tmp_path / "data" / "scene_0000001"
    make_plane_scene(scene, frames=9)
    for i in range(1, 9):   # scenes need every frame's depth map; only frame 0's is scored
        (scene / "depth" / f"{i:04d}.npy").write_bytes((scene / "depth" / "0000.npy").read_bytes())
    assert bench_quality.main(["--data", str(tmp_path / "data"), "--model", "tiny", "--steps", "2",
                               "--refiner", str(folder)]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert bench_quality.REFINED in rows and bench_quality.FULL in rows
    with pytest.raises(InputError, match="the model folder has no refiner"):
        bench_quality.main(["--data", str(tmp_path / "data"), "--model", "tiny", "--refiner", str(tmp_path)])
