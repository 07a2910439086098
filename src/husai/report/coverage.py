"""report.md's "where consistency lives" part of a data set, its two figures, and the
per-layer table over LM data sets; formats metrics.json's `coverage` and
`stability_by_frequency` blocks (husai.experiments.coverage), never recomputes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from husai.report.format import interval, markdown_table

PB_THRESHOLD = 0.7  # Paulo & Belrose's |cos| threshold
PB = (
    "Paulo & Belrose (2025) report that the fraction of latents found in only one of n SAEs "
    "falls from 0.58 with 2 SAEs to 0.35 with 9 (Pythia-160m, TopK); their latent is *found* "
    "in another SAE when it is shared there: the same partner under the encoder and the "
    "decoder Hungarian matchings, both |cos| > 0.7. Here only the decoder is matched "
    "(`hungarian@0.7`: the Hungarian partner's |cos| ≥ 0.7), which can only count more "
    "latents as found, so the fractions here are a lower bound on theirs for the same SAEs."
)


COLOURS = {
    ("trained", "max_cos"): "#1f77b4",
    ("trained", "hungarian"): "#2ca02c",
    ("random", "max_cos"): "#7f7f7f",
    ("random", "hungarian"): "#bcbd22",
}


def _threshold(cov: dict[str, Any]) -> float:
    ts = cov["thresholds"]
    return PB_THRESHOLD if PB_THRESHOLD in ts else ts[len(ts) // 2]


def _has(archs: dict[str, Any]) -> bool:
    return all("coverage" in a for a in archs.values())


def coverage_figures(name: str, archs: dict[str, Any], fig_dir: Path) -> None:
    """figures/coverage_<name>.png and figures/stability_frequency_<name>.png."""
    if not _has(archs):
        return
    from husai.report.figures import _save, plt

    fig, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs), 3.4), squeeze=False)
    for ax, (label, a) in zip(axes[0], archs.items(), strict=True):
        cov = a["coverage"]
        t = _threshold(cov)
        for group, ls in (("trained", "-"), ("random", "--")):
            for definition, marker in (("max_cos", "o"), ("hungarian", "s")):
                pts = cov[group]
                ax.plot(
                    [p["n"] for p in pts],
                    [p[f"{definition}@{t}"] for p in pts],
                    ls=ls,
                    marker=marker,
                    color=COLOURS[(group, definition)],
                    label=f"{group}, {definition}",
                )
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks([p["n"] for p in cov["trained"]])
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("n seeds")
        ax.set_ylabel(f"fraction with no partner (|cos| ≥ {t})")
        ax.legend(fontsize=6)
    fig.suptitle(
        "coverage: latents of a seed with no match in the other n−1 seeds (lower = more "
        "consistent)",
        fontsize=9,
    )
    _save(fig, fig_dir / f"coverage_{name}.png")

    fig, axes = plt.subplots(1, len(archs), figsize=(4.6 * len(archs), 3.6), squeeze=False)
    for ax, (label, a) in zip(axes[0], archs.items(), strict=True):
        sf = a["stability_by_frequency"]
        bins = sf["bins"]
        x = np.arange(len(bins))
        for k, (definition, colour) in enumerate(
            (("max_cos", "#1f77b4"), ("hungarian", "#2ca02c"))
        ):
            m = np.array([b[definition]["mean"] for b in bins])
            lo = m - np.array([b[definition]["ci_low"] for b in bins])
            hi = np.array([b[definition]["ci_high"] for b in bins]) - m
            ax.errorbar(
                x + 0.1 * (k - 0.5),
                m,
                yerr=[lo, hi],
                fmt="o",
                color=colour,
                ms=4,
                capsize=2,
                label=f"trained, {definition}",
            )
            r = sf["random"][definition]
            ax.axhspan(r["ci_low"], r["ci_high"], color=colour, alpha=0.15)
            ax.axhline(r["mean"], color=colour, ls=":", lw=1, label=f"random, {definition}")
        for xi, b in zip(x, bins, strict=True):
            ax.annotate(f"n={b['count']}", (xi, 0.02 + 0.04 * (xi % 2)), ha="center", fontsize=6)
        ax.set_xticks(x, [b["bin"] for b in bins], rotation=45, ha="right", fontsize=6)
        ax.set_ylim(0, 1.02)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("log10 firing frequency bin")
        ax.set_ylabel("per-latent stability (mean partner |cos|)")
        ax.legend(fontsize=6)
    fig.suptitle(
        "stability vs firing frequency (bin mean ± CI over latents; higher = more consistent)",
        fontsize=9,
    )
    _save(fig, fig_dir / f"stability_frequency_{name}.png")


def _curve_table(a: dict[str, Any], t: float) -> list[str]:
    cov = a["coverage"]
    rows = [
        [
            str(p["n"]),
            f"{p['n_subsets']} ({p['subsets']})",
            f"{p[f'max_cos@{t}']:.3f}",
            f"{p[f'hungarian@{t}']:.3f}",
            f"{r[f'max_cos@{t}']:.3f}",
            f"{r[f'hungarian@{t}']:.3f}",
        ]
        for p, r in zip(cov["trained"], cov["random"], strict=True)
    ]
    header = [
        "n",
        "subsets",
        "trained max-cos",
        "trained Hungarian",
        "random max-cos",
        "random Hungarian",
    ]
    return markdown_table(header, rows)


def _stability_table(a: dict[str, Any]) -> list[str]:
    sf = a["stability_by_frequency"]
    rows = [
        [b["bin"], str(b["count"]), interval(b["max_cos"]), interval(b["hungarian"])]
        for b in sf["bins"]
    ]
    rows.append(
        [
            "random (no firing)",
            str(sf["random"]["max_cos"]["n"]),
            interval(sf["random"]["max_cos"]),
            interval(sf["random"]["hungarian"]),
        ]
    )
    return markdown_table(["log10 frequency", "latents", "max-cos", "Hungarian"], rows)


def _pb_sentence(label: str, a: dict[str, Any]) -> str:
    cov = a["coverage"]
    if PB_THRESHOLD not in cov["thresholds"]:
        return f"- {label}: no coverage at |cos| 0.7 (thresholds {cov['thresholds']})."
    key = f"hungarian@{PB_THRESHOLD}"
    first, last = cov["trained"][0], cov["trained"][-1]
    rf, rl = cov["random"][0], cov["random"][-1]
    return (
        f"- **{label}**: found in only one seed (`{key}`) {first[key]:.2f} with 2 seeds → "
        f"{last[key]:.2f} with {last['n']} (random dictionaries {rf[key]:.2f} → {rl[key]:.2f}); "
        f"Paulo & Belrose: 0.58 with 2 → 0.35 with 9."
    )


def coverage_lines(name: str, ds: dict[str, Any]) -> list[str]:
    """The data set's coverage curves and stability-by-frequency tables, and figures."""
    archs = ds["architectures"]
    if not _has(archs):
        return []
    first = next(iter(archs.values()))
    cov, sf = first["coverage"], first["stability_by_frequency"]
    t = _threshold(cov)
    where = "held-out tokens" if ds["source"] == "lm" else "training rows (as the quality block)"
    lines = [
        "### Where consistency lives",
        "",
        f"Coverage curve ({cov['variant']}): *max-cos* = {cov['definitions']['max_cos']}; "
        f"*Hungarian* = {cov['definitions']['hungarian']}. Seed subsets: all when at most "
        f"{cov['max_subsets']}, else that many drawn without replacement (seed "
        f"{cov['subset_seed']}). Matched random dictionaries as in the consistency block. At "
        f"|cos| ≥ {t}; other thresholds in `metrics.json` → "
        f"`datasets.{name}.architectures.<sae>.coverage`.",
        "",
    ]
    for label, a in archs.items():
        lines += [f"{label}:", "", *_curve_table(a, t), ""]
    lines += [PB, "", *[_pb_sentence(label, a) for label, a in archs.items()], ""]
    lines += [
        f"![coverage curve](figures/coverage_{name}.png)",
        "",
        f"Stability against firing frequency ({sf['variant']}), binned by log10 firing "
        f"frequency on the {where} ({sf['n_rows']} rows; dead latents apart): bin mean "
        "[CI: percentile bootstrap over the bin's latents — latents of different seeds are not "
        "independent, so it is narrower than a seed bootstrap]. Random: the matched random "
        "dictionaries' pooled stability. Source: `metrics.json` → "
        f"`datasets.{name}.architectures.<sae>.stability_by_frequency`.",
        "",
    ]
    for label, a in archs.items():
        lines += [f"{label}:", "", *_stability_table(a), ""]
    return [*lines, f"![stability vs frequency](figures/stability_frequency_{name}.png)", ""]


