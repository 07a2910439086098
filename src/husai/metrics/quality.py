"""Reconstruction and sparsity quality of one SAE (or of S seeds at once).

Inputs are torch tensors (numpy arrays are accepted too): activations/reconstructions are
[n, d] and codes are [n, n_latents]. Every function also takes a leading seeds axis
([S, n, d] / [S, n, n_latents]) and then returns one value per seed (a list, or for
``firing_counts`` an [S, n_latents] tensor). ``x`` may stay [n, d] when ``x_hat`` is [S, n, d].
Sums are accumulated in float64; results are Python floats.

``x`` is the reference the reconstruction is scored against: an SAE's input, or a
transcoder's target y (the activations at its output hook; ``x_hat`` is then its [n, d_out]
prediction, and explained variance is relative to y's variance).
``QualityAccumulator`` gathers MSE, explained variance, L0, dead fraction and firing counts
of S seeds streamed over row chunks (``stream_quality`` feeds it from an encoder/decoder);
``reconstruction_quality`` is the same for rows given at once. The single metrics and the
accumulator share their arithmetic, so each number has one definition.

Firing frequency (a latent's firing count / rows): ``dense_fraction`` is the fraction of
latents firing on more than ``threshold`` of the rows (default 0.1: SAEBench core's
``freq_over_10_percent``, ``(density > 0.1).mean()``); ``firing_histogram`` counts the live
latents per log10-frequency bin (dead ones apart). The accumulator's ``dense_fraction()``
and ``histogram()`` give them per seed, outside ``result()``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from husai.errors import HusaiError
from husai.metrics.validate import ArrayLike, as_tensor, check_finite


def _tensor(x: ArrayLike, name: str) -> torch.Tensor:
    t = as_tensor(x, name)
    if t.ndim not in (2, 3):
        raise HusaiError(f"{name} must be [n, d] or [S, n, d], got shape {tuple(t.shape)}")
    if t.shape[-2] == 0:
        raise HusaiError(f"{name} has no rows (shape {tuple(t.shape)})")
    check_finite(t, name)
    return t


def _pair(x: ArrayLike, x_hat: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    xt, ht = _tensor(x, "x"), _tensor(x_hat, "x_hat")
    if xt.shape != ht.shape and not (xt.ndim == 2 and ht.ndim == 3 and ht.shape[1:] == xt.shape):
        raise HusaiError(f"x and x_hat shapes differ: {tuple(xt.shape)} vs {tuple(ht.shape)}")
    return xt, ht.to(xt.device)


def _out(v: torch.Tensor) -> float | list[float]:
    return v.item() if v.ndim == 0 else v.tolist()


def _sum_rows(rows: torch.Tensor) -> torch.Tensor:
    """Sum of per-row sums over the last axis by numpy's pairwise summation: an order that
    does not depend on torch's thread count (a full torch reduction splits its input by
    thread) nor on how the rows were chunked."""
    return torch.from_numpy(np.asarray(rows.cpu().numpy().sum(axis=-1)))


def _row_sse(xt: torch.Tensor, ht: torch.Tensor) -> torch.Tensor:
    """Squared error of each row, in float64 (one thread per row): [..., n]."""
    return (ht.double() - xt.double()).pow(2).sum(dim=-1)


def _sst(xt: torch.Tensor) -> torch.Tensor:
    """Total sum of squares of x around its per-dimension mean (per seed with a seeds axis)."""
    xd = xt.double()
    sst = _sum_rows((xd - xd.mean(dim=-2, keepdim=True)).pow(2).sum(dim=-1))
    if bool((sst == 0).any()):
        raise HusaiError("x has zero variance; explained variance is undefined")
    return sst


def _l0(counts: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Mean nonzero latents per row from firing counts [..., F]: the total count (exact
    int64) over the rows, as a float32 quotient (as metrics.json has always reported it)."""
    return counts.sum(dim=-1).float() / n_rows


def mse(x: ArrayLike, x_hat: ArrayLike) -> float | list[float]:
    """Mean squared reconstruction error over all elements; lower = better."""
    xt, ht = _pair(x, x_hat)
    return _out(_sum_rows(_row_sse(xt, ht)) / (ht.shape[-2] * ht.shape[-1]))


def explained_variance(x: ArrayLike, x_hat: ArrayLike) -> float | list[float]:
    """Fraction of variance explained, ``1 - SSE/SST``; higher = better (1 = perfect).

    SST is taken around the per-dimension mean of ``x`` (so reconstructing every row as that
    mean scores 0; worse reconstructions go negative). Constant ``x`` raises ``HusaiError``.
    """
    xt, ht = _pair(x, x_hat)
    return _out(1.0 - _sum_rows(_row_sse(xt, ht)) / _sst(xt))


