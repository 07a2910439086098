"""Activation files: one safetensors file, tensor `activations` [n, d] float32 + metadata.

Metadata (all strings, as safetensors requires): source, hook, position, split, model_hash
(sha256 of the toy model's weights file), n, d, dtype.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from husai.config import ActivationConfig, ToyConfig
from husai.errors import HusaiError
from husai.io import load_tensors, save_tensors

KEY = "activations"


def save_activations(path: Path, acts: Tensor, metadata: dict[str, str]) -> Path:
    acts = acts.detach().float().contiguous()
    meta = {**metadata, "n": str(acts.shape[0]), "d": str(acts.shape[-1]), "dtype": "float32"}
    return save_tensors(Path(path), {KEY: acts}, metadata=meta)


def load_activations(path: Path) -> tuple[Tensor, dict[str, str]]:
    """Read an activation file; reject wrong keys/shapes and NaN/Inf values."""
    tensors, meta = load_tensors(Path(path))
    if KEY not in tensors:
        raise HusaiError(f"{path}: no '{KEY}' tensor (found: {sorted(tensors)})")
    acts = tensors[KEY]
    if acts.dim() != 2 or acts.shape[0] == 0:
        raise HusaiError(f"{path}: '{KEY}' must be [n, d] with n > 0, got {tuple(acts.shape)}")
    bad = ~torch.isfinite(acts).all(-1)
    if bad.any():
        raise HusaiError(f"{path}: activations contain NaN/Inf ({int(bad.sum())} rows)")
    return acts.float(), meta


def split_rows(toy: ToyConfig, split: str) -> Tensor:
    """Row indices (into the a-major p² grid) of the toy model's train/test split or all."""
    from husai.toy import split_indices

    n = toy.model.p**2
    if split == "all":
        return torch.arange(n)
    train, test = split_indices(n, toy.train.train_frac, toy.train.seed)
    return train if split == "train" else test


def extract_toy(model: torch.nn.Module, toy: ToyConfig, cfg: ActivationConfig) -> Tensor:
    """Activations [n, d] of `cfg.hook` at the answer position (or every position, flattened)."""
    from husai.toy import make_dataset

    tokens, _ = make_dataset(toy.model.p, toy.model.op)
    tokens = tokens[split_rows(toy, cfg.split)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, [cfg.hook], position=cfg.position)
    acts = cache[cfg.hook]
    return acts.reshape(-1, acts.shape[-1]).float()