def layer_lines(metrics: dict[str, Any]) -> list[str]:
    """Per layer: one row per LM data set (each is one layer / site; a RouteSAE set over
    several layers is one row, its latents not being tied to one layer) and configuration."""
    lm = {n: d for n, d in metrics["datasets"].items() if d["source"] == "lm"}
    if not lm or not all(_has(d["architectures"]) for d in lm.values()):
        return []
    rows = []
    for name, ds in lm.items():
        layer = ds.get("layer")
        where = f"layers {ds['layers']}" if ds.get("layers") else f"layer {layer}"
        for label, a in ds["architectures"].items():
            cov, sf = a["coverage"], a["stability_by_frequency"]
            t = _threshold(cov)
            last = cov["trained"][-1]
            live = [b for b in sf["bins"] if b["bin"] != "dead"]
            top = live[-1] if live else None
            rows.append(
                [
                    f"`{name}`",
                    f"{where}, `{ds.get('hook')}`",
                    label,
                    f"{cov['trained'][0][f'hungarian@{t}']:.3f}",
                    f"{last[f'hungarian@{t}']:.3f} (n={last['n']})",
                    f"{cov['random'][-1][f'hungarian@{t}']:.3f}",
                    "—" if top is None else f"{top['bin']}: {interval(top['hungarian'])}",
                ]
            )
    if len(rows) < 2:
        return []
    header = [
        "data set",
        "layer / hook",
        "SAE",
        f"only-one-seed n=2 (Hungarian ≥ {t})",
        "only-one-seed, all seeds",
        "random, all seeds",
        "most frequent bin: stability",
    ]
    return [
        "## Consistency per layer",
        "",
        "One row per LM data set (each one layer and site; a multi-layer RouteSAE set is one "
        "row, as its latents are not tied to a layer), from each set's `coverage` and "
        "`stability_by_frequency` blocks (lower only-one-seed fraction, higher stability = "
        "more consistent):",
        "",
        *markdown_table(header, rows),
        "",
    ]