#: log10 firing-frequency bin edges of `firing_histogram`: 10⁻⁷ … 1 in half decades
LOG10_EDGES = tuple(x / 2 for x in range(-14, 1))
DENSE_THRESHOLD = 0.1


def _dense(counts: torch.Tensor, n_rows: int, threshold: float) -> torch.Tensor:
    """Fraction of latents with count / n_rows > threshold, per seed: [...]."""
    if not 0 <= threshold < 1:
        raise HusaiError(f"dense threshold must be in [0, 1), got {threshold}")
    return ((counts.double() / n_rows) > threshold).double().mean(dim=-1)


def _histogram(counts_F: torch.Tensor, n_rows: int, edges: tuple[float, ...]) -> dict:
    """One seed's histogram: live latents with frequency in [10^e_i, 10^e_i+1) (the last
    bin closed; below the first edge counted in the first bin), dead ones apart."""
    if len(edges) < 2 or list(edges) != sorted(set(edges)) or edges[-1] > 0:
        raise HusaiError(f"histogram edges must increase and end at ≤ 0, got {edges}")
    freq = counts_F.double() / n_rows
    live = freq[counts_F > 0]
    bounds = torch.tensor([10.0**e for e in edges[1:-1]], dtype=torch.float64)
    bins = torch.bucketize(live, bounds, right=True)  # bound ≤ freq → the next bin
    per_bin = torch.bincount(bins, minlength=len(edges) - 1)
    return {
        "log10_edges": list(edges),
        "counts": per_bin.tolist(),
        "dead": int((counts_F == 0).sum()),
        "n_latents": int(counts_F.numel()),
        "n_rows": int(n_rows),
    }


def _codes(codes: ArrayLike) -> torch.Tensor:
    return _tensor(codes, "codes") != 0


def firing_counts(codes: ArrayLike) -> torch.Tensor:
    """Number of rows on which each latent is nonzero: int64 [n_latents] (or [S, n_latents])."""
    return _codes(codes).sum(dim=-2)


def mean_l0(codes: ArrayLike) -> float | list[float]:
    """Mean number of nonzero latents per row (L0 sparsity); lower = sparser."""
    c = _tensor(codes, "codes")
    return _out(_l0(firing_counts(c), c.shape[-2]))


def dead_fraction(codes: ArrayLike) -> float | list[float]:
    """Fraction of latents that never fire on the given rows; lower = better."""
    return _out((firing_counts(codes) == 0).double().mean(dim=-1))


def dense_fraction(codes: ArrayLike, threshold: float = DENSE_THRESHOLD) -> float | list[float]:
    """Fraction of latents firing on more than ``threshold`` of the rows (SAEBench's
    ``freq_over_10_percent`` at 0.1); lower = fewer dense latents."""
    c = _tensor(codes, "codes")
    return _out(_dense(firing_counts(c), c.shape[-2], threshold))


def firing_histogram(codes: ArrayLike, edges: tuple[float, ...] = LOG10_EDGES) -> dict | list:
    """Histogram of log10 firing frequency of the live latents (``counts`` per bin of
    ``log10_edges``), with ``dead``, ``n_latents``, ``n_rows``; one dict per seed with a
    seeds axis."""
    c = _tensor(codes, "codes")
    counts = firing_counts(c)
    if counts.ndim == 1:
        return _histogram(counts, c.shape[-2], edges)
    return [_histogram(k, c.shape[-2], edges) for k in counts]


