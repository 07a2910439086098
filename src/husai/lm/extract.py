"""Extraction into activation stores: model + contexts + sites → one store per site.

Shard k of every store holds the kept tokens of contexts k·c … (k+1)·c − 1
(c = `contexts_per_shard`), captured batch by batch with hook-and-stop (`capture`: one
forward per batch for all sites, stopped after the deepest). Batches never cross a shard,
so a rerun after a kill computes exactly the shards that are missing or fail their hash
(every store's finished shards are kept, untouched) and the stores come out identical to an
uninterrupted run's. Nothing is printed; the counts are returned.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from husai.errors import HusaiError
from husai.io import tensor_hash
from husai.lm.adapters import Adapter
from husai.lm.capture import capture
from husai.lm.corpus import Contexts
from husai.lm.sites import Site
from husai.store import (
    DTYPES,
    ActivationStore,
    StoreWriter,
    TokenPolicy,
    apply_token_policy,
    empty_counts,
)


@dataclass
class ExtractResult:
    """What an extraction did: stores by hook name, tokens and time."""

    stores: dict[str, Path]
    n_contexts: int
    tokens_forward: int  # tokens run through the model in this call (0 if all kept)
    tokens_stored: dict[str, int]  # rows in each store
    shards_written: int
    shards_kept: int
    seconds: float  # time spent in forwards and writes
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # token policy, per hook

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_forward / self.seconds if self.seconds > 0 else 0.0


def model_hash(model: nn.Module) -> str:
    """sha256 over the model's parameters and buffers (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tensor_hash(t)};".encode())
    return h.hexdigest()


def store_paths(out: Path, hooks: Sequence[str]) -> dict[str, Path]:
    """One site: `out` is its store; several: `out/<hook name>` each."""
    out = Path(out)
    return {hooks[0]: out} if len(hooks) == 1 else {h: out / h for h in hooks}


def extract_to_stores(
    model: nn.Module,
    contexts: Contexts,
    sites: Sequence[Site | str],
    out: Path,
    *,
    model_name: str,
    dtype: str = "float32",
    policy: TokenPolicy | None = None,
    batch_size: int = 8,
    contexts_per_shard: int = 64,
    on_shard: Callable[[int], Any] | None = None,
) -> ExtractResult:
    """Capture `sites` over `contexts` into stores under `out` (see `store_paths`),
    resuming unfinished ones. `on_shard(k)` is called after shard k is written (in every
    store). Returns the counts; the stores are complete when it returns."""
    if dtype not in DTYPES:
        raise HusaiError(f"store dtype {dtype!r} (valid: {', '.join(DTYPES)})")
    if batch_size < 1 or contexts_per_shard < 1:
        raise HusaiError("batch_size and contexts_per_shard must be ≥ 1")
    policy = policy or TokenPolicy()
    adapter = Adapter(model)
    wanted = sorted({adapter.site(s) for s in sites})
    if not wanted:
        raise HusaiError("no sites to extract")
    ids = contexts.ids
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab and int(ids.max()) >= vocab:
        raise HusaiError(
            f"token id {int(ids.max())} out of the model's vocabulary ({vocab}); "
            "a tokenizer that does not match the model?"
        )
    n = contexts.n_contexts
    n_shards = -(-n // contexts_per_shard)
    hooks = [s.name for s in wanted]
    paths = store_paths(out, hooks)
    base = {
        "model_name": model_name,
        "model_hash": model_hash(model),
        "model_family": adapter.family,
        **contexts.metadata(),
        "contexts_per_shard": contexts_per_shard,
        "batch_size": batch_size,
    }
    writers = {
        s.name: StoreWriter(
            paths[s.name],
            d=adapter.d_model,
            hook_name=s.name,
            n_shards=n_shards,
            dtype=dtype,
            metadata={**base, "layer": s.layer, "site": s.kind, "hook_name": s.name},
            policy=policy,
        )
        for s in wanted
    }
    device = next(model.parameters()).device
    written = kept = tokens_forward = 0
    seconds = 0.0
    for k in range(n_shards):
        todo = [h for h in hooks if not writers[h].has(k)]
        if not todo:
            kept += 1
            continue
        t0 = time.perf_counter()
        lo, hi = k * contexts_per_shard, min(n, (k + 1) * contexts_per_shard)
        rows: dict[str, list[torch.Tensor]] = {h: [] for h in todo}
        counts = {h: empty_counts() for h in todo}
        for b in range(lo, hi, batch_size):
            batch = ids[b : min(hi, b + batch_size)]
            acts = capture(model, batch.to(device), todo)
            tokens_forward += batch.numel()
            for h in todo:
                r, c = apply_token_policy(
                    acts[h], policy, ids_BT=batch, bos_id=contexts.bos_token_id
                )
                rows[h].append(r.cpu())
                for key in c:
                    counts[h][key] += c[key]
        for h in todo:
            writers[h].write(k, torch.cat(rows[h]), counts[h], extra={"contexts": [lo, hi]})
        written += 1
        seconds += time.perf_counter() - t0
        if on_shard is not None:
            on_shard(k)
    stores: dict[str, ActivationStore] = {h: writers[h].finish() for h in hooks}
    return ExtractResult(
        stores=paths,
        n_contexts=n,
        tokens_forward=tokens_forward,
        tokens_stored={h: stores[h].n_tokens for h in hooks},
        shards_written=written,
        shards_kept=kept,
        seconds=seconds,
        counts={h: stores[h].counts for h in hooks},
    )
