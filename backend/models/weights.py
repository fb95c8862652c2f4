"""Local weight and config files: safetensors and JSON only, never pickle.

Pickle checkpoints (.bin .pt .pth .ckpt .pkl) can run arbitrary code when loaded, so they are refused
with a message that says how to convert them. Every write is atomic (backend.atomic), and every
problem with a file is an InputError that names the file.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import math
import types
import typing
from typing import Any, Callable, Mapping, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from backend.atomic import atomic_path, atomic_write_text
from backend.errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CONVERT_HINT = ("on a machine where you trust the file, e.g. "
                "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')`")
# safetensors' messages for a file shorter than its header promises.
_TRUNCATION_MARKERS = ("not fully covered", "invalid header length", "header too small")
_LISTED = 5  # names shown in a missing/unexpected key message

T = TypeVar("T")


def save_state_dict(state_dict: Mapping[str, Tensor], path: str | os.PathLike,
                    metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors to a .safetensors file atomically.

    safetensors refuses tensors that share memory (tied weights, views of one buffer) or are not
    contiguous; those are written as independent contiguous copies, so every key survives.
    """
    tensors: dict[str, Tensor] = {}
    seen_storages: set[tuple[torch.device, int]] = set()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"state_dict[{name!r}] is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach()
        if tensor.device.type == "meta":
            raise ValueError(f"state_dict[{name!r}] is on the meta device and has no values to save")
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        if storage in seen_storages or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        seen_storages.add(storage)
        tensors[name] = tensor
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def _check_readable_weights(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise InputError(f"refusing to load {path}: {path.suffix} files are pickle checkpoints, which can "
                         "run arbitrary code when loaded", f"convert to safetensors: {CONVERT_HINT}")
    if not path.exists():
        raise InputError(f"weights file {path} does not exist",
                         "check the path, or download/train the model and point --model at its "
                         ".safetensors file")
    if path.is_dir():
        raise InputError(f"weights path {path} is a folder, not a .safetensors file",
                         "point at the .safetensors file inside it")


def _looks_like_pickle(path: Path) -> bool:
    """torch.save writes a zip archive (PK..) or, in its legacy format, a raw pickle (0x80 protocol)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _file_error(path: Path, error: Exception) -> InputError:
    detail = str(error)
    if _looks_like_pickle(path):
        return InputError(f"{path} is a pickle/torch.save checkpoint, not safetensors",
                          f"convert to safetensors: {CONVERT_HINT}")
    if any(marker in detail for marker in _TRUNCATION_MARKERS):
        return InputError(f"weights file {path} is truncated ({detail})",
                          "the download or copy was cut short: fetch or copy the file again")
    return InputError(f"weights file {path} is corrupted: its safetensors header is unreadable ({detail})",
                      "fetch or export the file again")


def _open(path: Path, device: str | torch.device):
    try:
        return safe_open(path, framework="pt", device=str(device))
    except (SafetensorError, OSError) as error:
        raise _file_error(path, error) from error


def load_state_dict(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read every tensor of a .safetensors file (never pickle) onto `device`."""
    path = Path(path)
    _check_readable_weights(path)
    try:
        with _open(path, device) as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError) as error:
        raise _file_error(path, error) from error


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text metadata stored in a .safetensors header (e.g. the model's config), without tensors."""
    path = Path(path)
    _check_readable_weights(path)
    with _open(path, "cpu") as f:
        return dict(f.metadata() or {})


def save_with_config(module: nn.Module, config: Mapping[str, Any], key: str, path: str | os.PathLike) -> None:
    """One .safetensors file holding a module's weights and, under `key` in its header, its config as JSON:
    the file alone rebuilds the model (LaLRM.save_pretrained, Refiner.save_pretrained)."""
    save_state_dict(module.state_dict(), path, metadata={key: json.dumps(dict(config), sort_keys=True)})


def header_config(path: str | os.PathLike, key: str, what: str, hint: str) -> dict[str, Any]:
    """The config a save_with_config file holds under `key`, parsed; an InputError that names `what` (e.g.
    "LaLRM") and gives `hint` when the header has none or it is not JSON."""
    metadata = read_metadata(path)
    if key not in metadata:
        raise InputError(f"{path} has no {what} config in its header", hint)
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: the {what} config in its header is not valid JSON: {error}", hint) from None


def _name_list(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return f"{len(names)} ({shown}{', ...' if len(names) > _LISTED else ''})"


def load_into(module: nn.Module, state_dict: Mapping[str, Tensor] | str | os.PathLike,
              strict: bool = True, prefix: str = "") -> tuple[list[str], list[str]]:
    """Copy weights into `module`, checking names and shapes first.

    `state_dict` may be a mapping or a .safetensors path. With `prefix` (e.g. "lalrm."), only keys that
    start with it are used, with the prefix removed: one file can hold several modules. Values are cast
    to the module's dtypes and devices; a module built on the meta device takes the loaded tensors
    as they are instead. Returns (missing, unexpected) key lists; with `strict` any of
    them is an InputError instead. A shape mismatch is always an error.
    """
    source = "state dict"
    if not isinstance(state_dict, Mapping):
        source = str(state_dict)
        state_dict = load_state_dict(state_dict)
    if prefix:
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    expected = module.state_dict()
    for name, tensor in state_dict.items():
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise InputError(f"weights in {source} do not fit {type(module).__name__}: tensor "
                             f"'{prefix}{name}' has shape {tuple(tensor.shape)} in the weights but "
                             f"{tuple(expected[name].shape)} in the model",
                             "the weights were trained with a different config: load the config saved "
                             "with them")
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing {_name_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {_name_list(unexpected)}")
        raise InputError(f"weights in {source} do not match {type(module).__name__}"
                         f"{f' (prefix {prefix!r})' if prefix else ''}: " + "; ".join(parts),
                         "use the weights and config that were saved together, or the right prefix")
    on_meta = any(t.is_meta for t in expected.values())
    if on_meta and missing:
        raise InputError(f"weights in {source} lack {_name_list(missing)} that {type(module).__name__}, "
                         "built without values (meta device), needs", "load a complete state dict")
    # A module built on the meta device has no storage to copy into: take the loaded tensors instead.
    module.load_state_dict(dict(state_dict), strict=False, assign=on_meta)
    return missing, unexpected


class SingleFileModel:
    """save_pretrained / pretrained_config / from_pretrained for a module whose weights and config live in one
    .safetensors file, the config as JSON under `config_key` in its header (the LaLRM, the refiner, the depth
    prior). A subclass names its `config_class`, `config_key`, what it is (`kind`, for messages) and how such
    files are made (`made_by`, the hint when a header has no config)."""
    config_class: type
    config_key: str
    kind: str
    made_by: str

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """One .safetensors file holding the weights and, in its header, the config."""
        save_with_config(self, self.config.to_dict(), self.config_key, path)

    @classmethod
    def pretrained_config(cls, path: str | os.PathLike):
        """The config a save_pretrained file holds, from its header alone (no weights read)."""
        return cls.config_class.from_dict(header_config(path, cls.config_key, cls.kind, cls.made_by))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None):
        """The model of a save_pretrained file, in eval mode (weights read once, no random init)."""
        config = cls.pretrained_config(path)
        with torch.device("meta"):
            model = cls(config)
        load_into(model, load_state_dict(path, device=device), strict=True)
        return model.to(device=device, dtype=dtype).eval()


def save_config(obj: Any, path: str | os.PathLike) -> None:
    """Write a dataclass config (its to_dict() if it has one) as indented JSON, atomically."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def config_from_dict(cls: type[T], data: Any, source: str = "config") -> T:
    """Build dataclass `cls` from a JSON object; unknown fields are an InputError listing the known ones."""
    if not isinstance(data, dict):
        raise InputError(f"{source} must be a JSON object with the fields of {cls.__name__}, "
                         f"got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InputError(f"{source} has unknown fields for {cls.__name__}: {', '.join(unknown)}",
                         f"known fields: {', '.join(known)}")
    try:
        return cls(**data)
    except TypeError as error:  # e.g. a required field is missing
        raise InputError(f"{source} is not a valid {cls.__name__}: {error}") from error


_SCALARS = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}


def _scalar_ok(kind: type, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def check_field_types(cls: type, data: Mapping[str, Any], source: str) -> None:
    """An InputError naming the first field of `data` whose JSON value does not fit the dataclass field's
    scalar type (int, float, str, bool, or one of them | None); other fields are left to their consumers."""
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        hint = hints.get(name)
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kinds = [k for k in options if k in _SCALARS]
        if not kinds or len(kinds) + (type(None) in options) != len(options):
            continue
        if value is None and type(None) in options:
            continue
        if not any(_scalar_ok(kind, value) for kind in kinds):
            wanted = " or ".join(_SCALARS[k] for k in kinds) + (" or null" if type(None) in options else "")
            raise InputError(f"{source}: '{name}' must be {wanted}, got {json.dumps(value)[:60]}",
                             "fix the value in the file, or export the model again")


def load_config(path: str | os.PathLike, cls: type[T]) -> T:
    """Read a JSON config file into dataclass `cls` (via cls.from_dict when it has one)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist",
                         "check the path; configs are saved next to the weights") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"config file {path} cannot be read: {error}") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"config file {path} is not valid JSON: {error.msg} at line {error.lineno}, "
                         f"column {error.colno}", "fix the file or save the config again") from error
    if not hasattr(cls, "from_dict"):
        return config_from_dict(cls, data, source=f"config file {path}")
    try:
        return cls.from_dict(data)
    except InputError as error:
        raise InputError(f"config file {path}: {error.message}", error.hint) from error


def named_or_file_config(name: str, named: Mapping[str, Callable[[], T]], cls: type[T]) -> T:
    """What --model-config takes: a named config (`named[name]()`) or a JSON file of `cls`'s fields."""
    if name in named:
        return named[name]()
    if not Path(name).is_file():
        raise InputError(f"--model-config {name!r} is neither a named config nor a JSON file",
                         f"use one of {', '.join(named)} or a JSON file of {cls.__name__} fields")
    return load_config(name, cls)
