"""Figures from metrics.json (never recomputes a metric). Each function writes one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from husai import results as R  # noqa: E402
from husai.io import write_bytes  # noqa: E402

GROUP_COLOURS = {"trained": "#1f77b4", "random": "#7f7f7f", "init": "#ff7f0e"}


def _save(fig: plt.Figure, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return write_bytes(path, buf.getvalue())


def annotated_matrix(ax: plt.Axes, m: np.ndarray, labels: list[str], fmt: str) -> Any:
    """A [0, 1] matrix as an image with its values written in the cells."""
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(len(labels)):
        for j in range(len(labels)):
            colour = "black" if m[i, j] > 0.6 else "white"
            ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=7, color=colour)
    return im


def heatmap(label: str, arch: dict[str, Any], seeds: list[int], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.6, 3.9))
    m = np.array(R.matrix(arch))
    im = annotated_matrix(ax, m, [str(s) for s in seeds], ".3f")
    ax.set_xlabel("seed")
    ax.set_ylabel("seed")
    ax.set_title(
        f"{label}: pairwise PWMCC\n(max-|cos|, symmetrised; higher = more consistent)", fontsize=9
    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def trained_vs_baselines(archs: dict[str, Any], path: Path, ci: str = "95%") -> Path:
    """Trained vs init vs random, PWMCC and Hungarian MCC, one bar group per SAE config.
    With a protocol block (issue 13) a third panel: Hungarian MCC over alive latents (dead
    ones unmatched). Many configs (a sweep, an ablation): the panels stack, the labels turn
    and only the trained bars are labelled, so nothing overlaps."""
    metrics = [("pwmcc", "PWMCC (max-|cos|)"), ("hungarian_mcc", "Hungarian MCC (1-to-1)")]
    if all("protocol" in a for a in archs.values()):
        metrics.append((R.ALIVE, "Hungarian MCC over alive latents (dead = unmatched)"))
    labels = list(archs)
    many, n = len(labels) > 4, len(metrics)
    if many:
        size = (max(9, 0.6 * len(labels)), 4 * n)
        fig, axes = plt.subplots(n, 1, figsize=size, sharex=True)
    else:
        fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.8), sharey=True)
    width = 0.26
    for ax, (key, title) in zip(axes, metrics, strict=True):
        for g, group in enumerate(("trained", "init", "random")):
            vals = [R.group(archs[a], key, group) for a in labels]
            means = np.array([v["mean"] for v in vals])
            err = np.array(
                [[v["mean"] - v["ci_low"] for v in vals], [v["ci_high"] - v["mean"] for v in vals]]
            )
            xs = np.arange(len(labels)) + (g - 1) * width
            ax.bar(xs, means, width, yerr=err, capsize=3, label=group, color=GROUP_COLOURS[group])
            if many and group != "trained":
                continue
            for x, mval in zip(xs, means, strict=True):
                ax.text(x, mval + 0.02, f"{mval:.2f}", ha="center", fontsize=7)
        ax.set_xticks(
            range(len(labels)), labels, rotation=40 if many else 0, ha="right" if many else "center"
        )
        ax.set_ylim(0, 1.08)
        ax.set_title(f"{title}\nhigher = more consistent; bars: {ci} bootstrap CI", fontsize=9)
        ax.set_ylabel("mean over seed pairs")
    axes[-1].legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def ev_vs_pwmcc(archs: dict[str, Any], seeds: list[int], front: list[str], path: Path) -> Path:
    """Per seed (small dots) and per configuration (mean, with the PWMCC CI): EV vs PWMCC,
    with the Pareto front of the configuration means (`front`: its labels, by EV)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    means = []
    for i, (label, arch) in enumerate(archs.items()):
        colour = f"C{i % 10}"
        per_seed = R.metric(arch, "pwmcc")["seed_means"]
        ev = [q["explained_variance"] for q in arch["quality"]["per_seed"].values()]
        ax.scatter(ev, per_seed, s=12, alpha=0.45, color=colour)
        t = R.trained(arch)
        x = R.quality(arch)["explained_variance"]
        err = [[t["mean"] - t["ci_low"]], [t["ci_high"] - t["mean"]]]
        ax.errorbar(x, t["mean"], yerr=err, fmt="o", ms=7, color=colour, label=label, capsize=3)
        means.append((x, t["mean"]))
    at = {label: xy for label, xy in zip(archs, means, strict=True)}
    if len(front) > 1:
        ax.plot(*zip(*[at[s] for s in front], strict=True), "k--", lw=1, label="Pareto front")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    ax.set_xlabel("explained variance (higher = better reconstruction)")
    ax.set_ylabel("PWMCC (max-|cos|; higher = more consistent)")
    ax.set_title("large: configuration mean ± CI; small: one seed vs the others", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def trajectory(archs: dict[str, Any], path: Path) -> Path:
    """Cross-seed PWMCC during training (mean, and the range over pairs), per configuration,
    with each configuration's matched random baseline."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for i, (label, arch) in enumerate(archs.items()):
        if "trajectory" not in arch:
            continue
        t = arch["trajectory"]
        ep = [p["epoch"] for p in t]
        ax.plot(ep, [p["pwmcc"] for p in t], "o-", ms=3, color=f"C{i % 10}", label=label)
        lo, hi = [p["min"] for p in t], [p["max"] for p in t]
        ax.fill_between(ep, lo, hi, color=f"C{i % 10}", alpha=0.15)
        rnd = R.group(arch, "pwmcc", "random")["mean"]
        ax.axhline(rnd, color=f"C{i % 10}", ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-seed PWMCC\n(max-|cos|; higher = more consistent)")
    ax.set_title("mean over seed pairs (band: min–max); dotted: random baseline", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def fourier_spectrum(fourier: dict[str, Any], path: Path) -> Path:
    fracs = np.array(fourier["frequency_fractions"])
    key = set(fourier["key_frequencies"])
    freqs = np.arange(1, len(fracs) + 1)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(freqs, fracs, color=["#d62728" if f in key else "#1f77b4" for f in freqs], width=0.9)
    for f in sorted(key):
        ax.text(f, fracs[f - 1] + 0.005, str(f), ha="center", fontsize=7, color="#d62728")
    ax.set_xlabel("frequency k (red: key frequencies)")
    ax.set_ylabel("share of embedding norm")
    ax.set_title(
        f"Toy model embedding: {len(key)} key frequencies hold "
        f"{fourier['key_mass']:.1%} of the norm; logit R² = {fourier['logit_r2']:.3f}",
        fontsize=9,
    )
    return _save(fig, path)


def training_curve(history: list[dict[str, Any]], path: Path) -> Path:
    steps = [h["step"] for h in history]
    fig, ax1 = plt.subplots(figsize=(7, 3.4))
    ax1.semilogy(steps, [h["train_loss"] for h in history], label="train loss")
    ax1.semilogy(steps, [h["test_loss"] for h in history], label="test loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy")
    ax2 = ax1.twinx()
    ax2.plot(steps, [h["test_acc"] for h in history], "g--", label="test accuracy")
    ax2.plot(
        steps,
        [h["n_key_freqs"] / max(h["n_key_freqs"] for h in history) for h in history],
        "r:",
        label="key freqs (scaled)",
    )
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("test accuracy")
    lines = ax1.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    ax1.set_title("Toy model training (grokking, then Fourier clean-up)", fontsize=9)
    return _save(fig, path)


def d_sae_trend(name: str, ds: dict[str, Any], path: Path, ci: str = "95%") -> Path:
    """PWMCC (trained vs random) and, with ground truth, recovery against dictionary size."""
    archs = ds["architectures"]
    n_true = ds.get("n_true_features")
    xs = np.array([a["config"]["d_sae"] for a in archs.values()], dtype=float)
    xs = xs / n_true if n_true else xs
    order = np.argsort(xs)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for group in ("trained", "random"):
        b = [R.group(a, "pwmcc", group) for a in archs.values()]
        m = np.array([v["mean"] for v in b])[order]
        lo = np.array([v["ci_low"] for v in b])[order]
        hi = np.array([v["ci_high"] for v in b])[order]
        ax.errorbar(
            xs[order],
            m,
            yerr=[m - lo, hi - m],
            marker="o",
            capsize=3,
            label=f"PWMCC {group}",
            color=GROUP_COLOURS[group],
        )
    first = R.quality(next(iter(archs.values())))
    if "recovery_hungarian_mcc" in first:
        rec = np.array([R.quality(a)["recovery_hungarian_mcc"] for a in archs.values()])
        ax.plot(xs[order], rec[order], "s--", color="#2ca02c", label="recovery MCC (truth)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("d_sae / n_true_features" if n_true else "d_sae")
    ax.set_ylabel("higher = more consistent / better recovered")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{name}: consistency vs dictionary size ({ci} CIs over pairs)", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def compare_heatmaps(summary: dict[str, Any], labels: list[str], path: Path) -> Path:
    """`husai compare`: pairwise matrices of PWMCC, Hungarian MCC and shared-latent rate."""
    keys = [
        ("pwmcc", "PWMCC (max-|cos|)"),
        ("hungarian_mcc", "Hungarian MCC (1-to-1 |cos|)"),
        ("shared_latent_rate", "shared-latent rate (P&B)"),
    ]
    keys = [(k, t) for k, t in keys if k in summary]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.9), squeeze=False)
    rows = summary.get("rows_compared", "decoder")
    for ax, (key, title) in zip(axes[0], keys, strict=True):
        im = annotated_matrix(ax, np.array(summary[key]["matrix"]), labels, ".2f")
        rnd = summary[key]["random"]["mean"]
        ax.set_title(
            f"{title}\n{rows} rows; random {rnd:.3f}; higher = more consistent", fontsize=8
        )
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def latent_best_histogram(mean_best: dict[str, np.ndarray], path: Path, note: str = "") -> Path:
    """Histogram of each latent's mean best-match |cos| to the other SAEs, trained vs random."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    bins = np.linspace(0, 1, 51)
    for group, vals in mean_best.items():
        ax.hist(
            vals,
            bins=bins,
            alpha=0.6,
            label=f"{group} (n={len(vals)})",
            color=GROUP_COLOURS.get(group),
        )
    ax.set_xlabel("per-latent mean best-match |cos| to the other SAEs (higher = more consistent)")
    ax.set_ylabel("latents")
    ax.set_title(
        "Per-latent consistency vs matched random dictionaries" + (f"\n{note}" if note else ""),
        fontsize=9,
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def firing_histograms(archs: dict[str, Any], path: Path) -> Path:
    """Per configuration, every seed's log10 firing-frequency histogram of the live latents
    on the held-out tokens (`lm_eval.firing_histograms`), dead latents in the legend."""
    fig, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs), 3.4), squeeze=False)
    for ax, (label, arch) in zip(axes[0], archs.items(), strict=True):
        hists = arch["lm_eval"]["firing_histograms"]
        for i, (seed, h) in enumerate(zip(arch["quality"]["per_seed"], hists, strict=True)):
            edges = np.asarray(h["log10_edges"])
            ax.stairs(
                h["counts"], edges, color=f"C{i % 10}", label=f"seed {seed} ({h['dead']} dead)"
            )
        ax.axvline(-1, color="k", ls=":", lw=1)  # dense: firing on > 10% of tokens
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("log10 firing frequency (held-out tokens)")
        ax.set_ylabel("live latents")
        ax.legend(fontsize=6)
    fig.suptitle("firing-frequency histograms; dotted: dense threshold (10% of tokens)", fontsize=9)
    return _save(fig, path)
