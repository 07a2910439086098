"""Consistency of any set of saved SAEs (same d_in), against matched random baselines.

``compare`` returns a ``Comparison``: ``summary`` (JSON-able; every metric block names its
``variant`` and says "higher = more consistent"), the per-latent table and the per-latent
mean best-match |cos| of trained and random dictionaries (for the histogram);
``write_comparison`` writes the JSON, the per-latent CSV and the figures, as the CLI does.
The consistency blocks are ``husai.metrics.summary``'s, on random dictionaries drawn as
`husai run` draws them, so comparing a run's seeds gives the run's numbers.

Definitions (see ``husai.metrics`` for the functions):
- rows compared: decoder rows (default) or encoder rows (``encoder=True``);
- PWMCC is HUSAI's max-|cos| variant; Song et al.'s "PWMCC" is the one-to-one assignment
  version, reported here as ``hungarian_mcc`` (exact up to 8192 latents, sparse top-m beyond);
- activation MCC: latents are matched one-to-one on the compared rows' |cos| (the Hungarian
  MCC matching, not on activation correlation), then the Pearson correlation over tokens of
  each matched pair's activations is averaged. Baseline: the same over a random pairing;
- shared-latent rate (Paulo & Belrose): same partner under the encoder and the decoder
  matchings, both |cos| > threshold;
- subspace similarity: mean cos² of principal angles between the top-r principal directions.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from husai.config import MetricsConfig
from husai.errors import HusaiError
from husai.io import write_json, write_text
from husai.metrics import (
    VARIANTS,
    MatchedCorrelation,
    pair_matrix,
    pairwise_groups,
    random_dictionaries_like,
    shared_latent_rate,
    stream_quality,
    subspace_similarity,
    summarise_pairwise,
    summarise_values,
)
from husai.metrics.subspace import default_rank
from husai.sae import SAE, load

SHARED_THRESHOLD = 0.7
HIGHER = "higher = more consistent"


@dataclass
class Comparison:
    """Result of `compare`: JSON summary, per-latent table rows, histogram data."""

    summary: dict[str, Any]
    per_latent: list[dict[str, Any]] = field(default_factory=list)
    latent_mean_best: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """One short label per SAE, "index:directory name" (tables and figures)."""
        return [f"{k}:{Path(p).name}" for k, p in enumerate(self.summary["saes"])]


@torch.no_grad()
def _activation_mcc(
    saes: list[SAE],
    keep: list[np.ndarray],
    x_ND: Tensor,
    pair_idx: dict[tuple[int, int], dict[str, tuple[np.ndarray, np.ndarray]]],
    chunk: int,
) -> dict[tuple[int, int], dict[str, float]]:
    """Mean Pearson correlation of each pair's matched (and randomly paired) latents."""
    accs = {
        p: {g: MatchedCorrelation(r, c) for g, (r, c) in groups.items()}
        for p, groups in pair_idx.items()
    }
    keep_t = [torch.as_tensor(k) for k in keep]
    for start in range(0, len(x_ND), chunk):
        xb = x_ND[start : start + chunk]
        codes = [sae.encode(xb)[0][:, k] for sae, k in zip(saes, keep_t, strict=True)]
        for (i, j), groups in accs.items():
            for acc in groups.values():
                acc.update(codes[i], codes[j])
    return {p: {g: float(a.result().mean()) for g, a in gs.items()} for p, gs in accs.items()}


def _load_all(paths: list[Path], fmt: str | None = None) -> list[SAE]:
    saes = [load(Path(p)) if fmt is None else load(Path(p), format=fmt) for p in paths]
    d_ins = {s.d_in for s in saes}
    if len(d_ins) > 1:
        detail = ", ".join(f"{p}: d_in {s.d_in}" for p, s in zip(paths, saes, strict=True))
        raise HusaiError(f"SAEs have different d_in ({detail}); cannot compare their dictionaries")
    return saes


def _load_x(activations: Path | Tensor, d_in: int) -> Tensor:
    if isinstance(activations, Tensor):
        x = activations.float()
    else:
        from husai.activations import load_activations

        x, _ = load_activations(Path(activations))
    if x.ndim != 2 or x.shape[1] != d_in:
        raise HusaiError(f"activations have shape {tuple(x.shape)} but the SAEs have d_in {d_in}")
    return x


