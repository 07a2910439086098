"""report.md's consensus part of a data set: metrics.json's `consensus` blocks
(husai.experiments.consensus_block) as tables, nothing recomputed."""

from __future__ import annotations

from typing import Any

from husai.report.format import markdown_table

GROUPS = ("trained", "random", "init")


def _counts_table(c: dict[str, Any]) -> list[str]:
    """Groups found in ≥ m seeds, m = 2 … N (columns), trained vs random vs at-init."""
    ms = list(c["trained"]["found_in_at_least"])
    rows = []
    for g in GROUPS:
        st = c[g]["stability"]
        rows.append(
            [
                g,
                *(str(c[g]["found_in_at_least"][m]) for m in ms),
                f"{st['fraction_grouped']:.3f}",
                f"{st['mean']:.4f}",
                f"{st['quantiles']['0.9']:.4f}",
                f"{st['quantiles']['1.0']:.4f}",
            ]
        )
    header = ["dictionaries", *(f"≥ {m} seeds" for m in ms), "latents grouped"]
    return markdown_table([*header, "stability mean", "p90", "max"], rows)


def _quality_rows(d: dict[str, Any]) -> list[list[str]]:
    q = d["quality"]
    cells = [
        ("single seeds (mean)", q["single_seeds_mean"]),
        ("consensus, averaged", q["averaged"]),
    ]
    if "refit" in q:
        cells.append((f"consensus, refit ({q['refit_epochs']} epochs)", q["refit"]))
    return [
        [label, f"{v['explained_variance']:.4f}", f"{v['l0']:.2f}", f"{v['dead_fraction']:.3f}"]
        for label, v in cells
    ]


def _dictionary_lines(label: str, c: dict[str, Any]) -> list[str]:
    d = c["dictionary"]
    head = (
        f"Consensus dictionary of **{label}** (groups found in ≥ {c['min_seeds']} of "
        f"{c['n_seeds']} seeds): {d['width']} latents (single seeds: {d['single_width']})"
    )
    if "quality" not in d:
        return [f"{head}; {d['reason']}, so no dictionary to score.", ""]
    q = d["quality"]
    refit = (
        f"refit: encoder retrained {q['refit_epochs']} epochs on {q['refit_rows']} rows with "
        "the decoder frozen"
        if "refit" in q
        else "no refit (`metrics.consensus_refit_epochs` 0)"
    )
    lines = [
        f"{head}{', k ' + str(d['k']) if 'k' in d else ''}. EV (higher = better), L0, dead "
        f"fraction (lower = better) on {q['n_rows']} rows; averaged: the members' sign-aligned "
        f"encoder rows averaged; {refit}.",
        "",
        *markdown_table(["SAE", "EV", "L0", "dead"], _quality_rows(d)),
        "",
    ]
    if "recovery" in d:
        r = d["recovery"]
        lines += [
            f"Truth recovery (Hungarian MCC, higher = better): consensus "
            f"{r['consensus']['hungarian_mcc']:.4f} vs best single seed "
            f"{r['best_single_seed']['hungarian_mcc']:.4f}.",
            "",
        ]
    return lines


def consensus_lines(name: str, ds: dict[str, Any]) -> list[str]:
    """The consensus section of data set `name` (empty when no configuration has one)."""
    archs = {k: a["consensus"] for k, a in ds["architectures"].items() if "consensus" in a}
    if not archs:
        return []
    first = next(iter(archs.values()))
    lines = [
        "### Consensus across seeds",
        "",
        f"Latents grouped across seeds ({first['variant']}; |cos| ≥ {first['threshold']}). "
        "Columns: groups found in ≥ m of the seeds (the counts-vs-m curve), the fraction of "
        "all latents in a group of ≥ 2 seeds, and the distribution over all latents of their "
        f"group's score ({first['stability_variant']}; a latent in no group scores 0). Random: "
        "the matched random dictionaries; init: the same SAEs before training. Source: "
        f"`metrics.json` → `datasets.{name}.architectures.<sae>.consensus`.",
        "",
    ]
    for label, c in archs.items():
        lines += [f"{label}: groups found in ≥ m seeds:", "", *_counts_table(c), ""]
        lines += _dictionary_lines(label, c)
    return lines
