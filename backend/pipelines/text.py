"""Prompt embeddings from a local T5 text encoder, for users who have CogVideoX's T5 weights on disk.

The folder is laid out as diffusers' CogVideoX repos are: `text_encoder/` (a transformers
T5EncoderModel, safetensors) and `tokenizer/`. Prompts are padded or cut to the transformer's token
count (226 for CogVideoX), as the stock pipeline does. Local files only; nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from backend.errors import InputError


def encode_prompt(prompt: str, folder: str | Path, text_shape: tuple[int, int]) -> Tensor:
    """`prompt` -> [L, D] embeddings, L and D from the video model's `text_shape`."""
    from transformers import AutoTokenizer, T5EncoderModel

    folder = Path(folder)
    missing = [part for part in ("text_encoder", "tokenizer") if not (folder / part).is_dir()]
    if missing:
        raise InputError(f"{folder} has no {' or '.join(missing)} folder",
                         "point --text-encoder at a folder with text_encoder/ and tokenizer/ "
                         "(e.g. a local copy of CogVideoX-5b-I2V)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        encoder = T5EncoderModel.from_pretrained(folder / "text_encoder", local_files_only=True,
                                                 use_safetensors=True).eval()
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load the T5 text encoder from {folder}: {e}",
                         "the folders need transformers' files with .safetensors weights") from e
    tokens, dim = text_shape
    if encoder.config.d_model != dim:
        raise InputError(f"the text encoder in {folder} makes {encoder.config.d_model}-wide embeddings, the "
                         f"video model reads {dim}", "use the text encoder that the video model was trained with")
    ids = tokenizer(prompt, padding="max_length", max_length=tokens, truncation=True, add_special_tokens=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids)[0][0].float()