@dataclass
class _Rows:
    """The rows compared (`dicts`, per SAE, latents in `keep`) and the other kind of rows,
    with their matched random baselines (drawn as `husai run` draws them)."""

    enc: list[Tensor]
    dec: list[Tensor]
    rand_enc: list[Tensor]
    rand_dec: list[Tensor]
    encoder: bool

    @property
    def dicts(self) -> list[Tensor]:
        return self.enc if self.encoder else self.dec

    @property
    def rand(self) -> list[Tensor]:
        return self.rand_enc if self.encoder else self.rand_dec

    @property
    def name(self) -> str:
        return "encoder" if self.encoder else "decoder"


def _rows(saes: list[SAE], keep: list[np.ndarray], encoder: bool, seed: int) -> _Rows:
    enc = [s.W_enc[0].detach()[torch.as_tensor(k)] for s, k in zip(saes, keep, strict=True)]
    dec = [s.W_dec[0].detach()[torch.as_tensor(k)] for s, k in zip(saes, keep, strict=True)]
    dicts, other = (enc, dec) if encoder else (dec, enc)
    # the compared rows' baseline first, drawn as `husai run` draws it; then the other rows'
    rand = random_dictionaries_like([tuple(d.shape) for d in dicts + other], seed)
    rand, rand_other = rand[: len(dicts)], rand[len(dicts) :]
    rand_enc, rand_dec = (rand, rand_other) if encoder else (rand_other, rand)
    return _Rows(enc, dec, rand_enc, rand_dec, encoder)


def _check_options(
    paths: list[Path],
    activations: Any,
    exclude_dead: bool,
    shared_threshold: float,
    subspace_rank: int | None,
) -> None:
    if len(paths) < 2:
        raise HusaiError("compare needs at least two SAE directories")
    if not 0.0 <= shared_threshold <= 1.0:
        raise HusaiError(f"shared_threshold must lie in [0, 1], got {shared_threshold}")
    if subspace_rank is not None and subspace_rank < 1:
        raise HusaiError(f"subspace_rank must be a positive integer, got {subspace_rank}")
    if exclude_dead and activations is None:
        raise HusaiError("--exclude-dead needs --activations (dead = never fires on them)")


def _variants(rows: str, trained: dict[str, Any]) -> dict[str, str]:
    """The summarised metrics' variant texts, naming the rows compared."""
    methods = sorted(set(trained["hungarian_mcc"]["methods"]))
    shared = f"{VARIANTS['shared_fraction']}; {rows} rows"
    return {
        "pwmcc": f"{VARIANTS['pwmcc']}; {rows} rows. Song et al.'s 'PWMCC' is the "
        "one-to-one version: see hungarian_mcc",
        "hungarian_mcc": f"mean |cos| over the one-to-one matching maximising total |cos| "
        f"of {rows} rows ({'; '.join(methods)}); {HIGHER}",
        **{f"shared_fraction@{t}": f"{shared} (threshold {t:g})" for t in trained["thresholds"]},
    }


def _shared_latents(
    r: _Rows, pairs: list[tuple[int, int]], threshold: float, m: MetricsConfig
) -> dict[str, Any]:
    """Paulo & Belrose shared latents (encoder and decoder matchings agree, both > threshold)."""
    slr: dict[str, list[float]] = {"trained": [], "random": []}
    for i, j in pairs:
        for g, enc, dec in (("trained", r.enc, r.dec), ("random", r.rand_enc, r.rand_dec)):
            rate = shared_latent_rate(
                enc[i], dec[i], enc[j], dec[j], threshold, block_size=m.block_size
            )["rate"]
            slr[g].append(rate)
    return summarise_values(
        slr,
        pair_matrix(len(r.enc), pairs, slr["trained"]),
        "Paulo & Belrose shared latents: fraction of latents (mean over both SAEs) that the "
        "one-to-one encoder-row matching and decoder-row matching pair with the same partner, "
        f"with both |cos| > {threshold:g}; {HIGHER}",
        m,
    )


def _subspace(
    r: _Rows, pairs: list[tuple[int, int]], rank: int | None, m: MetricsConfig
) -> dict[str, Any]:
    """Subspace stability: principal angles between the top-rank principal directions."""
    sizes = [len(d) for d in r.dicts]
    width = r.dicts[0].shape[1]
    rank = rank or default_rank(width, min(sizes), min(sizes))
    sub: dict[str, list[float]] = {"trained": [], "random": []}
    for i, j in pairs:
        sub["trained"].append(subspace_similarity(r.dicts[i], r.dicts[j], rank))
        sub["random"].append(subspace_similarity(r.rand[i], r.rand[j], rank))
    return summarise_values(
        sub,
        pair_matrix(len(sizes), pairs, sub["trained"]),
        f"mean cos² of the principal angles between the top-{rank} principal directions (right "
        f"singular vectors of the unit {r.name} rows) of the two SAEs; random r-subspaces "
        f"score ~ r/d = {rank / width:.3f}; {HIGHER}",
        m,
    )


