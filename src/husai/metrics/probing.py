"""Sparse probing, SAEBench's protocol on any labelled rows: k-sparse logistic-regression
probes on SAE latents against probes on the raw activations (all dimensions, and the same
k-sparse selection on raw dimensions).

The protocol, as SAEBench's `sparse_probing` eval runs it (read from its code, not copied):
each binary task takes every positive row (up to a cap) and as many negatives, drawn at
random; the train split ranks dimensions by |mean over positives − mean over negatives| and
keeps the top k; an L2-regularised logistic regression (scikit-learn's objective, C = 1,
intercept unpenalised) is fitted on those k columns of the train split and scored on the
test split (accuracy; AUC as sae-probes and HUSAI count wins). Differences from SAEBench:
one solver (damped Newton on the exact objective, float64) for every probe, also the full-width
raw baseline (SAEBench trains that one with AdamW on a GPU); a stratified split of one
sample (SAEBench draws train and test sets apart); no probe on all SAE latents.

Higher accuracy / AUC = the k latents carry the label better. Pure functions: the caller
encodes rows (an SAE per seed) and supplies the labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as fn
from scipy.stats import rankdata
from torch import Tensor

from husai.errors import HusaiError
from husai.metrics.stats import bootstrap_ci
from husai.runtime import single_threaded

MAX_PER_CLASS = 640  # 1024 train + 256 test rows: sae-probes' 1024 training rows (SAEBench 4000)
TEST_FRACTION = 0.2
C = 1.0  # scikit-learn's default inverse regularisation, as SAEBench uses it
MAX_NEWTON = 100
NEWTON_TOL = 1e-10  # stop when every problem's Newton decrement² is below this

Encoder = Callable[[Tensor], Tensor]


def logistic_regression(x_BNK: Tensor, y_BN: Tensor, c: float = C) -> Tensor:
    """θ [B, K+1] (weights, then intercept) of B independent problems, each minimising
    ½‖w‖² + c·Σ log-loss (intercept unpenalised: scikit-learn's L2 objective), by damped
    Newton steps (IRLS with backtracking) from zero in float64, batched over problems:
    deterministic. A zero column gets weight 0, so problems of fewer columns can be padded.
    2-D input is one problem. Runs on one thread: the problems are small, and the result
    is then the same whatever the executor's threads."""
    if x_BNK.dim() == 2:
        return logistic_regression(x_BNK[None], y_BN[None], c)[0]
    with single_threaded():
        return _newton(x_BNK, y_BN, c)


def _newton(x_BNK: Tensor, y_BN: Tensor, c: float) -> Tensor:
    B, N, K = x_BNK.shape
    x = torch.cat([x_BNK.double(), x_BNK.new_ones(B, N, 1, dtype=torch.float64)], dim=-1)
    y = y_BN.double()
    sign = 2 * y - 1
    pen = torch.ones(K + 1, dtype=torch.float64)
    pen[-1] = 0.0

    def objective(theta: Tensor) -> Tensor:
        z = torch.bmm(x, theta.unsqueeze(-1)).squeeze(-1)
        return 0.5 * (pen * theta * theta).sum(-1) + c * fn.softplus(-sign * z).sum(-1)

    theta = torch.zeros(B, K + 1, dtype=torch.float64)
    value = objective(theta)
    for _ in range(MAX_NEWTON):
        p = torch.sigmoid(torch.bmm(x, theta.unsqueeze(-1)).squeeze(-1))
        grad = pen * theta + c * torch.bmm(x.transpose(1, 2), (p - y).unsqueeze(-1)).squeeze(-1)
        hess = torch.bmm(x.transpose(1, 2) * (c * p * (1 - p)).unsqueeze(1), x) + torch.diag(pen)
        step = torch.linalg.solve(hess, grad)
        decrement = (grad * step).sum(-1)  # Newton decrement²: ≈ 2 × the gap to the optimum
        if float(decrement.max()) < NEWTON_TOL:
            break
        t = torch.ones(B, dtype=torch.float64)
        for _ in range(60):  # halve each problem's step until it decreases enough (Armijo)
            short = objective(theta - t[:, None] * step) > value - 1e-4 * t * decrement
            if not bool(short.any()):
                break
            t = torch.where(short, t / 2, t)
        theta = theta - t[:, None] * step
        value = objective(theta)
    return theta


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U / (n₊ n₋), ties count ½); needs both classes."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise HusaiError("AUC needs positives and negatives in the test split")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def top_k_mean_diff(x_NF: Tensor, y_N: Tensor, k: int) -> Tensor:
    """Indices of the k columns with the largest |mean over positives − mean over
    negatives| (ties: the lower index first), in that order."""
    y = y_N.bool()
    diff = (x_NF[y].double().mean(0) - x_NF[~y].double().mean(0)).abs()
    return torch.sort(diff, descending=True, stable=True).indices[: min(k, x_NF.shape[1])]