class QualityAccumulator:
    """Reconstruction quality of S seeds, fed chunk by chunk of rows (in order).

    ``update(codes [S, B, F], target [B, d] or [S, B, d], recon [S, B, d])``; without a
    seeds axis (codes [B, F], recon [B, d]) it is one seed. ``target`` and ``recon`` may be
    left out of every chunk (codes only: L0, dead fraction, firing counts). ``result()``: one
    dict per seed with ``mse`` and ``explained_variance`` (when reconstructions were fed),
    ``l0`` and ``dead_fraction``: the numbers ``mse``, ``explained_variance``, ``mean_l0``
    and ``dead_fraction`` give on all rows at once, however the rows are chunked.
    ``counts``: firing counts, int64 [S, F]. Memory: one float64 per row and seed, plus the
    fed target chunks (kept as given, for the SST about the mean of all rows).
    ``dense_fraction(threshold)`` and ``histogram(edges)``: per seed, from the counts.
    """

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None
        self.n_rows = 0
        self._sse: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(
        self, codes: ArrayLike, target: ArrayLike | None = None, recon: ArrayLike | None = None
    ) -> None:
        c = _tensor(codes, "codes")
        c = c.unsqueeze(0) if c.ndim == 2 else c
        if (target is None) != (recon is None):
            raise HusaiError("give both the target and its reconstruction, or neither")
        if self.n_rows and (recon is not None) != bool(self._sse):
            raise HusaiError("give every chunk's reconstruction, or none")
        if self.counts is not None and len(c) != len(self.counts):
            raise HusaiError(f"codes have {len(c)} seeds, earlier chunks {len(self.counts)}")
        if recon is not None:
            xt, ht = _pair(target, recon)
            ht = ht.unsqueeze(0) if ht.ndim == 2 else ht
            if ht.shape[:-1] != c.shape[:-1]:
                raise HusaiError(
                    f"codes and x_hat have different row counts (or seeds): codes "
                    f"{tuple(c.shape)}, x_hat {tuple(ht.shape)}"
                )
            if self._targets and self._targets[0].ndim != xt.ndim:
                raise HusaiError("targets changed between chunks from shared to per seed")
            self._sse.append(_row_sse(xt, ht))
            self._targets.append(xt)
        counts = (c != 0).sum(dim=-2)
        self.counts = counts if self.counts is None else self.counts + counts
        self.n_rows += c.shape[-2]

    def result(self) -> list[dict[str, float]]:
        if self.counts is None:
            raise HusaiError("no rows were given to the quality accumulator")
        values: dict[str, list[float]] = {}
        if self._sse:
            sse = _sum_rows(torch.cat(self._sse, dim=-1))
            target = torch.cat(self._targets, dim=-2)
            values["mse"] = (sse / (self.n_rows * target.shape[-1])).tolist()
            values["explained_variance"] = (1.0 - sse / _sst(target)).tolist()
        values["l0"] = _l0(self.counts, self.n_rows).tolist()
        values["dead_fraction"] = (self.counts == 0).double().mean(dim=-1).tolist()
        return [dict(zip(values, v, strict=True)) for v in zip(*values.values(), strict=True)]

    def _fed(self) -> torch.Tensor:
        if self.counts is None:
            raise HusaiError("no rows were given to the quality accumulator")
        return self.counts

    def dense_fraction(self, threshold: float = DENSE_THRESHOLD) -> list[float]:
        """Per seed: the fraction of latents firing on more than `threshold` of the rows."""
        return _dense(self._fed(), self.n_rows, threshold).tolist()

    def histogram(self, edges: tuple[float, ...] = LOG10_EDGES) -> list[dict]:
        """Per seed: the log10 firing-frequency histogram (see `firing_histogram`)."""
        return [_histogram(k, self.n_rows, edges) for k in self._fed()]


@torch.no_grad()
def stream_quality(
    encode: Callable[[torch.Tensor], torch.Tensor],
    x_ND: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    target_NO: torch.Tensor | None = None,
    chunk: int = 4096,
) -> QualityAccumulator:
    """Encode x chunk by chunk of rows (``encode``: [B, D] → codes [S, B, F], e.g. an SAE
    ensemble's) and, given ``decode`` (codes → [S, B, O]), score the reconstructions against
    ``target_NO`` (a transcoder's targets y; default x): a fed ``QualityAccumulator``."""
    ref = x_ND if target_NO is None else target_NO
    if len(ref) != len(x_ND):
        raise HusaiError(f"x and the targets have different row counts ({len(x_ND)} vs {len(ref)})")
    acc = QualityAccumulator()
    for start in range(0, len(x_ND), chunk):
        codes = encode(x_ND[start : start + chunk])
        if decode is None:
            acc.update(codes)
        else:
            acc.update(codes, ref[start : start + chunk], decode(codes))
    return acc


def reconstruction_quality(
    target: ArrayLike, recon: ArrayLike, codes: ArrayLike
) -> dict[str, float] | list[dict[str, float]]:
    """{"mse", "explained_variance", "l0", "dead_fraction"} of a reconstruction of `target`
    (an SAE's input, a transcoder's target y) from `codes` (`QualityAccumulator` fed once);
    one dict per seed when `recon` and `codes` have a seeds axis."""
    acc = QualityAccumulator()
    acc.update(codes, target, recon)
    per_seed = acc.result()
    return per_seed if _tensor(recon, "x_hat").ndim == 3 else per_seed[0]


def loss_recovered(clean_loss: float, spliced_loss: float, ablated_loss: float) -> float:
    """Fraction of the LM loss recovered when splicing in the SAE; higher = better.

    ``(ablated - spliced) / (ablated - clean)``: 1 = as good as the clean model, 0 = as bad as
    ablating the activation (zero- or mean-ablation, whichever the caller measured).
    """
    vals = {"clean_loss": clean_loss, "spliced_loss": spliced_loss, "ablated_loss": ablated_loss}
    for name, v in vals.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise HusaiError(f"{name} must be a number, got {v!r}") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise HusaiError(f"{name} is not finite: {v!r}")
    clean, spliced, ablated = (float(v) for v in vals.values())
    if ablated == clean:
        raise HusaiError(f"ablated_loss equals clean_loss ({clean}); loss recovered is undefined")
    return (ablated - spliced) / (ablated - clean)
