"""report.md's metric-variant section and its shared-rate curve figure, read from the
`consistency` blocks of metrics.json (husai.metrics.variant_summary; nothing recomputed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from husai.report.figures import GROUP_COLOURS, _save, plt
from husai.report.format import interval, markdown_table

SHARED_AT = 0.7  # the P&B threshold of the table row (the curve shows them all)

# key: (name, direction, what it measures)
ROWS = {
    "pwmcc": (
        "max-\\|cos\\| (husai PWMCC)",
        "higher = more consistent",
        "each latent's best \\|cos\\| in the other seed, symmetrised; many-to-one allowed",
    ),
    "hungarian_mcc": (
        "Hungarian on \\|cos\\|",
        "higher = more consistent",
        "mean \\|cos\\| over the optimal one-to-one matching",
    ),
    "hungarian_signed": (
        "Hungarian on signed cos (Song et al. PW-MCC)",
        "higher = more consistent",
        "mean signed cos over the one-to-one matching on −cos; a negated copy does not count",
    ),
    "hungarian_minus_pwmcc": (
        "Hungarian − max-\\|cos\\| gap",
        "closer to 0 = more one-to-one",
        "per pair hungarian_mcc − pwmcc: what max-\\|cos\\| gains by many-to-one (splitting)",
    ),
}


def _has(arch: dict[str, Any]) -> bool:
    return "shared_latent_curve" in arch["consistency"]


def _has_table(arch: dict[str, Any]) -> bool:
    return "hungarian_signed" in arch["consistency"]  # absent with `variants: off`


def _cells(block: dict[str, Any]) -> list[str]:
    return [
        interval(block["trained"]),
        f"{block['random']['mean']:.3f}",
        f"{block['init']['mean']:.3f}" if "init" in block else "n/a",
        interval(block["trained_minus_random"], "+"),
    ]


def _point(curve: dict[str, Any], kind: str, t: float) -> dict[str, Any] | None:
    return next((p for p in curve[kind] if abs(p["threshold"] - t) < 1e-9), None)


def variant_table(arch: dict[str, Any]) -> list[str]:
    """One SAE configuration's variant table (rows: variants; columns: groups)."""
    c = arch["consistency"]
    rows = [[*ROWS[k], *_cells(c[k])] for k in ROWS if k in c]
    for kind, how in (("signed", "signed cos"), ("absolute", "\\|cos\\|")):
        if "shared_latent_curve" not in c:  # `variants: decoder`
            break
        p = _point(c["shared_latent_curve"], kind, SHARED_AT)
        if p is not None:
            name = f"P&B shared rate, {kind} (≥ {SHARED_AT})"
            what = f"latents whose encoder and decoder {how} matchings agree, both ≥ {SHARED_AT}"
            rows.append([name, "higher = more consistent", what, *_cells(p)])
    header = ["variant", "direction", "measures", "trained [CI]", "random", "at-init"]
    return markdown_table([*header, "trained − random [CI]"], rows)


def variants_section(name: str, archs: dict[str, Any], ci: str) -> list[str]:
    """Per SAE configuration: the variant table; then the shared-rate curve figure."""
    if not archs:
        return []
    if not all(_has_table(a) for a in archs.values()):
        return ["Metric variants not computed (`metrics.variants`: off).", ""]
    lines = [
        f"Metric variants on `{name}` (each row names its variant and direction; trained: mean "
        f"over seed pairs [{ci} seed-bootstrap CI]; random / at-init: the matched baselines' "
        f"means; trained − random [{ci} CI]). Source: `metrics.json` → "
        f"`datasets.{name}.architectures.<sae>.consistency` (`pwmcc`, `hungarian_mcc`, "
        "`hungarian_signed`, `hungarian_minus_pwmcc`, `shared_latent_curve`).",
        "",
    ]
    for label, a in archs.items():
        lines += [f"Variants of **{label}**:", "", *variant_table(a), ""]
    if not all(_has(a) for a in archs.values()):
        return [*lines, "No P&B shared-rate curve: `metrics.variants` is `decoder`.", ""]
    ths = next(iter(archs.values()))["consistency"]["shared_latent_curve"]["thresholds"]
    lines += [
        f"P&B shared-rate curve (Paulo & Belrose shared-latent rate, signed and \\|cos\\|, at "
        f"thresholds {ths[0]} … {ths[-1]}; higher = more consistent): trained vs matched random "
        "vs at-init SAEs. Source: `consistency.shared_latent_curve`.",
        "",
        f"![P&B shared-rate curve](figures/shared_rate_curve_{name}.png)",
        "",
    ]
    return lines


def shared_rate_figure(name: str, archs: dict[str, Any], path: Path) -> Path | None:
    """One panel per SAE configuration: P&B shared rate over thresholds for trained (with its
    CI band), random and init; solid = signed cosine, dashed = |cos|. The y axis runs to
    the largest upper CI (at least 0.05), so a curve near zero is not drawn flat."""
    if not archs or not all(_has(a) for a in archs.values()):
        return None
    n = len(archs)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.6, 3.4), sharey=True, squeeze=False)
    for ax, (label, a) in zip(axes[0], archs.items(), strict=True):
        curve = a["consistency"]["shared_latent_curve"]
        ts = np.array(curve["thresholds"])
        for kind, style in (("signed", "-"), ("absolute", "--")):
            for g in ("trained", "init", "random"):
                if g not in curve[kind][0]:
                    continue
                mean = np.array([p[g]["mean"] for p in curve[kind]])
                ax.plot(ts, mean, style, color=GROUP_COLOURS[g], marker=".", label=f"{g}, {kind}")
                if g == "trained":
                    lo = [p[g]["ci_low"] for p in curve[kind]]
                    hi = [p[g]["ci_high"] for p in curve[kind]]
                    ax.fill_between(ts, lo, hi, color=GROUP_COLOURS[g], alpha=0.15, lw=0)
        ax.set_title(f"{name}/{label}", fontsize=9)
        ax.set_xlabel("threshold (both cosines ≥)")
        peak = max(p[g]["ci_high"] for k in ("signed", "absolute") for p in curve[k] for g in p
                   if isinstance(p[g], dict) and g in GROUP_COLOURS)  # fmt: skip
        ax.set_ylim(-0.002, max(0.05, 1.1 * peak))  # near-zero curves stay readable
    axes[0][0].set_ylabel("P&B shared-latent rate\n(higher = more consistent)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        "Paulo & Belrose shared rate vs threshold (solid: signed cos, dashed: |cos|; "
        "band: trained seed-bootstrap CI)",
        fontsize=9,
    )
    return _save(fig, path)