def balanced_split(
    labels_N: Tensor, seed: int, max_per_class: int = MAX_PER_CLASS
) -> tuple[Tensor, Tensor]:
    """(train rows, test rows): n = min(positives, negatives, max_per_class) rows of each
    class drawn at random (seeded), each class split (1 − TEST_FRACTION) : TEST_FRACTION."""
    y = labels_N.bool()
    g = torch.Generator().manual_seed(seed)
    pos, neg = y.nonzero().flatten(), (~y).nonzero().flatten()
    n = min(len(pos), len(neg), max_per_class)
    n_test = max(1, round(n * TEST_FRACTION))
    train, test = [], []
    for rows in (pos, neg):
        pick = rows[torch.randperm(len(rows), generator=g)[:n]]
        test.append(pick[:n_test])
        train.append(pick[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def _scores(theta: Tensor, x_test: Tensor, y_test: Tensor) -> dict[str, float]:
    logits = (x_test.double() @ theta[:-1] + theta[-1]).numpy()
    y = y_test.bool().numpy()
    return {"accuracy": float(((logits > 0) == y).mean()), "auc": roc_auc(logits, y)}


def sparse_probes(
    sources: Sequence[tuple[Tensor, Tensor]], y_train: Tensor, y_test: Tensor, ks: Sequence[int]
) -> list[dict[str, dict[str, Any]]]:
    """Per source (its train and test rows' features) and k: the top-k mean-difference
    columns of the train rows (`columns`) and the test accuracy / AUC of a probe on them;
    the sources' probes at one k are fitted in one batch (a source with fewer than k columns
    uses all of them, in a batch of its own width)."""
    orders = [top_k_mean_diff(a, y_train, max(ks)) for a, _ in sources]
    out: list[dict[str, dict[str, Any]]] = [{} for _ in sources]
    for k in ks:
        cols = [o[:k] for o in orders]
        for width in sorted({len(c) for c in cols}):
            group = [i for i, c in enumerate(cols) if len(c) == width]
            train = torch.stack([sources[i][0][:, cols[i]] for i in group])
            theta = logistic_regression(train, y_train.expand(len(group), -1))
            for t, i in enumerate(group):
                b, c = sources[i][1], cols[i]
                out[i][str(k)] = {**_scores(theta[t], b[:, c], y_test), "columns": c.tolist()}
    return out


def probe_task(
    x_ND: Tensor,
    labels_N: Tensor,
    encoders: Mapping[str, Sequence[Encoder]],
    ks: Sequence[int],
    *,
    seed: int = 0,
    min_positives: int = 20,
    max_per_class: int = MAX_PER_CLASS,
) -> dict[str, Any]:
    """One binary task: raw-activation probes (`raw_full`: every dimension; `raw_top_k`:
    k-sparse on raw dimensions) and, per encoder group (e.g. trained / init SAEs), per seed,
    k-sparse probes on the latents. Too few positives or negatives → `skipped`."""
    y = labels_N.bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    head = {"n_positive": n_pos, "n_negative": n_neg}
    if min(n_pos, n_neg) < min_positives:
        return {**head, "skipped": f"fewer than {min_positives} positives or negatives"}
    train, test = balanced_split(y, seed, max_per_class)
    xa, xb, ya, yb = x_ND[train], x_ND[test], y[train], y[test]
    out: dict[str, Any] = {**head, "n_train": len(train), "n_test": len(test)}
    out["raw_full"] = _scores(logistic_regression(xa, ya), xb, yb)
    sources = [(xa, xb)]
    with torch.no_grad():
        for encs in encoders.values():
            sources += [(enc(xa).float(), enc(xb).float()) for enc in encs]
    fitted = sparse_probes(sources, ya, yb, ks)
    out["raw_top_k"] = fitted[0]
    start = 1
    for group, encs in encoders.items():
        per_seed = fitted[start : start + len(encs)]
        start += len(encs)
        out[group] = {
            str(k): {m: [s[str(k)][m] for s in per_seed] for m in ("auc", "accuracy", "columns")}
            for k in ks
        }
    return out


def summarise_task(
    task: dict[str, Any], groups: Sequence[str], boot: dict[str, Any], tie: float
) -> dict[str, Any]:
    """Per group and k: the seed mean and bootstrap CI of AUC and accuracy, and the call
    against each baseline (win: the AUC CI lies above baseline + tie; loss: below
    baseline − tie; else tie). The baselines are one probe each (no seed variation), so the
    CI of the difference is the CI of the group's AUC shifted by the baseline."""
    if "skipped" in task:
        return task
    out = {k: task[k] for k in ("n_positive", "n_negative", "n_train", "n_test", "raw_full")}
    out["raw_top_k"] = {
        k: {m: v[m] for m in ("accuracy", "auc")} for k, v in task["raw_top_k"].items()
    }
    for g in groups:
        out[g] = {}
        for k, r in task[g].items():
            auc = bootstrap_ci(r["auc"], **boot)
            out[g][k] = {
                "auc": {**auc, "per_seed": r["auc"]},
                "accuracy": {**bootstrap_ci(r["accuracy"], **boot), "per_seed": r["accuracy"]},
                "vs_raw_top_k": _call(auc, task["raw_top_k"][k]["auc"], tie),
                "vs_raw_full": _call(auc, task["raw_full"]["auc"], tie),
            }
    return out


def _call(ci: dict[str, Any], baseline: float, tie: float) -> str:
    if ci["ci_low"] > baseline + tie:
        return "win"
    if ci["ci_high"] < baseline - tie:
        return "loss"
    return "tie"


def tally(tasks: dict[str, dict[str, Any]], group: str, ks: Sequence[int]) -> dict[str, Any]:
    """Wins / losses / ties of `group`'s k-sparse probes over the probed tasks, per k and
    baseline (HUSAI's SAEBench line: AUC 21 wins / 88 losses / 4 ties against baselines)."""
    out: dict[str, Any] = {}
    for base in ("vs_raw_top_k", "vs_raw_full"):
        out[base] = {}
        for k in ks:
            calls = [t[group][str(k)][base] for t in tasks.values() if "skipped" not in t]
            n = {c: calls.count(c) for c in ("win", "loss", "tie")}
            out[base][str(k)] = {"wins": n["win"], "losses": n["loss"], "ties": n["tie"]}
    return out


def sparse_probing(
    x_ND: Tensor,
    labels: Mapping[str, Tensor],
    encoders: Mapping[str, Sequence[Encoder]],
    ks: Sequence[int],
    *,
    seed: int = 0,
    min_positives: int = 20,
    tie: float = 0.01,
    boot: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `probing` block: per task (`labels`: name → bool [N]) `summarise_task` of
    `probe_task`, and per encoder group the wins / losses / ties tally. `boot`:
    bootstrap_ci's level / n_resamples / seed."""
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise HusaiError(f"probing k values must be ≥ 1, got {list(ks)}")
    boot = boot or {}
    tasks = {
        name: summarise_task(
            probe_task(x_ND, y, encoders, ks, seed=seed, min_positives=min_positives),
            list(encoders),
            boot,
            tie,
        )
        for name, y in labels.items()
    }
    probed = sum("skipped" not in t for t in tasks.values())
    return {
        "settings": {
            "ks": ks,
            "c": C,
            "max_per_class": MAX_PER_CLASS,
            "test_fraction": TEST_FRACTION,
            "seed": seed,
            "min_positives": min_positives,
            "tie": tie,
            "selection": "top-k |mean(pos) − mean(neg)| on the train split",
            "metric": "test AUC (higher = better); accuracy alongside",
        },
        "n_tasks": len(tasks),
        "n_probed": probed,
        "tasks": tasks,
        "tally": {g: tally(tasks, g, ks) for g in encoders},
    }
