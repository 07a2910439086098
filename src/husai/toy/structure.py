"""Known structure in a grokked toy model, as candidate "true features" for SAE recovery.

All structures are read at the answer (`=`) position over the full input grid: every pair
(a, b) for add/sub; for mul only a, b ≠ 0, with numbers in discrete-log coordinates over
Z_{p-1} (as in `husai.toy.fourier`). Write n for the cyclic group's size (p, or p-1 for mul)
and ω_k = 2πk/n. Activations X are centred over the grid. The structures:

- **class means** (`class_mean_structure`): the mean of X over the inputs with answer c, one
  unit direction per class c. The answer alone determines the output, so a model that
  computes it cleanly carries the class means; their variance explained is the R² of
  predicting every row by its class mean (between-class / total variance).
- **answer Fourier** (`fourier_structure(..., basis="answer")`): least-squares coefficients of X
  on the unit-variance features √2·cos(ω_k c), √2·sin(ω_k c) of the answer c, for the key
  frequencies k. Rows are unit directions ordered (cos k, sin k) by ascending k. Over all
  frequencies these features span every function of c, so their R² equals the class means'
  R²; over the key frequencies alone, the R² measures how Fourier-clean the class structure
  is. Defined for every hook; the natural truth where the answer is read out (mlp_out,
  resid_post).
- **input Fourier** (`basis="inputs"`): the same regression on the features of a and of b
  (rows: all of a's (cos k, sin k), then all of b's). What attention moves into the answer
  position, hence the natural truth at attn_out and resid_mid (the MLP's input). A grokked
  add model attends evenly to a and b, so a's and b's rows nearly coincide: pass them through
  `distinct_directions` before recovery.
- **embedding** (`embedding_structure`): the key-frequency Fourier components of the
  number-token embeddings, (fourier basis row) @ W_E. At the answer position `embed` and
  `blocks.0.resid_pre` are constant (the token is always `=`), so this is the truth for SAEs
  trained on those hooks at every position (activation config position="all"), where the rows
  are W_E[token] (+ W_pos). Mapping these directions through W_V W_O to attn_out is not done:
  the attention weights depend on the input, and the input-Fourier regression measures the
  real, input-dependent map instead.

With an even n (mul), the Nyquist frequency n/2 contributes a cos row only. Directions are
float32 unit rows; a direction whose coefficient is negligible (norm ≤ 1e-6 × the rows' RMS
norm) is left as a zero row. Because the phase origin of c is arbitrary, a cos/sin pair is only
one basis of its plane: an SAE may tile the plane with other directions, which the class means
(and Hungarian recovery against them) capture instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from torch import Tensor

from husai.config import ToyConfig, ToyModelConfig
from husai.errors import HusaiError
from husai.toy.data import make_dataset
from husai.toy.fourier import (
    discrete_log_order,
    embedding_frequency_norms,
    fourier_basis,
    fourier_labels,
    key_frequencies,
)

if TYPE_CHECKING:
    from husai.metrics.validate import ArrayLike

Basis = Literal["answer", "inputs"]
_ZERO_TOL = 1e-6  # directions below this × RMS row norm count as absent
_CONST_TOL = 1e-12  # centred / uncentred sum of squares below this: constant activations
SCORES = ("hungarian_mcc", "mean_max_cos", "fraction_recovered")


class Grid(NamedTuple):
    """The answer-position inputs: tokens [N, 3], answers [N], phases a/b/c in Z_n, n."""

    tokens: Tensor
    labels: Tensor
    phases: dict[str, Tensor]
    n: int


def input_grid(cfg: ToyModelConfig) -> Grid:
    """All p² inputs (add/sub), or those with a, b ≠ 0 in discrete-log phases (mul)."""
    tokens, labels = make_dataset(cfg.p, cfg.op)
    if cfg.op != "mul":
        phases = {"a": tokens[:, 0], "b": tokens[:, 1], "c": labels}
        return Grid(tokens, labels, phases, cfg.p)
    keep = (tokens[:, 0] != 0) & (tokens[:, 1] != 0)
    log = torch.zeros(cfg.p, dtype=torch.long)
    log[discrete_log_order(cfg.p)] = torch.arange(cfg.p - 1)
    tokens, labels = tokens[keep], labels[keep]
    phases = {"a": log[tokens[:, 0]], "b": log[tokens[:, 1]], "c": log[labels]}
    return Grid(tokens, labels, phases, cfg.p - 1)


def _tensor(x: ArrayLike, name: str) -> Tensor:
    """Detached tensor of a tensor or numpy array; NaN/Inf raise."""
    # imported here: husai.metrics pulls in scipy, which `import husai.toy` should not
    from husai.metrics.validate import as_tensor, check_finite

    t = as_tensor(x, name)
    check_finite(t, name)
    return t


def _centred(acts: ArrayLike) -> Tensor:
    """Validated [N, D] activations, centred, in float64; constant activations raise."""
    x = _tensor(acts, "acts")
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] == 0:
        raise HusaiError(f"acts must be [N, D] with N ≥ 2 and D ≥ 1, got {tuple(x.shape)}")
    x = x.to(torch.float64)
    xc = x - x.mean(dim=0, keepdim=True)
    if float(xc.pow(2).sum()) <= _CONST_TOL * float(x.pow(2).sum()):
        raise HusaiError("acts have zero variance (constant rows): no structure to find")
    return xc


def _unit(coef: Tensor, x: Tensor) -> Tensor:
    """Unit rows of coef [m, D] as float32; negligible rows (vs x's RMS row norm) become 0."""
    norm = coef.norm(dim=1, keepdim=True)
    rms = float(x.pow(2).sum(dim=1).mean().sqrt())
    return torch.where(norm > _ZERO_TOL * rms, coef / norm.clamp_min(1e-300), 0).float()


def class_mean_structure(acts: ArrayLike, labels: ArrayLike) -> tuple[Tensor, float]:
    """Unit directions [C, D] of the centred per-class means, and their variance explained.

    Rows follow the distinct labels in ascending order. variance_explained = between-class
    sum of squares / total sum of squares of the centred rows (R² of predicting each row by
    its class mean), in [0, 1].
    """
    x = _centred(acts)
    y = _tensor(labels, "labels")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.is_complex():
        raise HusaiError(
            f"labels must be integer [N] with N = {x.shape[0]}, got {y.dtype} {tuple(y.shape)}"
        )
    _, inv = torch.unique(y, return_inverse=True)
    count = torch.bincount(inv).to(torch.float64)
    means = torch.zeros(len(count), x.shape[1], dtype=torch.float64).index_add_(0, inv, x)
    means /= count[:, None]
    between = float((count * means.pow(2).sum(dim=1)).sum())
    return _unit(means, x), min(1.0, between / float(x.pow(2).sum()))


def _check_freqs(freqs: Iterable[int], n: int) -> list[int]:
    freqs = list(freqs)
    out = sorted({int(k) for k in freqs})
    if not out or not all(1 <= k <= n // 2 for k in out):
        raise HusaiError(f"frequencies must be a non-empty subset of 1..{n // 2}, got {freqs}")
    return out


def fourier_features(phases: Tensor, n: int, freqs: Iterable[int]) -> Tensor:
    """Unit-variance Fourier features [N, m] of phases [N] or [N, V] (ints mod n).

    Columns: per variable, per frequency k ascending, √2·cos(ω_k x), √2·sin(ω_k x); at the
    Nyquist k = n/2 only cos(πx), which is ±1 already.
    """
    ph = phases.reshape(phases.shape[0], -1).to(torch.float64)
    cols = []
    for v in range(ph.shape[1]):
        for k in _check_freqs(freqs, n):
            w = 2 * math.pi * k * ph[:, v] / n
            if 2 * k == n:
                cols.append(torch.cos(w))
            else:
                cols += [math.sqrt(2) * torch.cos(w), math.sqrt(2) * torch.sin(w)]
    return torch.stack(cols, dim=1)


def fourier_row_labels(
    n: int, freqs: Iterable[int], variables: tuple[str, ...] = ("c",)
) -> list[str]:
    """Row labels of `fourier_fit` / `fourier_structure` directions, e.g. "cos 14 (c)"."""
    return [
        f"{f} {k} ({v})"
        for v in variables
        for k in _check_freqs(freqs, n)
        for f in (("cos",) if 2 * k == n else ("cos", "sin"))
    ]


def fourier_fit(
    acts: ArrayLike, phases: Tensor, n: int, freqs: Iterable[int]
) -> tuple[Tensor, float]:
    """Least-squares fit of centred acts [N, D] on `fourier_features(phases, n, freqs)`.

    Returns the unit coefficient directions [m, D] (rows as `fourier_row_labels`) and the R²
    of the fit, in [0, 1].
    """
    x = _centred(acts)
    if phases.shape[0] != x.shape[0]:
        raise HusaiError(f"phases have {phases.shape[0]} rows but acts have {x.shape[0]}")
    f = fourier_features(phases, n, freqs)
    f = f - f.mean(dim=0, keepdim=True)  # exact no-op on a balanced grid; else an intercept
    # normal equations: f is well conditioned (orthogonal columns on a balanced grid)
    coef = torch.linalg.lstsq(f.T @ f, f.T @ x).solution
    r2 = 1.0 - float((x - f @ coef).pow(2).sum()) / float(x.pow(2).sum())
    return _unit(coef, x), min(1.0, max(0.0, r2))


def _model_cfg(model: torch.nn.Module, cfg: ToyConfig | ToyModelConfig) -> ToyModelConfig:
    mc = cfg.model if isinstance(cfg, ToyConfig) else cfg
    mine, theirs = (mc.p, mc.op, mc.d_model), (model.cfg.p, model.cfg.op, model.cfg.d_model)
    if mine != theirs:
        raise HusaiError(f"config (p, op, d_model) = {mine} does not match the model's {theirs}")
    return mc


def answer_activations(
    model: torch.nn.Module, tokens: Tensor, hooks: list[str]
) -> dict[str, Tensor]:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, hooks, position="answer")
    return cache


def _phases(grid: Grid, basis: Basis) -> Tensor:
    if basis == "answer":
        return grid.phases["c"]
    if basis == "inputs":
        return torch.stack([grid.phases["a"], grid.phases["b"]], dim=1)
    raise HusaiError(f"basis must be 'answer' or 'inputs', got {basis!r}")


def fourier_structure(
    model: torch.nn.Module,
    cfg: ToyConfig | ToyModelConfig,
    hook: str,
    key_freqs: Iterable[int],
    basis: Basis = "answer",
) -> Tensor:
    """Key-frequency Fourier directions of `hook` at the answer position (module docstring).

    basis="answer": [2·n_freqs, D] rows (cos k, sin k) of the answer c; "inputs": a's rows
    then b's, [4·n_freqs, D]. Raises for a hook that is constant there (embed, resid_pre).
    """
    grid = input_grid(_model_cfg(model, cfg))
    phases = _phases(grid, basis)
    acts = answer_activations(model, grid.tokens, [hook])[hook]
    try:
        return fourier_fit(acts, phases, grid.n, key_freqs)[0]
    except HusaiError as e:
        raise HusaiError(f"hook {hook!r} at the answer position: {e}") from None


def embedding_structure(model: torch.nn.Module, key_freqs: Iterable[int]) -> tuple[Tensor, float]:
    """Key-frequency components of the number embeddings: unit rows [2·n_freqs, d_model]
    (cos k, sin k) and their share of the centred embeddings' squared norm."""
    p, op = model.cfg.p, model.cfg.op
    w = model.W_E[:p].detach().to(torch.float64)
    if op == "mul":
        w = w[discrete_log_order(p)]
    n = w.shape[0]
    keys = set(fourier_row_labels(n, key_freqs, ("x",)))
    sel = [i for i, lab in enumerate(fourier_labels(n)) if f"{lab} (x)" in keys]
    comp = fourier_basis(n) @ w  # rows: const, cos 1, sin 1, ...
    total = float(comp[1:].pow(2).sum())
    if total == 0:
        raise HusaiError("the number embeddings are constant: no structure to find")
    share = float(comp[sel].pow(2).sum()) / total
    return _unit(comp[sel], w - w.mean(dim=0)), share


def distinct_directions(directions: ArrayLike, max_cos: float = 0.99) -> tuple[Tensor, Tensor]:
    """Rows [K, D] kept greedily in order, dropping zero rows and any row whose |cos| with a
    kept row exceeds max_cos; also their indices [K]. Duplicated truth rows cap Hungarian
    recovery (one decoder row matches one truth row): at attn_out, a's and b's rows of the
    input basis can coincide (one head moves both numbers' frequency into one direction)."""
    t = _tensor(directions, "directions").to(torch.float64)
    if t.ndim != 2:
        raise HusaiError(f"directions must be [T, D], got shape {tuple(t.shape)}")
    norm = t.norm(dim=1)
    u = t / norm.clamp_min(1e-300)[:, None]
    keep: list[int] = []
    for i in range(len(t)):
        if norm[i] > 0 and all(abs(float(u[i] @ u[j])) <= max_cos for j in keep):
            keep.append(i)
    idx = torch.tensor(keep, dtype=torch.long)
    return t[idx].to(torch.float32), idx


def model_key_frequencies(model: torch.nn.Module, mass: float = 0.9) -> list[int]:
    """Key frequencies of the model's embedding, as `husai.toy.fourier_summary` finds them."""
    return key_frequencies(embedding_frequency_norms(model.W_E, model.cfg.p, model.cfg.op), mass)


def _fourier_entry(x: Tensor, grid: Grid, basis: Basis, key: list[int]) -> dict[str, Any]:
    phases = _phases(grid, basis)
    dirs, r2_key = fourier_fit(x, phases, grid.n, key)
    return {
        "variance_explained_key": r2_key,
        "variance_explained_all": fourier_fit(x, phases, grid.n, range(1, grid.n // 2 + 1))[1],
        "n_directions": int(dirs.shape[0]),
        "n_distinct_directions": int(distinct_directions(dirs)[0].shape[0]),
    }


def _hook_summary(x: Tensor, grid: Grid, key: list[int]) -> dict[str, Any]:
    x = x.to(torch.float64)
    out: dict[str, Any] = {
        "width": int(x.shape[1]),
        "total_variance": float((x - x.mean(dim=0)).pow(2).sum(dim=1).mean()),
        "constant": False,
    }
    try:
        _, cm = class_mean_structure(x, grid.labels)
    except HusaiError:  # constant at the answer position (embed, resid_pre)
        empty = dict.fromkeys(("class_means", "answer_fourier", "input_fourier"))
        return {**out, "constant": True, **empty}
    n_classes = int(grid.labels.unique().numel())
    out["class_means"] = {"variance_explained": cm, "n_directions": n_classes}
    out["answer_fourier"] = _fourier_entry(x, grid, "answer", key)
    out["input_fourier"] = _fourier_entry(x, grid, "inputs", key)
    return out


def structure_summary(
    model: torch.nn.Module,
    cfg: ToyConfig | ToyModelConfig,
    hooks: list[str] | None = None,
    key_freqs: Iterable[int] | None = None,
) -> dict[str, Any]:
    """JSON-able summary of the known structure at each hook (default: every hook).

    key_freqs defaults to the embedding's key frequencies at cfg.train.fourier_mass (0.9 for
    a ToyModelConfig). Per hook ("hooks"): width, total_variance (mean squared norm of the
    centred rows), constant, class_means {variance_explained, n_directions}, answer_fourier
    and input_fourier {variance_explained_key, variance_explained_all, n_directions,
    n_distinct_directions (`distinct_directions` at |cos| 0.99)}; the last three are None for
    a constant hook. Also "embedding" {variance_explained,
    n_directions} for the number-token embeddings (SAEs on embed/resid_pre at every position).
    """
    mc = _model_cfg(model, cfg)
    mass = cfg.train.fourier_mass if isinstance(cfg, ToyConfig) else 0.9
    grid = input_grid(mc)
    key = model_key_frequencies(model, mass) if key_freqs is None else key_freqs
    key = _check_freqs(key, grid.n)
    hooks = model.hook_names if hooks is None else list(hooks)
    cache = answer_activations(model, grid.tokens, hooks)
    emb_dirs, emb_share = embedding_structure(model, key)
    return {
        "position": "answer",
        "op": mc.op,
        "basis": "discrete_log" if mc.op == "mul" else "additive",
        "n_inputs": int(grid.tokens.shape[0]),
        "key_frequencies": key,
        "embedding": {"variance_explained": emb_share, "n_directions": int(emb_dirs.shape[0])},
        "hooks": {h: _hook_summary(cache[h], grid, key) for h in hooks},
    }


def recovery_against(
    decoder: ArrayLike, truth: ArrayLike, threshold: float = 0.9
) -> dict[str, Any]:
    """Recovery of truth directions [T, D] by a decoder [F, D] or an ensemble's W_dec [S, F, D].

    Per seed, `husai.metrics.recovery`: hungarian_mcc (one-to-one matched |cos| summed over
    pairs / T), mean_max_cos, fraction_recovered (best |cos| > threshold). Returns their
    means over seeds, "per_seed" (a list of those three per seed), threshold, n_true,
    n_latents, n_seeds. A zero truth row (an absent direction) raises; near-duplicate truth
    rows cap hungarian_mcc (see `distinct_directions`).
    """
    from husai.metrics.recovery import recovery

    w = _tensor(decoder, "decoder")
    if w.ndim == 2:
        w = w.unsqueeze(0)
    if w.ndim != 3 or w.shape[0] == 0:
        raise HusaiError(f"decoder must be [F, D] or [S, F, D], got shape {tuple(w.shape)}")
    t = _tensor(truth, "truth")
    if t.ndim == 2 and t.shape[0] and bool((t.abs().amax(dim=1) == 0).any()):
        raise HusaiError("truth has zero rows (absent directions); drop them first")
    per = [recovery(t, w_s, threshold) for w_s in w]
    out: dict[str, Any] = {k: sum(r[k] for r in per) / len(per) for k in SCORES}
    return {
        **out,
        "per_seed": [{k: r[k] for k in SCORES} for r in per],
        "threshold": per[0]["threshold"],
        "n_true": per[0]["n_true"],
        "n_latents": per[0]["n_latents"],
        "n_seeds": len(per),
    }
