"""Load a Hugging Face causal LM from a local directory, offline (never the hub)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from husai.errors import HusaiError
from husai.lm.adapters import family_of


def _transformers():  # noqa: ANN202 - the module
    """transformers, imported on first use (it takes seconds), or a HusaiError."""
    try:
        import transformers
    except ImportError:
        raise HusaiError(
            "loading a language model needs transformers: pip install -e '.[lm]'"
        ) from None
    return transformers


def load_model(
    path: str | Path, *, dtype: torch.dtype | None = None, device: str = "cpu"
) -> nn.Module:
    """A causal LM from `path` (config.json + *.safetensors), in eval mode on `device`.

    `dtype=None` keeps the checkpoint's dtype. Nothing is downloaded
    (`local_files_only=True`); the model's family must be one `husai.lm` supports.
    """
    path = Path(path)
    if not path.exists():
        raise HusaiError(f"{path}: not a model directory (no such directory)")
    if not path.is_dir():
        raise HusaiError(f"{path}: not a model directory (a file)")
    if not (path / "config.json").is_file():
        raise HusaiError(f"{path}: not a model directory (no config.json)")
    if not any(path.glob("*.safetensors")):
        raise HusaiError(f"{path}: no *.safetensors weights beside config.json")
    transformers = _transformers()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=dtype or "auto"
        )
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HusaiError(f"{path}: cannot load the model ({first})") from None
    family_of(model)
    return model.to(device).eval()


def load_tokenizer(path: str | Path):  # noqa: ANN201 - a transformers tokenizer
    """The tokenizer saved beside a local model (tokenizer.json …), offline."""
    path = Path(path)
    transformers = _transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HusaiError(f"{path}: cannot load a tokenizer ({first})") from None
