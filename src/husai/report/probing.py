"""report.md's sparse-probing part of a data set: formats metrics.json's `probing` block
(husai.experiments.probing), never recomputes it."""

from __future__ import annotations

from typing import Any

from husai.report.format import interval, markdown_table

HUSAI_LINE = (
    "HUSAI's SAEBench result for comparison: AUC 21 wins / 88 losses / 4 ties against "
    "baseline probes (sae-probes' 113 tasks)"
)


def _tally(t: dict[str, Any], ks: list[int]) -> str:
    return "; ".join(
        f"k={k}: {t[str(k)]['wins']} wins / {t[str(k)]['losses']} losses / {t[str(k)]['ties']} ties"
        for k in ks
    )


def _cell(task: dict[str, Any], k: int) -> str:
    r = task["trained"][str(k)]
    return (
        f"{interval(r['auc'], digits=2)} · raw {task['raw_top_k'][str(k)]['auc']:.2f} · "
        f"init {task['init'][str(k)]['auc']['mean']:.2f}"
    )


def _arch_lines(name: str, label: str, p: dict[str, Any]) -> list[str]:
    ks = p["settings"]["ks"]
    probed = {n: t for n, t in p["tasks"].items() if "skipped" not in t}
    skipped = {n: t for n, t in p["tasks"].items() if "skipped" in t}
    lines = [f"**{label}** ({p['rows']}; {p['n_probed']} of {p['n_tasks']} tasks probed):", ""]
    if probed:
        rows = [
            [
                f"`{n}`",
                f"{t['n_positive']} / {t['n_train']} / {t['n_test']}",
                f"{t['raw_full']['auc']:.2f}",
                *[_cell(t, k) for k in ks],
            ]
            for n, t in probed.items()
        ]
        header = ["task", "positives / train / test", "raw, all dims", *[f"k = {k}" for k in ks]]
        lines += [*markdown_table(header, rows), ""]
    for group, what in (("trained", "Trained SAEs"), ("init", "At-init SAEs")):
        t = p["tally"][group]
        lines.append(
            f"- {what} vs raw top-k at the same k: {_tally(t['vs_raw_top_k'], ks)}. "
            f"Vs the raw probe on all dimensions: {_tally(t['vs_raw_full'], ks)}."
        )
    if skipped:
        lines.append(
            "- Skipped: "
            + "; ".join(
                f"`{n}` ({t['n_positive']} positives, {t['n_negative']} negatives)"
                for n, t in skipped.items()
            )
            + f" — {next(iter(skipped.values()))['skipped']}."
        )
    return [
        *lines,
        f"- Source: `metrics.json` → `datasets.{name}.architectures.{label}.probing`.",
        "",
    ]


def probing_lines(name: str, ds: dict[str, Any]) -> list[str]:
    """The section for one data set ([] when no configuration has a `probing` block)."""
    archs = {k: a["probing"] for k, a in ds["architectures"].items() if "probing" in a}
    if not archs:
        return []
    s = next(iter(archs.values()))["settings"]
    lines = [
        f"### Sparse probing (SAEBench's protocol) on `{name}`",
        "",
        "Each binary task takes its positives (at most "
        f"{s['max_per_class']}) and as many random negatives, split "
        f"{1 - s['test_fraction']:.0%} / {s['test_fraction']:.0%} per class (seed {s['seed']}); "
        "the k latents (or raw dimensions) with the largest |mean(positives) − "
        "mean(negatives)| on the train split are kept and an L2 logistic regression "
        f"(C = {s['c']:g}) is fitted on them. Numbers are test AUC (higher = better): per k, the "
        "trained SAEs' seed mean [CI over seeds], the same k-sparse probe on raw activation "
        "dimensions (raw), and the SAEs at initialisation (init: the dictionaries training "
        "started from — what the protocol gives an untrained SAE). A trained SAE *wins* "
        f"(*loses*) against a baseline when its CI lies above (below) the baseline by more than "
        f"{s['tie']:g} AUC, else *ties*. {HUSAI_LINE}.",
        "",
    ]
    for label, p in archs.items():
        lines += _arch_lines(name, label, p)
    return lines
