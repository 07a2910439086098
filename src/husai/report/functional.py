"""report.md's functional-correspondence part of a data set and its figure; formats
metrics.json's `functional` blocks (husai.experiments.functional), never recomputes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from husai.report.format import interval, markdown_table

SCORES = (  # (row label, path into the block)
    ("ablation fingerprint r", ("ablation",)),
    ("steering r", ("steering", "correlation")),
    ("steering top-k agreement", ("steering", "top_agreement")),
    ("substitution Δ recon MSE", ("substitution", "recon_mse")),
    ("substitution Δ model loss", ("substitution", "model_loss")),
)


def _has(archs: dict[str, Any]) -> bool:
    return any("functional" in a for a in archs.values())


def _get(block: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        block = block[key]
    return block


def _cell(b: dict[str, Any] | None, sign: str = "", digits: int = 3) -> str:
    return "undefined" if b is None else interval(b, sign, digits)


def _verdict(d: dict[str, Any] | None) -> str:
    if d is None:
        return "n/a"
    if d["ci_low"] > 0:
        return "matched more alike"
    return "matched less alike" if d["ci_high"] < 0 else "not resolved"


def _rows(label: str, f: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, path in SCORES:
        s = _get(f, path)
        digits = 5 if path[0] == "substitution" else 3
        if path[-1] == "top_agreement":
            name = name.replace("top-k", f"top-{s['k']}")
        n = s["matched"]["n"] if s["matched"] else 0
        undefined = s["n_undefined"]
        rows.append(
            [
                label,
                name,
                _cell(s["matched"], digits=digits),
                _cell(s["random"], digits=digits),
                f"{s['difference_is']}: {_cell(s['difference'], '+', digits)}",
                _verdict(s["difference"]),
                f"{n} ({undefined['matched']} / {undefined['random']} undefined)",
            ]
        )
    return rows


def functional_lines(name: str, ds: dict[str, Any], ci: str) -> list[str]:
    """The data set's functional-correspondence table and figure (SAEs with the block)."""
    archs = {k: a["functional"] for k, a in ds["architectures"].items() if "functional" in a}
    if not archs:
        return []
    f = next(iter(archs.values()))
    p = f["probe"]
    size = (
        f"{p['n_inputs']} inputs"
        if "n_inputs" in p
        else f"{p['n_contexts']} context(s), {p['n_tokens']} tokens"
    )
    header = [
        "SAE",
        "score",
        "matched",
        "random",
        f"difference [{ci} CI]",
        "direction",
        "n pairs (undefined m / r)",
    ]
    rows = [r for label, block in archs.items() for r in _rows(label, block)]
    sampled = "; ".join(
        f"{label}: {b['n_sampled']} of {b['n_requested']} requested, latents firing on the probe "
        f"per seed {b['firing_on_probe']} of {b['d_sae']}"
        for label, b in archs.items()
    )
    return [
        "### Functional correspondence",
        "",
        f"Do matched latents do the same thing in the model? Pairs: {f['variant']}. Seed pairs "
        f"{f['seed_pairs']}. Probe set: {p['kind']}, {size}. Ablation fingerprint: "
        f"{p['fingerprint']} when the latent is zeroed in the spliced SAE. Steering: α = "
        f"{f['steer']['scale']:g} × the mean activation norm ({f['steer']['alpha']:.3g}) along "
        f"the latent's decoder direction, added to the clean activation; top-k: "
        f"{p['steering_top_k']}. Substitution: A's latent replaced by B's (encoder and "
        "decoder rows), Δ vs A unchanged on the probe set (lower = a better substitute). "
        f"Sampling: {f['sampling']}. Sampled: {sampled}. Each cell: mean over pairs "
        f"[{ci} CI, percentile bootstrap over pairs]; difference with one-sided tests in "
        f"`metrics.json` → `datasets.{name}.architectures.<sae>.functional`.",
        "",
        *markdown_table(header, rows),
        "",
        *_by_cos_lines(archs),
        *_by_sign_lines(archs),
        f"![functional correspondence](figures/functional_{name}.png)",
        "",
    ]


def _by_cos_lines(archs: dict[str, Any]) -> list[str]:
    bins = [b["bin"] for b in next(iter(archs.values()))["ablation"]["by_cos"]]
    rows = [
        [label]
        + [
            "–" if b["score"] is None else f"{b['score']['mean']:.3f} (n={b['count']})"
            for b in block["ablation"]["by_cos"]
        ]
        for label, block in archs.items()
    ]
    return [
        "Matched pairs' ablation fingerprint r (mean, number of pairs) by their decoder |cos|:",
        "",
        *markdown_table(["SAE", *[f"matched cos in {b}" for b in bins]], rows),
        "",
    ]


def _by_sign_lines(archs: dict[str, Any]) -> list[str]:
    """Matched pairs' r split by the sign of their decoder cosine (older runs: none)."""
    if not all("by_sign" in b["ablation"] for b in archs.values()):
        return []

    def cell(b: dict[str, Any]) -> str:
        if b["score"] is None:
            return f"– (n={b['count']})"
        s = b["score"]
        return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] (n={b['count']})"

    rows = [
        [label, what, *[cell(b) for b in part["by_sign"]]]
        for label, block in archs.items()
        for what, part in (
            ("ablation r", block["ablation"]),
            ("steering r", block["steering"]["correlation"]),
        )
    ]
    head = ["SAE", "score", "signed cos < 0 (anti-aligned)", "signed cos ≥ 0 (aligned)"]
    return [
        "Matched pairs by the sign of their decoder cosine (a |cos| matching also pairs latents "
        "that write opposite directions; higher = more alike; mean [CI], pairs with a defined r):",
        "",
        *markdown_table(head, rows),
        "",
    ]


def functional_figure(name: str, archs: dict[str, Any], path: Path) -> None:
    """Per SAE: matched pairs' ablation and steering r against their |cos|, with the random
    pairs' mean and CI as bands."""
    archs = {k: a["functional"] for k, a in archs.items() if "functional" in a}
    if not archs:
        return
    from husai.report.figures import _save, plt

    fig, axes = plt.subplots(1, len(archs), figsize=(4.4 * len(archs), 3.5), squeeze=False)
    for ax, (label, f) in zip(axes[0], archs.items(), strict=True):
        cos = [s["cos"] for s in f["samples"]]
        for what, colour, rand in (
            ("ablation", "#1f77b4", f["ablation"]["random"]),
            ("steering", "#ff7f0e", f["steering"]["correlation"]["random"]),
        ):
            r = [s[f"{what}_r"][0] for s in f["samples"]]
            pts = [(c, v) for c, v in zip(cos, r, strict=True) if v is not None]
            ax.scatter(
                [c for c, _ in pts],
                [v for _, v in pts],
                s=10,
                color=colour,
                label=f"{what}, matched",
            )
            if rand is not None:
                ax.axhspan(rand["ci_low"], rand["ci_high"], color=colour, alpha=0.15)
                ax.axhline(rand["mean"], color=colour, ls=":", lw=1, label=f"{what}, random")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-1.02, 1.02)
        ax.set_xlabel("matched decoder |cos|")
        if ax is axes[0][0]:
            ax.set_ylabel("Pearson r of partners' effects")
        ax.set_title(f"{label} ({f['n_sampled']} pairs)", fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(
        "functional correspondence: matched pairs (dots) vs random pairs (band: mean, CI); "
        "higher = more alike",
        fontsize=8,
    )
    _save(fig, path)