def _firing_block(
    paths: list[Path], firing: list[Any], counts: list[np.ndarray], freq: list[np.ndarray]
) -> dict[str, Any]:
    return {
        "n_tokens": firing[0].n_rows,
        "per_sae": [
            {
                "sae": str(p),
                "mean_firing_frequency": float(f.mean()),
                "n_dead": int((c == 0).sum()),
                "dead_fraction": q.result()[0]["dead_fraction"],
            }
            for p, f, c, q in zip(paths, freq, counts, firing, strict=True)
        ],
        "variant": "firing frequency = fraction of tokens on which a latent is nonzero; "
        "dead = never fires on these activations",
    }


def _activation_block(
    saes: list[SAE],
    keep: list[np.ndarray],
    x_ND: Tensor,
    trained: dict[str, Any],
    rows: str,
    m: MetricsConfig,
    chunk: int,
) -> dict[str, Any]:
    """Activation MCC of the latents matched one-to-one, vs a random pairing."""
    pairs, sizes = trained["pairs"], [len(k) for k in keep]
    gen = np.random.default_rng(m.baseline_seed)
    pair_idx = {}
    for i, j in pairs:
        mt = trained["matchings"][(i, j)]
        k = min(sizes[i], sizes[j])
        rnd = (gen.permutation(sizes[i])[:k], gen.permutation(sizes[j])[:k])
        pair_idx[(i, j)] = {"trained": (mt.rows, mt.cols), "random": rnd}
    corr = _activation_mcc(saes, keep, x_ND, pair_idx, chunk)
    act = {g: [corr[p][g] for p in pairs] for g in ("trained", "random")}
    return summarise_values(
        act,
        pair_matrix(len(saes), pairs, act["trained"]),
        "mean Pearson correlation over tokens of the activations of latent pairs matched "
        f"one-to-one on {rows}-row |cos| (the hungarian_mcc matching); a constant "
        f"latent scores 0; baseline: random pairing; {HIGHER}",
        m,
    )


def compare(
    paths: list[Path],
    m: MetricsConfig | None = None,
    *,
    encoder: bool = False,
    activations: Path | Tensor | None = None,
    exclude_dead: bool = False,
    shared_threshold: float = SHARED_THRESHOLD,
    subspace_rank: int | None = None,
    chunk: int = 4096,
    fmt: str | None = None,
) -> Comparison:
    """Pairwise consistency of saved SAEs' decoder (or encoder) rows vs random baselines.

    With ``activations`` ([n, d_in] tensor or a husai activation file): firing frequencies and
    activation MCC; ``exclude_dead`` (needs activations) drops latents that never fire before
    any matching. ``fmt``: on-disk layout passed to ``husai.sae.load`` (None = detect).
    Raises ``HusaiError`` for user mistakes (one line).
    """
    m = m or MetricsConfig()
    _check_options(paths, activations, exclude_dead, shared_threshold, subspace_rank)
    saes = _load_all(paths, fmt)
    d_in = saes[0].d_in
    x_ND = _load_x(activations, d_in) if activations is not None else None

    firing = None if x_ND is None else [stream_quality(s.encode, x_ND, chunk=chunk) for s in saes]
    counts = None if firing is None else [f.counts[0].numpy() for f in firing]
    keep = [np.arange(s.d_sae) for s in saes]
    if exclude_dead:
        keep = [np.flatnonzero(c > 0) for c in counts]
        empty = [str(p) for p, k in zip(paths, keep, strict=True) if len(k) == 0]
        if empty:
            raise HusaiError(f"every latent is dead on these activations in: {', '.join(empty)}")
    rows = _rows(saes, keep, encoder, m.baseline_seed)
    sizes = [len(k) for k in keep]
    groups = pairwise_groups(
        {"trained": rows.dicts, "random": rows.rand}, m.thresholds, m.block_size
    )
    trained, random = groups["trained"], groups["random"]
    pairs = trained["pairs"]
    dropped = [s.d_sae - k for s, k in zip(saes, sizes, strict=True)]
    out: dict[str, Any] = {
        "saes": [str(p) for p in paths],
        "d_in": d_in,
        "d_sae": [s.d_sae for s in saes],
        "rows_compared": rows.name,
        "baseline": "matched random unit-Gaussian dictionaries (same shapes); "
        "activation MCC: a random one-to-one pairing of the same latents",
        "direction": f"every score: {HIGHER}",
        "dead_latents": {
            "excluded": exclude_dead,
            "dropped_per_sae": dropped if exclude_dead else [0] * len(saes),
            "latents_used_per_sae": sizes,
        },
        **summarise_pairwise(groups, m, _variants(rows.name, trained)),
        "shared_latent_rate": _shared_latents(rows, pairs, shared_threshold, m),
        "subspace_similarity": _subspace(rows, pairs, subspace_rank, m),
    }
    freq = None
    if x_ND is not None:
        freq = [c / len(x_ND) for c in counts]
        out["firing"] = _firing_block(paths, firing, counts, freq)
        out["activation_mcc"] = _activation_block(saes, keep, x_ND, trained, rows.name, m, chunk)
    per_latent, mean_best = _per_latent(paths, trained, random, keep, sizes, saes, counts, freq)
    return Comparison(out, per_latent, mean_best)


