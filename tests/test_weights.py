"""Weight and config files: safetensors only, atomic writes, and clear errors that name the file."""
import json

import pytest
import torch

from backend.errors import InputError
from backend.models.lalrm import LaLRM, LaLRMConfig
from backend.models.weights import load_config, load_into, load_state_dict, read_metadata, save_config, \
    save_state_dict


def tiny_lalrm(seed: int) -> LaLRM:
    torch.manual_seed(seed)
    return LaLRM(LaLRMConfig.tiny()).eval()


@pytest.fixture
def tiny_lalrm_file(tmp_path):
    path = tmp_path / "tiny_lalrm.safetensors"
    save_state_dict(tiny_lalrm(seed=0).state_dict(), path, metadata={"model": "lalrm-tiny"})
    return path


def test_tiny_lalrm_state_dict_round_trip_is_bit_exact(tiny_lalrm_file, tmp_path):
    original = tiny_lalrm(seed=0)
    loaded = load_state_dict(tiny_lalrm_file)
    assert loaded.keys() == original.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in original.state_dict().items())
    assert read_metadata(tiny_lalrm_file) == {"model": "lalrm-tiny"}
    other = tiny_lalrm(seed=1)
    latents, plucker = torch.randn(1, 3, 16, 8, 12), torch.randn(1, 9, 6, 64, 96)
    with torch.no_grad():
        assert not torch.equal(other(latents, plucker), original(latents, plucker))
        assert load_into(other, tiny_lalrm_file) == ([], [])
        assert torch.equal(other(latents, plucker), original(latents, plucker))
    assert [p.name for p in tmp_path.iterdir()] == ["tiny_lalrm.safetensors"]  # no temp file left


def test_shared_and_non_contiguous_tensors_are_saved(tmp_path):
    weight = torch.arange(12.0).reshape(3, 4)
    tied = {"encoder.weight": weight, "decoder.weight": weight, "transposed": weight.t(),
            "row": weight[1], "bf16": torch.ones(2, dtype=torch.bfloat16)}
    save_state_dict(tied, tmp_path / "tied.safetensors")
    loaded = load_state_dict(tmp_path / "tied.safetensors")
    assert loaded.keys() == tied.keys()
    for name, tensor in tied.items():
        assert torch.equal(loaded[name], tensor) and loaded[name].dtype == tensor.dtype, name


def test_corrupted_header_names_the_file(tiny_lalrm_file):
    data = bytearray(tiny_lalrm_file.read_bytes())
    for i in range(8, 16):       # the start of the JSON header, just after its 8-byte length
        data[i] ^= 0xFF
    tiny_lalrm_file.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"tiny_lalrm.safetensors is corrupted: its safetensors header "
                                         r"is unreadable"):
        load_state_dict(tiny_lalrm_file)


def test_flipped_header_length_is_reported_as_corrupted(tiny_lalrm_file):
    data = bytearray(tiny_lalrm_file.read_bytes())
    data[5] ^= 0xFF              # a header length of terabytes
    tiny_lalrm_file.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"tiny_lalrm.safetensors is corrupted.*header too large"):
        load_state_dict(tiny_lalrm_file)


@pytest.mark.parametrize("keep", [100, -1000])
def test_truncated_file_names_the_file(tiny_lalrm_file, keep):
    data = tiny_lalrm_file.read_bytes()
    tiny_lalrm_file.write_bytes(data[:keep])
    with pytest.raises(InputError, match=r"tiny_lalrm.safetensors is truncated") as info:
        load_state_dict(tiny_lalrm_file)
    assert "again" in info.value.hint


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match=r"nowhere.safetensors does not exist") as info:
        load_state_dict(tmp_path / "nowhere.safetensors")
    assert "--model" in info.value.hint


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt", ".pkl"])
def test_pickle_formats_are_refused_unread(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not even opened")
    with pytest.raises(InputError, match=rf"refusing to load .*model\{suffix}: .*pickle") as info:
        load_state_dict(path)
    assert "convert to safetensors" in str(info.value)


def test_torch_save_file_renamed_to_safetensors_is_recognized(tmp_path):
    path = tmp_path / "renamed.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(InputError, match=r"renamed.safetensors is a pickle/torch.save checkpoint") as info:
        load_state_dict(path)
    assert "convert to safetensors" in str(info.value)


def test_shape_mismatch_names_the_tensor_and_both_shapes(tiny_lalrm_file):
    narrow = LaLRM(LaLRMConfig(**{**LaLRMConfig.tiny().to_dict(), "latent_channels": 8}))
    with pytest.raises(InputError, match=r"tensor 'latent_embed.weight' has shape \(64, 16, 2, 2\) in the "
                                         r"weights but \(64, 8, 2, 2\) in the model"):
        load_into(narrow, tiny_lalrm_file)


def test_missing_and_unexpected_keys_are_listed_with_counts(tiny_lalrm_file):
    state = load_state_dict(tiny_lalrm_file)
    model = tiny_lalrm(seed=1)
    extra = {f"lalrm.{k}": v for k, v in state.items() if not k.startswith("blocks.1.")}
    extra.update({f"lalrm.extra.{i}": torch.zeros(1) for i in range(7)})
    with pytest.raises(InputError, match=r"missing 12 \(blocks\.1\.norm1\.weight, .*, \.\.\.\); "
                                         r"unexpected 7 \(extra\.0, "):
        load_into(model, extra, prefix="lalrm.")
    missing, unexpected = load_into(model, extra, prefix="lalrm.", strict=False)
    assert len(missing) == 12 and all(k.startswith("blocks.1.") for k in missing)
    assert unexpected == [f"extra.{i}" for i in range(7)]
    assert torch.equal(model.fuse.weight, state["fuse.weight"])


def test_config_files_round_trip_and_bad_json_is_reported(tmp_path):
    path = tmp_path / "sub" / "config.json"
    save_config(LaLRMConfig.tiny(), path)
    assert json.loads(path.read_text())["hidden_size"] == 64
    assert load_config(path, LaLRMConfig) == LaLRMConfig.tiny()
    path.write_text('{"hidden_size": 64,\n "num_layers": }')
    with pytest.raises(InputError, match=r"config.json is not valid JSON: .* line 2"):
        load_config(path, LaLRMConfig)
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match=r"config.json: .*must be a JSON object"):
        load_config(path, LaLRMConfig)
    with pytest.raises(InputError, match=r"absent.json does not exist"):
        load_config(tmp_path / "absent.json", LaLRMConfig)
