"""report.md from metrics.json + manifest.json: every number names where it came from."""

from __future__ import annotations

from typing import Any


def _ci(b: dict[str, Any]) -> str:
    return f"{b['mean']:.3f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}]"


def _p(x: float | None) -> str:
    return "p n/a" if x is None else (f"p = {x:.2g}" if x >= 1e-4 else "p < 1e-4")


def _tests(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [d["mann_whitney"], d["welch_t"]]


def _finding(label: str, arch: dict[str, Any], n_seeds: int) -> str:
    c = arch["consistency"]["pwmcc"]
    d = c["trained_minus_random"]
    src = f"`metrics.json` → `architectures.{label}.consistency` (`pwmcc`, `shared_fraction@…`)"
    tests = "; ".join(f"{t['name']}: {_p(t['p_value'])}" for t in _tests(d))
    shared = "; ".join(
        f"|cos| > {k.split('@')[1]}: {v['trained']['mean']:.1%}"
        for k, v in arch["consistency"].items()
        if k.startswith("shared_fraction@")
    )
    shared = f"Share of latents with a counterpart in another seed at {shared}"
    verdict = "above" if d["ci_low"] > 0 else ("below" if d["ci_high"] < 0 else "not resolved from")
    return (
        f"- **{label}**: PWMCC (max-|cos|, higher = more consistent) across {n_seeds} seeds "
        f"({len(c['trained']['pairs'])} pairs) is {_ci(c['trained'])} (mean [95% bootstrap CI "
        f"over pairs]) vs {_ci(c['random'])} for matched random dictionaries and "
        f"{_ci(c['init'])} at initialisation: trained − random = {d['delta']:.3f} "
        f"[{d['ci_low']:.3f}, {d['ci_high']:.3f}], {verdict} chance ({tests}). "
        f"{shared}. Source: {src}."
    )


def _table(archs: dict[str, Any]) -> list[str]:
    head = (
        "| SAE | PWMCC trained | PWMCC random | PWMCC init | Δ trained−random | Hungarian MCC "
        "trained | Hungarian random | shared@0.5 | shared@0.7 | shared@0.9 | EV | MSE | L0 | "
        "dead frac | test acc (spliced) | loss recovered (vs zero) |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, a in archs.items():
        c, q = a["consistency"], a["quality"]["mean"]
        shared = [c[k]["trained"]["mean"] for k in c if k.startswith("shared_fraction@")]
        d = c["pwmcc"]["trained_minus_random"]
        rows.append(
            f"| {label} | {_ci(c['pwmcc']['trained'])} | {c['pwmcc']['random']['mean']:.3f} | "
            f"{c['pwmcc']['init']['mean']:.3f} | {d['delta']:+.3f} [{d['ci_low']:+.3f}, "
            f"{d['ci_high']:+.3f}] | {_ci(c['hungarian_mcc']['trained'])} | "
            f"{c['hungarian_mcc']['random']['mean']:.3f} | "
            + " | ".join(f"{v:.3f}" for v in shared)
            + f" | {q['explained_variance']:.3f} | {q['mse']:.4g} | {q['l0']:.1f} | "
            f"{q['dead_fraction']:.3f} | {q['downstream_accuracy']:.4f} | "
            f"{q['downstream_loss_recovered_vs_zero']:.3f} |"
        )
    return rows


def render_markdown(metrics: dict[str, Any], manifest: dict[str, Any] | None) -> str:
    toy, acts, archs = metrics["toy_model"], metrics["activations"], metrics["architectures"]
    f = toy["fourier"]
    seeds = metrics["seeds"]
    lines = [
        "# husai run report",
        "",
        "Question: if the same sparse autoencoder is trained again with another seed, do the "
        "same features (decoder directions) come back — more than chance would give?",
        "",
        "## Findings",
        "",
        *[_finding(label, a, len(seeds)) for label, a in archs.items()],
        "",
        "## Toy model (ground truth)",
        "",
        f"A {toy['config']['model']['n_layers']}-layer transformer on (a "
        f"{ {'add': '+', 'sub': '−', 'mul': '×'}[toy['config']['model']['op']] } b) mod "
        f"{toy['config']['model']['p']} trained {toy['steps']} steps (stopped by: "
        f"{toy['stopped_by']}): train accuracy {toy['train_acc']:.4f}, test accuracy "
        f"{toy['test_acc']:.4f}. Fourier check: {len(f['key_frequencies'])} key frequencies "
        f"{f['key_frequencies']} hold {f['key_mass']:.1%} of the embedding norm "
        f"(criterion: ≤ {toy['config']['train']['max_key_freqs']} frequencies holding ≥ "
        f"{toy['config']['train']['fourier_mass']:.0%}; "
        f"{'passed' if f['passed'] else 'FAILED'}); the key frequencies explain "
        f"{f['logit_r2']:.1%} of the logits' variance over all p² inputs (Nanda's R²). "
        "Source: `toy_model/config.json`, `metrics.json` → `toy_model`.",
        "",
        "![Fourier spectrum](figures/fourier_spectrum.png)",
        "",
        "![Training curve](figures/training_curve.png)",
        "",
        "## SAEs",
        "",
        f"Trained on `{acts['artifact']}`: hook `{acts['hook']}`, position `{acts['position']}`, "
        f"split `{acts['split']}`, {acts['n']} rows × d_in {acts['d']}. Seeds: {seeds}; each "
        "architecture's seeds are trained together as one batched ensemble. Weights: "
        "`saes/<sae>/seed_<n>/` (SAELens layout).",
        "",
        "All consistency numbers are over the seed pairs, decoder rows, mean [95% percentile "
        "bootstrap CI over pairs]; *random* = matched random unit Gaussian dictionaries (same "
        "shape and number of seeds), *init* = the same SAEs before training. The bootstrap "
        "resamples pairs as if independent; pairs share seeds, so these CIs are optimistic. "
        "Quality numbers "
        f"are seed means over {metrics['quality_eval_set']}; downstream numbers on the "
        f"{metrics['downstream_eval_split']}. Source: `metrics.json` → `architectures`.",
        "",
        *_table(archs),
        "",
        "Metric variants (all: higher = more consistent):",
        "",
    ]
    first = next(iter(archs.values()))["consistency"]
    for key in ("pwmcc", "hungarian_mcc", "shared_fraction@0.5"):
        if key in first:
            lines.append(f"- `{key.split('@')[0]}`: {first[key]['variant']}")
    lines += [
        "",
        "Tests of trained > random, per SAE and metric "
        "(one-sided; the bootstrap CI of the difference is the primary evidence):",
        "",
    ]
    for label, a in archs.items():
        for key in ("pwmcc", "hungarian_mcc"):
            d = a["consistency"][key]["trained_minus_random"]
            tests = "; ".join(
                f"{t['name']}: statistic {t['statistic']:.3g}, {_p(t['p_value'])}"
                if t["statistic"] is not None
                else f"{t['name']}: undefined"
                for t in _tests(d)
            )
            lines.append(f"- {label} / {key}: {tests}")
    lines += [
        "",
        "Downstream baselines (toy model on its test split, `metrics.json` → "
        "`architectures.<sae>.downstream_baselines`):",
        "",
    ]
    base = next(iter(archs.values()))["downstream_baselines"]
    for name, r in base.items():
        lines.append(f"- {name}: loss {r['loss']:.4f}, accuracy {r['accuracy']:.4f}")
    lines += ["", "## Figures", ""]
    for label in archs:
        lines.append(f"![{label} pairwise PWMCC](figures/pwmcc_heatmap_{label}.png)")
    lines += [
        "",
        "![trained vs baselines](figures/trained_vs_baselines.png)",
        "",
        "![EV vs PWMCC](figures/ev_vs_pwmcc.png)",
        "",
    ]
    if manifest:
        t = manifest.get("timings_seconds", [])
        lines += [
            "## Provenance",
            "",
            f"Config hash `{manifest.get('config_hash')}`, git revision "
            f"`{manifest['provenance'].get('git_revision')}`, versions "
            + ", ".join(f"{k} {v}" for k, v in manifest["provenance"]["versions"].items())
            + ". Stage wall times (s): "
            + ", ".join(f"{x['stage']} {x['seconds']:.1f}" for x in t if x["stage"] != "report")
            + ". Source: `manifest.json`.",
            "",
        ]
    return "\n".join(lines)