def _best_columns(pw: dict[str, Any], sizes: list[int]) -> list[np.ndarray]:
    n = len(sizes)
    cols = [np.full((k, n), np.nan) for k in sizes]
    for (i, j), (ba, bb) in pw["best"].items():
        cols[i][:, j], cols[j][:, i] = ba.double().numpy(), bb.double().numpy()
    return cols


def _per_latent(
    paths: list[Path],
    trained: dict[str, Any],
    random: dict[str, Any],
    keep: list[np.ndarray],
    sizes: list[int],
    saes: list[SAE],
    counts: list[np.ndarray] | None,
    freq: list[np.ndarray] | None,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    n = len(paths)
    best_t, best_r = _best_columns(trained, sizes), _best_columns(random, sizes)
    rows: list[dict[str, Any]] = []
    for i, sae in enumerate(saes):
        pos = {int(f): r for r, f in enumerate(keep[i])}
        for f in range(sae.d_sae):
            row: dict[str, Any] = {"sae": i, "sae_path": str(paths[i]), "latent": f}
            r = pos.get(f)
            vals = best_t[i][r] if r is not None else None
            for j in range(n):
                row[f"best_abs_cos_sae{j}"] = (
                    "" if vals is None or j == i else round(float(vals[j]), 6)
                )
            others = [] if vals is None else [float(v) for v in np.delete(vals, i)]
            row["min_best_abs_cos"] = round(min(others), 6) if others else ""
            row["mean_best_abs_cos"] = round(sum(others) / len(others), 6) if others else ""
            row["firing_frequency"] = "" if freq is None else float(freq[i][f])
            row["dead"] = "" if counts is None else int(counts[i][f] == 0)
            row["excluded"] = int(r is None)
            rows.append(row)
    mean_best = {
        "trained": np.concatenate([np.nanmean(b, axis=1) for b in best_t]),
        "random": np.concatenate([np.nanmean(b, axis=1) for b in best_r]),
    }
    return rows, mean_best


def write_latents_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the per-latent table (one row per latent of every SAE), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return write_text(Path(path), buf.getvalue())


def write_comparison(
    cmp: Comparison,
    *,
    json_out: Path | None = None,
    latents_csv: Path | None = None,
    figures: Path | None = None,
) -> list[Path]:
    """Write what `husai compare` writes, each file atomically: the heatmap and histogram
    PNGs into `figures` (default: the folder of `json_out`, else of `latents_csv`; none if
    all three are None), the per-latent CSV, and the JSON summary (with the figures' paths
    under "figures"). Returns the paths written, in that order."""
    anchor = json_out or latents_csv
    fig_dir = Path(figures) if figures is not None else (Path(anchor).parent if anchor else None)
    written: list[Path] = []
    summary = cmp.summary
    if fig_dir is not None:
        from husai.report import figures as figs

        dead = summary["dead_latents"]
        note = (
            "dead latents excluded: " + ", ".join(str(k) for k in dead["dropped_per_sae"])
            if dead["excluded"]
            else ""
        )
        written += [
            figs.compare_heatmaps(summary, cmp.labels, fig_dir / "compare_heatmap.png"),
            figs.latent_best_histogram(
                cmp.latent_mean_best, fig_dir / "latent_best_hist.png", note
            ),
        ]
        summary = {**summary, "figures": [str(p) for p in written]}
    if latents_csv is not None:
        written.append(write_latents_csv(cmp.per_latent, latents_csv))
    if json_out is not None:
        written.append(write_json(json_out, summary))
    return written
