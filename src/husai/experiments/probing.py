"""The `probing` block of an `sae` job (toy data) and an `lm_sae` job: SAEBench's sparse
probing (husai.metrics.probing) of the trained SAEs' latents and of the at-init SAEs'
(training's own starting point: what the protocol gives an untrained dictionary) against
probes on the raw activations, per labelled task.

Toy: every row of the data set at the answer position ('=': with position `all`, the rows
of that position), labelled by its pair (a, b) and answer (husai.toy.tasks). LM: the
held-out tokens the job evaluates on (position 0 excluded), labelled by their strings
(husai.lm.tasks). Probes read the SAEs' input units (an LM store's normalisation applied).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from husai.config import MetricsConfig, ToyConfig
from husai.errors import HusaiError
from husai.metrics.probing import Encoder, sparse_probing
from husai.sae.base import SAE


def _encoders(sae: SAE) -> list[Encoder]:
    seeds = [sae.select(s) for s in range(sae.n_seeds)]
    return [lambda rows, one=one: one.encode(rows)[0] for one in seeds]


def _probe(x: Tensor, labels: dict[str, Tensor], trained: SAE, init: SAE, m: MetricsConfig):
    boot = {"level": m.ci_level, "n_resamples": m.n_bootstrap, "seed": m.baseline_seed}
    groups = {"trained": _encoders(trained), "init": _encoders(init)}
    return sparse_probing(
        x,
        labels,
        groups,
        m.probing_ks,
        seed=m.baseline_seed,
        min_positives=m.probing_min_positives,
        tie=m.probing_tie,
        boot=boot,
    )


def toy_probing(
    sae: SAE, init: SAE, x: Tensor, spec: dict[str, Any], path: Path, m: MetricsConfig
) -> dict[str, Any]:
    """The block for a toy data set (`spec`: the job's; `path`: its activation file, whose
    metadata gives position and split; `init`: the SAEs training started from)."""
    from safetensors import safe_open

    from husai.activations import split_rows
    from husai.toy.tasks import probe_labels

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    toy = ToyConfig.model_validate(spec["downstream"]["toy"])
    rows = split_rows(toy, meta["split"])
    answer = x if meta["position"] == "answer" else x.reshape(len(rows), 3, -1)[:, 2]
    labels = probe_labels(toy.model.p, toy.model.op, rows)
    out = _probe(answer, labels, sae, init, m)
    return {**out, "rows": f"{len(answer)} answer-position rows ({meta['split']} pairs)"}


def lm_probing(
    sae: SAE,
    init: SAE,
    x_eval: Tensor,
    ids: Tensor,
    tokenizer: Any,
    scale: float,
    m: MetricsConfig,
) -> dict[str, Any]:
    """The block for an LM data set: `x_eval` the held-out tokens' activations (every
    position of `ids` but the first, context-major), × `scale` as the SAEs read them."""
    from husai.lm.tasks import token_labels, token_strings

    tokens = ids[:, 1:]
    if tokens.numel() != len(x_eval):
        raise HusaiError(f"{tokens.numel()} held-out tokens but {len(x_eval)} activation rows")
    labels = token_labels(tokens, token_strings(tokenizer, tokens))
    with torch.no_grad():
        out = _probe(x_eval * scale, labels, sae, init, m)
    return {**out, "rows": f"{len(x_eval)} held-out tokens (position 0 excluded)"}
