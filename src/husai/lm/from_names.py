"""Extraction from names and paths (what `husai extract --model` runs): a model name or
local directory, layers × site kinds, a corpus file (or the embedded stdlib docs) → one
activation store per hook, via `extract_to_stores` (one forward for every hook)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from husai.errors import HusaiError
from husai.lm.adapters import Adapter
from husai.lm.corpus import read_corpus, stdlib_corpus, tokenize_contexts
from husai.lm.extract import ExtractResult, extract_to_stores
from husai.lm.load import load_model, load_tokenizer
from husai.lm.packaged import PACKAGED, resolve_model_dir
from husai.lm.sites import site
from husai.runtime import resolve_device
from husai.store import DTYPES, TokenPolicy


def extract_model(
    model: str,
    layers: Sequence[int],
    kinds: Sequence[str],
    out: Path,
    *,
    text: Path | None = None,
    context_size: int = 128,
    n_contexts: int | None = None,
    max_tokens: int | None = None,
    dtype: str = "float32",
    batch_size: int = 8,
    device: str = "auto",
    policy: TokenPolicy | None = None,
    contexts_per_shard: int = 64,
    cache_dir: Path | None = None,
) -> ExtractResult:
    """Every (layer, kind) of `model` (`smollm2` or a local HF directory) over `text` (a
    .txt/.jsonl/ids file; None: the stdlib-docs corpus) into stores under `out`. The model
    runs in float32 (`dtype` is the stores'). Checks the inputs before loading anything big."""
    if dtype not in DTYPES:
        raise HusaiError(f"store dtype {dtype!r} (valid: {', '.join(DTYPES)})")
    if not layers or not kinds:
        raise HusaiError("give at least one --layer and one --site")
    sites = sorted({site(layer, kind) for layer in layers for kind in kinds})
    dev = str(resolve_device(device))
    corpus = read_corpus(text) if text is not None else stdlib_corpus(docstrings=True)
    path = resolve_model_dir(model, cache_dir)
    lm = load_model(path, dtype=torch.float32, device=dev)
    n_layers = Adapter(lm).n_layers
    for s in sites:
        site(s.layer, s.kind, n_layers)  # layer out of range → one line
    tok = load_tokenizer(path)
    contexts = tokenize_contexts(
        corpus, tok, context_size, n_contexts=n_contexts, max_tokens=max_tokens
    )
    name = model if model in PACKAGED else Path(model).name
    return extract_to_stores(
        lm,
        contexts,
        sites,
        out,
        model_name=name,
        dtype=dtype,
        policy=policy,
        batch_size=batch_size,
        contexts_per_shard=contexts_per_shard,
    )


def summary_lines(result: ExtractResult) -> list[str]:
    """What `husai extract --model` prints: tokens, speed, per-hook counts and paths."""
    lines = [
        f"{result.tokens_forward} tokens through the model ({result.n_contexts} contexts), "
        f"{result.tokens_per_s:.0f} tokens/s; {result.shards_written} shards written, "
        f"{result.shards_kept} kept"
    ]
    for hook, path in result.stores.items():
        c: dict[str, Any] = result.counts.get(hook, {})
        counts = ", ".join(f"{k} {v}" for k, v in c.items())
        lines.append(f"{hook}: {result.tokens_stored[hook]} tokens ({counts}) → {path}")
    return lines
