"""The data the release gates need that a plain toy run lacks: a random-model control (the
toy architecture with re-initialised, untrained weights) and out-of-distribution rows for
the trained SAEs' explained variance.

OOD for modular arithmetic: every (a, b) pair is a valid input, so "outside the training
distribution" means rows the SAEs (and the model) were not fitted on. `test`: the toy
model's test-split pairs, when the SAEs were trained on the train split only — inputs the
model never trained on, same position: a mild shift (generalisation of the grokked
circuit). `operands`: the same hook at the a and b token positions instead of `=` — the
same residual stream under a real distribution shift (no attention to both operands yet,
other token embeddings), a hard test of whether the SAE's dictionary is specific to the
answer position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from husai.activations import extract_toy, extract_toy_hooks, load_activations
from husai.config import ActivationConfig, DataConfig, MetricsConfig, ToyConfig
from husai.errors import HusaiError
from husai.io import tensor_hash

SEQ_LEN = 3  # tokens [a, b, =]


def control_model(toy: ToyConfig, data: DataConfig) -> tuple[Any, int]:
    """The random-model control of `data` and its init seed (default: the toy model's own,
    i.e. the real model before training)."""
    from husai.toy.model import ToyTransformer

    seed = toy.train.seed if data.control_seed is None else data.control_seed
    return ToyTransformer(toy.model, seed=seed).eval(), seed


def ood_rows(model: Any, toy: ToyConfig, act: ActivationConfig, kind: str) -> Tensor:
    """The OOD activations [n, d] at `act.hook` (module docstring: test / operands)."""
    if kind == "test":
        return extract_toy(model, toy, act.model_copy(update={"split": "test"}))
    every = act.model_copy(update={"position": "all"})
    x = extract_toy_hooks(model, toy, every, [act.hook])[act.hook]
    return x.reshape(-1, SEQ_LEN, x.shape[-1])[:, :2].reshape(-1, x.shape[-1]).contiguous()


def ood_block(
    path: Path, x_hash: str, kind: str, sae: Any, qual: list[dict[str, float]], m: MetricsConfig
) -> dict[str, Any]:
    """`ood_quality` on the OOD rows saved at `path` (checked against `x_hash`)."""
    x, _ = load_activations(path)
    if tensor_hash(x) != x_hash:
        raise HusaiError(f"{path}: OOD activations differ from the ones this job was made for")
    return ood_quality(x, kind, sae, qual, m)


def ood_quality(
    x: Tensor,
    kind: str,
    sae: Any,
    qual: list[dict[str, float]],
    m: MetricsConfig,
    reference: str = "the training rows",
) -> dict[str, Any]:
    """Quality of every seed on the OOD rows x (per seed, mean, CI) and the EV drop: per seed
    EV(`reference`: the rows `qual` was scored on; an LM set's held-out tokens) − EV(OOD
    rows), seed mean and bootstrap CI (higher = worse). `kind`: the toy OOD kind, or an LM
    set's OOD corpus name."""
    from husai.experiments.evaluate import quality
    from husai.experiments.sae_job import quality_block
    from husai.metrics import bootstrap_ci

    ood = quality(sae, x)
    seeds = list(sae.seeds)
    drops = [
        q["explained_variance"] - o["explained_variance"] for q, o in zip(qual, ood, strict=True)
    ]
    boot = {"level": m.ci_level, "n_resamples": m.n_bootstrap, "seed": m.baseline_seed}
    return {
        "kind": kind,
        "n": int(x.shape[0]),
        **quality_block(ood, seeds, m),
        "explained_variance_drop": {
            **bootstrap_ci(drops, **boot),
            "definition": f"EV on {reference} − EV on the OOD rows, per seed",
            "per_seed": dict(zip(map(str, seeds), drops, strict=True)),
        },
    }
