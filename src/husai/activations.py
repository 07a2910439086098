"""Activation files: one safetensors file, tensor `activations` [n, d] float32 + metadata.

Metadata (all strings, as safetensors requires): source, hook, position, split, model_hash
(sha256 of the toy model's weights file), n, d, dtype, and husai.io's seal (`husai_sha256`,
checked on every read: a flipped bit that safetensors still parses is refused).

A transcoder's training data is a pair read at two hooks of the same tokens (same rows):
`extract_toy_pair` and `save_activation_pair` / `load_activation_pair`, which add tensor
`targets` [n, d_out] and metadata d_out (and, by the caller's choice, e.g. target_hook).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from husai.config import ActivationConfig, ToyConfig
from husai.errors import HusaiError
from husai.io import load_tensors, save_tensors

KEY = "activations"
TARGETS_KEY = "targets"


def save_activations(path: Path, acts: Tensor, metadata: dict[str, str]) -> Path:
    acts = acts.detach().float().contiguous()
    meta = {**metadata, "n": str(acts.shape[0]), "d": str(acts.shape[-1]), "dtype": "float32"}
    return save_tensors(Path(path), {KEY: acts}, metadata=meta, seal=True)


def save_activation_pair(
    path: Path, acts: Tensor, targets: Tensor, metadata: dict[str, str]
) -> Path:
    """A transcoder's data in one file: `activations` [n, d] and `targets` [n, d_out]."""
    if acts.dim() != 2 or targets.dim() != 2 or len(acts) != len(targets):
        raise HusaiError(
            f"activations and targets must be [n, d] and [n, d_out] with the same n, got "
            f"{tuple(acts.shape)} and {tuple(targets.shape)}"
        )
    acts, targets = (t.detach().float().contiguous() for t in (acts, targets))
    meta = {
        **metadata,
        "n": str(acts.shape[0]),
        "d": str(acts.shape[1]),
        "d_out": str(targets.shape[1]),
        "dtype": "float32",
    }
    return save_tensors(Path(path), {KEY: acts, TARGETS_KEY: targets}, metadata=meta, seal=True)


def _matrix(tensors: dict[str, Tensor], key: str, path: Path) -> Tensor:
    """Tensor `key` of a file, checked to be a finite non-empty [n, d] matrix."""
    if key not in tensors:
        raise HusaiError(f"{path}: no '{key}' tensor (found: {sorted(tensors)})")
    t = tensors[key]
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise HusaiError(f"{path}: '{key}' must be [n, d] with n, d > 0, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise HusaiError(f"{path}: '{key}' must be floating point, got {t.dtype}")
    bad = ~torch.isfinite(t).all(-1)
    if bad.any():
        raise HusaiError(f"{path}: {key} contain NaN/Inf ({int(bad.sum())} rows)")
    return t.float()


def load_activations(path: Path) -> tuple[Tensor, dict[str, str]]:
    """Read an activation file; reject wrong keys/shapes and NaN/Inf values."""
    tensors, meta = load_tensors(Path(path))
    return _matrix(tensors, KEY, path), meta


def load_activation_pair(path: Path) -> tuple[Tensor, Tensor, dict[str, str]]:
    """(activations [n, d], targets [n, d_out], metadata) of a `save_activation_pair` file."""
    tensors, meta = load_tensors(Path(path))
    acts, targets = _matrix(tensors, KEY, path), _matrix(tensors, TARGETS_KEY, path)
    if len(acts) != len(targets):
        raise HusaiError(f"{path}: {len(acts)} activation rows but {len(targets)} target rows")
    return acts, targets, meta


def split_rows(toy: ToyConfig, split: str) -> Tensor:
    """Row indices (into the a-major p² grid) of the toy model's train/test split or all."""
    from husai.toy import split_indices

    n = toy.model.p**2
    if split == "all":
        return torch.arange(n)
    train, test = split_indices(n, toy.train.train_frac, toy.train.seed)
    return train if split == "train" else test


def extract_toy_hooks(
    model: torch.nn.Module, toy: ToyConfig, cfg: ActivationConfig, hooks: Sequence[str]
) -> dict[str, Tensor]:
    """Activations [n, width] of each of `hooks` from one forward pass (so row i of every
    tensor comes from the same input and position), at `cfg.position` over `cfg.split`
    (`cfg.hook` is not used)."""
    from husai.toy import make_dataset

    tokens, _ = make_dataset(toy.model.p, toy.model.op)
    tokens = tokens[split_rows(toy, cfg.split)]
    names = list(dict.fromkeys(hooks))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names, position=cfg.position)
    return {h: cache[h].reshape(-1, cache[h].shape[-1]).float() for h in names}


def extract_toy(model: torch.nn.Module, toy: ToyConfig, cfg: ActivationConfig) -> Tensor:
    """Activations [n, d] of `cfg.hook` at the answer position (or every position, flattened)."""
    return extract_toy_hooks(model, toy, cfg, [cfg.hook])[cfg.hook]


def extract_toy_pair(
    model: torch.nn.Module, toy: ToyConfig, cfg: ActivationConfig, target_hook: str
) -> tuple[Tensor, Tensor]:
    """A transcoder's data: (input x [n, d] at `cfg.hook`, target y [n, d_out] at
    `target_hook`, e.g. blocks.0.resid_mid → blocks.0.mlp_out), same rows."""
    acts = extract_toy_hooks(model, toy, cfg, [cfg.hook, target_hook])
    return acts[cfg.hook], acts[target_hook]


def extract_to_file(
    model_dir: Path, out: Path, hook: str, position: str = "answer", split: str = "all"
) -> Tensor:
    """`husai extract`: a toy-model checkpoint's activations at `hook` → an activation file
    (metadata: source, hook, position, split, the model's sha256); returns them."""
    from husai.config import hook_names, parse_config
    from husai.io import sha256_file
    from husai.toy import load_checkpoint

    model, toy_cfg, _ = load_checkpoint(model_dir)
    valid = hook_names(toy_cfg.model.n_layers)
    if hook not in valid:
        raise HusaiError(f"unknown hook {hook!r} (valid: {', '.join(valid)})")
    act_cfg = parse_config({"hook": hook, "position": position, "split": split}, ActivationConfig)
    acts = extract_toy(model, toy_cfg, act_cfg)
    meta = {
        "source": "husai-toy",
        "hook": hook,
        "position": position,
        "split": split,
        "model_hash": sha256_file(Path(model_dir) / "model.safetensors"),
    }
    save_activations(out, acts, meta)
    return acts
