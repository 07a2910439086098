"""Full-batch AdamW training until the model has grokked and its embedding is Fourier-sparse."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError

from husai.config import ToyConfig
from husai.errors import HusaiError
from husai.integrity import read_sealed, seal
from husai.io import load_tensors, save_tensors, sha256_file, write_json
from husai.toy.data import make_dataset, split_indices
from husai.toy.fourier import embedding_frequency_norms, fourier_summary, key_frequencies
from husai.toy.model import ToyTransformer

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TIMING_KEYS = ("wall_seconds",)  # non-deterministic summary keys; dropped from checkpoints


def _evaluate(
    model: ToyTransformer, tokens: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor
) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(tokens[idx])
        loss = F.cross_entropy(logits, labels[idx])
        acc = (logits.argmax(-1) == labels[idx]).to(torch.float64).mean()
    return float(loss), float(acc)


def train_toy(cfg: ToyConfig, progress: bool = False) -> tuple[ToyTransformer, dict[str, Any]]:
    """Train on the seeded train split; return the model and a JSON-able summary.

    Every `check_every` steps: test accuracy and embedding key frequencies; stop once
    test acc ≥ target_test_acc and n_key_freqs ≤ max_key_freqs, else at max_steps. The
    summary is deterministic except for `wall_seconds` (see TIMING_KEYS).
    """
    t0 = time.perf_counter()
    mc, tc = cfg.model, cfg.train
    tokens, labels = make_dataset(mc.p, mc.op)
    train_idx, test_idx = split_indices(len(labels), tc.train_frac, tc.seed)
    train_tokens, train_labels = tokens[train_idx], labels[train_idx]
    model = ToyTransformer(mc, seed=tc.seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=tc.betas
    )
    history: list[dict[str, Any]] = []
    stopped_by = "max_steps"
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("toy model", total=tc.max_steps)
    step = 0
    try:
        while step < tc.max_steps:
            loss = F.cross_entropy(model(train_tokens), train_labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % tc.check_every and step != tc.max_steps:
                continue
            train_loss, _ = _evaluate(model, tokens, labels, train_idx)
            test_loss, test_acc = _evaluate(model, tokens, labels, test_idx)
            fracs = embedding_frequency_norms(model.W_E, mc.p, mc.op)
            key = key_frequencies(fracs, tc.fourier_mass)
            history.append(
                {
                    "step": step,
                    "train_loss": train_loss,
                    "test_loss": test_loss,
                    "test_acc": test_acc,
                    "n_key_freqs": len(key),
                    "key_mass": float(sum(float(fracs[k - 1]) for k in key)),
                }
            )
            if bar is not None:
                bar.update(
                    task,
                    completed=step,
                    description=f"toy model: test acc {test_acc:.3f}, {len(key)} key freqs",
                )
            if test_acc >= tc.target_test_acc and len(key) <= tc.max_key_freqs:
                stopped_by = "criterion"
                break
    finally:
        if bar is not None:
            bar.stop()
    model.eval()
    train_loss, train_acc = _evaluate(model, tokens, labels, train_idx)
    test_loss, test_acc = _evaluate(model, tokens, labels, test_idx)
    summary = {
        "steps": step,
        "stopped_by": stopped_by,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "train_loss": train_loss,
        "test_loss": test_loss,
        "fourier": fourier_summary(model, tc.fourier_mass, tc.max_key_freqs),
        "history": history,
        "wall_seconds": time.perf_counter() - t0,
    }
    return model, summary


def save_checkpoint(
    model: ToyTransformer, cfg: ToyConfig, summary: dict[str, Any], directory: Path
) -> Path:
    """Write `model.safetensors` and `config.json` (config, summary, weights sha256)."""
    directory = Path(directory)
    weights = save_tensors(directory / MODEL_FILE, model.state_dict(), {"format": "husai.toy"})
    record = {
        "config": cfg.model_dump(mode="json"),
        "summary": {k: v for k, v in summary.items() if k not in TIMING_KEYS},
        "model_sha256": sha256_file(weights),
    }
    write_json(directory / CONFIG_FILE, seal(record))
    return directory


def train_checkpoint(cfg: ToyConfig, directory: Path, progress: bool = False) -> dict[str, Any]:
    """Train the toy model (deterministic kernels) and save it to `directory`; returns the
    training summary."""
    from husai.runtime import deterministic

    with deterministic():
        model, summary = train_toy(cfg, progress=progress)
    save_checkpoint(model, cfg, summary, directory)
    return summary


def load_checkpoint(directory: Path) -> tuple[ToyTransformer, ToyConfig, dict[str, Any]]:
    """Load a checkpoint written by `save_checkpoint` (safetensors only, never pickle);
    a config.json that fails its seal or weights that fail its sha256 are a HusaiError."""
    directory = Path(directory)
    cfg_path, weights_path = directory / CONFIG_FILE, directory / MODEL_FILE
    meta, sealed = read_sealed(cfg_path)
    if not isinstance(meta, dict) or "config" not in meta:
        raise HusaiError(f"{cfg_path}: not a toy checkpoint config (no 'config' key)")
    try:
        cfg = ToyConfig.model_validate(meta["config"])
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise HusaiError(f"{cfg_path}: invalid config at {loc}: {err['msg']}") from None
    if sealed is False:
        raise HusaiError(f"{cfg_path}: does not match its checksum (corrupted?)")
    tensors, _ = load_tensors(weights_path)
    expected = meta.get("model_sha256")
    if expected is not None and sha256_file(weights_path) != expected:
        raise HusaiError(f"{weights_path}: sha256 does not match {cfg_path}")
    for name, t in tensors.items():
        if not t.is_floating_point() or not torch.isfinite(t).all():
            raise HusaiError(f"{weights_path}: {name} must be finite floating point ({t.dtype})")
    model = ToyTransformer(cfg.model, seed=cfg.train.seed)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise HusaiError(f"{weights_path}: weights do not match the config ({first})") from None
    model.eval()
    return model, cfg, meta.get("summary", {})
