"""report.md from metrics.json + manifest.json: every number names where it came from."""

from __future__ import annotations

from typing import Any

from husai import results as R
from husai.report.consensus import consensus_lines
from husai.report.coverage import coverage_lines, layer_lines
from husai.report.format import interval, level, markdown_table, p_value
from husai.report.functional import functional_lines
from husai.report.gate_data import gate_data_lines
from husai.report.lm import lm_section
from husai.report.probing import probing_lines
from husai.report.protocol import protocol_lines
from husai.report.sweep import sweep_section
from husai.report.tables import results_columns, rows
from husai.report.variants import variants_section

OPS = {"add": "+", "sub": "−", "mul": "×"}


def _tests(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [d["mann_whitney"], d["welch_t"]]


def _finding(ds: str, label: str, arch: dict[str, Any], n_seeds: int, ci: str) -> str:
    c = R.metric(arch, "pwmcc")
    d = R.minus(arch)
    src = f"`metrics.json` → `datasets.{ds}.architectures.{label}.consistency`"
    tests = "; ".join(f"{t['name']}: {p_value(t['p_value'])}" for t in _tests(d))
    shared = "; ".join(
        f"|cos| > {k.split('@')[1]}: {v['trained']['mean']:.1%}"
        for k, v in arch["consistency"].items()
        if k.startswith("shared_fraction@")
    )
    verdict = "above" if d["ci_low"] > 0 else ("below" if d["ci_high"] < 0 else "not resolved from")
    text = (
        f"- **{label}** on `{ds}`: PWMCC (max-|cos|, higher = more consistent) across {n_seeds} "
        f"seeds ({len(c['trained']['pairs'])} pairs) is {interval(c['trained'])} (mean over pairs "
        f"[{ci} CI, {c['trained']['method']}]) vs {interval(c['random'])} for matched random "
        "dictionaries and "
        f"{interval(c['init'])} at initialisation: trained − random = {interval(d)}, "
        f"{verdict} chance ({tests}). Share of latents "
        f"with a counterpart in another seed at {shared}."
    )
    q = R.quality(arch)
    if "recovery_hungarian_mcc" in q:
        text += (
            f" Ground-truth recovery (seed mean): Hungarian MCC {q['recovery_hungarian_mcc']:.3f},"
            f" fraction of true features recovered at |cos| > 0.9: "
            f"{q['recovery_fraction_recovered']:.1%} (higher = better)."
        )
    if arch.get("structure"):
        text += " Recovery of the toy model's known structure (Hungarian MCC, seed mean; random "
        text += "dictionaries in brackets; higher = better): " + "; ".join(
            f"{k} {v['hungarian_mcc']:.3f} [{v['random']['hungarian_mcc']:.3f}], "
            f"{v['fraction_recovered']:.0%} of {v['n_true']} directions at |cos| > 0.9"
            for k, v in arch["structure"].items()
        )
        text += "."
    return text + f" Source: {src}."


def _table(archs: dict[str, Any]) -> list[str]:
    return markdown_table(*rows(archs, results_columns(next(iter(archs.values())))))


def _toy_section(toy: dict[str, Any]) -> list[str]:
    f, mc = toy["fourier"], toy["config"]["model"]
    tc = toy["config"]["train"]
    return [
        "## Toy model (ground truth)",
        "",
        f"A {mc['n_layers']}-layer transformer on (a {OPS[mc['op']]} b) mod {mc['p']} trained "
        f"{toy['steps']} steps (stopped by: {toy['stopped_by']}): train accuracy "
        f"{toy['train_acc']:.4f}, test accuracy {toy['test_acc']:.4f}. Fourier check: "
        f"{len(f['key_frequencies'])} key frequencies {f['key_frequencies']} hold "
        f"{f['key_mass']:.1%} of the embedding norm (criterion: ≤ {tc['max_key_freqs']} "
        f"frequencies holding ≥ {tc['fourier_mass']:.0%}; {'passed' if f['passed'] else 'FAILED'}"
        f"); the key frequencies explain {f['logit_r2']:.1%} of the logits' variance over all "
        "p² inputs (Nanda's R²). Source: `toy_model/config.json`, `metrics.json` → `toy_model`.",
        "",
        *_structure_lines(toy.get("structure")),
        "![Fourier spectrum](figures/fourier_spectrum.png)",
        "",
        "![Training curve](figures/training_curve.png)",
        "",
    ]


def _structure_lines(st: dict[str, Any] | None) -> list[str]:
    """Variance explained by each known structure, per hook (husai.toy.structure)."""
    if not st:
        return []
    lines = [
        "Known structure (candidate true features) at the answer position, per hook: share of "
        "the activations' variance explained by the answer's class means, by the answer's "
        f"key-frequency Fourier directions (key frequencies {st['key_frequencies']}), and by "
        "the inputs' (a, b) key-frequency directions. Source: `metrics.json` → "
        "`toy_model.structure`.",
        "",
        "| hook | class means | answer Fourier (key) | inputs Fourier (key) |",
        "|---|---|---|---|",
    ]
    for hook, h in st["hooks"].items():
        if h["constant"]:
            lines.append(f"| {hook} | constant | | |")
            continue
        lines.append(
            f"| {hook} | {h['class_means']['variance_explained']:.3f} | "
            f"{h['answer_fourier']['variance_explained_key']:.3f} | "
            f"{h['input_fourier']['variance_explained_key']:.3f} |"
        )
    return [*lines, ""]


def _data_line(name: str, ds: dict[str, Any], seeds: list[int]) -> str:
    """What the data set is: where it comes from, its shape and effective rank."""
    er = ds["effective_rank"]
    where = (
        f"hook `{ds['hook']}`, position `{ds['position']}`, split `{ds['split']}`, "
        if ds["source"] == "toy"
        else ""
    )
    truth = (
        f" Ground truth: {ds['n_true_features']} known feature directions."
        if "n_true_features" in ds
        else ""
    )
    dims, rank_of, target_rank = f"d_in {ds['d']}", "", ""
    if "target_hook" in ds:  # a transcoder data set
        where += (
            f"transcoder: input hook `{ds['hook']}` → target hook `{ds['target_hook']}`; "
            "EV and MSE against the target; PWMCC init is of the decoders training starts "
            "from (data-dependent: rows along W_enc·Σ_xy); "
        )
        dims += f" → d_out {ds['d_out']}"
        rank_of = " of the input"
        pr = ds["target_effective_rank"]["participation_ratio"]
        target_rank = f"; of the target: participation ratio {pr:.1f}"
    components = ", ".join(
        f"{k.split('_')[-1]} of variance in {int(v)} components"
        for k, v in er.items()
        if k.startswith("n_components")
    )
    return (
        f"`{ds['artifact']}`: {where}{ds['n']} rows × {dims}. Effective rank{rank_of}: "
        f"participation ratio {er['participation_ratio']:.1f}; {components}{target_rank}.{truth} "
        f"Seeds {seeds}, each configuration's seeds trained together as one batched ensemble; "
        f"weights in `saes/{name}/<sae>/seed_<n>/` (SAELens layout). "
        f"Source: `metrics.json` → `datasets.{name}`."
    )


def _downstream_lines(name: str, ds: dict[str, Any]) -> list[str]:
    first = next(iter(ds["architectures"].values()))
    if "downstream_baselines" not in first:
        return []
    at = (
        f"; ablations at the target hook `{ds['target_hook']}`, which each transcoder's "
        "prediction replaces"
        if "target_hook" in ds
        else ""
    )
    return [
        f"Downstream baselines (toy model on its test split{at}, `metrics.json` → "
        f"`datasets.{name}.architectures.<sae>.downstream_baselines`): "
        + "; ".join(
            f"{k}: loss {r['loss']:.4f}, accuracy {r['accuracy']:.4f}"
            for k, r in first["downstream_baselines"].items()
        ),
        "",
    ]


def _test_lines(name: str, archs: dict[str, Any], holm: dict[str, float]) -> list[str]:
    """The one-sided tests of trained > random, with the run's Holm-adjusted p-values."""
    lines = [
        "Tests of trained > random (one-sided; the seed-bootstrap CI of the difference is the "
        "primary evidence; pair scores share seeds, so these p-values treat pairs as "
        "exchangeable). Holm-adjusted p: the permutation tests over every configuration × "
        "metric of this report:",
        "",
    ]
    for label, a in archs.items():
        for key in ("pwmcc", "hungarian_mcc"):
            d = R.minus(a, key)
            tests = [
                f"{t['name']}: statistic {t['statistic']:.3g}, {p_value(t['p_value'])}"
                if t["statistic"] is not None
                else f"{t['name']}: undefined"
                for t in _tests(d)
            ]
            if "permutation" in d:
                adj = holm.get(f"{name}/{label}/{key}")
                tests.append(
                    f"permutation: {p_value(d['permutation']['p_value'])}"
                    + (f", Holm-adjusted {p_value(adj)}" if adj is not None else "")
                )
            lines.append(f"- {label} / {key}: " + "; ".join(tests))
    return [*lines, ""]


def _trajectory_lines(name: str, archs: dict[str, Any]) -> list[str]:
    traj = {k: a["trajectory"] for k, a in archs.items() if "trajectory" in a}
    if not traj:
        return []
    return [
        "Consistency trajectory (cross-seed PWMCC of the decoders during training; "
        f"`metrics.json` → `datasets.{name}.architectures.<sae>.trajectory`): "
        + "; ".join(
            f"{k}: {t[0]['pwmcc']:.3f} at epoch {t[0]['epoch']} → "
            f"{max(p['pwmcc'] for p in t):.3f} at best → {t[-1]['pwmcc']:.3f} at epoch "
            f"{t[-1]['epoch']}"
            for k, t in traj.items()
        )
        + ".",
        "",
        f"![consistency trajectory](figures/trajectory_{name}.png)",
        "",
    ]


def _dataset_section(name: str, ds: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    archs, seeds = ds["architectures"], metrics["seeds"]
    ci = level(metrics["metrics_config"]["ci_level"])
    if ds["source"] == "lm":
        about = lm_section(name, ds, metrics)
    else:
        about = [_data_line(name, ds, seeds), "", *_table(archs), ""]
    lines = [
        f"## Data set `{name}` ({ds['source']})",
        "",
        *about,
        *gate_data_lines(name, ds),
        *[_finding(name, label, a, len(seeds), ci) for label, a in archs.items()],
        "",
        *protocol_lines(name, ds),
        *(_downstream_lines(name, ds) if ds["source"] != "lm" else []),
        *_test_lines(name, archs, metrics["multiple_testing"]["p_adjusted"]),
        *variants_section(name, archs, ci),
        *[
            f"![{name}/{label} pairwise PWMCC](figures/pwmcc_heatmap_{name}_{label}.png)"
            for label in archs
        ],
        "",
        f"![trained vs baselines](figures/trained_vs_baselines_{name}.png)",
        "",
        f"![EV vs PWMCC](figures/ev_vs_pwmcc_{name}.png)",
        "",
    ]
    if len({a["config"]["d_sae"] for a in archs.values()}) > 1 and "sweep" not in metrics:
        lines += [f"![PWMCC vs d_sae](figures/d_sae_trend_{name}.png)", ""]
    lines += _trajectory_lines(name, archs) + coverage_lines(name, ds)
    lines += consensus_lines(name, ds) + functional_lines(name, ds, ci)
    return lines + probing_lines(name, ds)


def render_markdown(
    metrics: dict[str, Any], manifest: dict[str, Any] | None, gates: list[str] | None = None
) -> str:
    """report.md; `gates`: the release-gate section's lines (husai.report.gates)."""
    lines = [
        "# husai run report",
        "",
        "Question: if the same sparse autoencoder is trained again with another seed, do the "
        "same features (decoder directions) come back — more than chance would give?",
        "",
        "All consistency numbers compare decoder rows over seed pairs: mean over pairs "
        f"[{level(metrics['metrics_config']['ci_level'])} CI]. "
        "The CIs of trained SAEs and of trained − baseline resample seeds, not pairs (seed "
        "bootstrap, BCa: pairs share seeds, so a bootstrap over pairs would be too narrow); the "
        "baselines' CIs are percentile bootstraps over pairs. *random* = matched random unit "
        "Gaussian dictionaries (same shape and number of seeds), *init* = the same SAEs before "
        "training. "
        f"Quality numbers are seed means over {metrics['quality_eval_set']}"
        + (
            f"; downstream numbers on the {metrics['downstream_eval_split']}."
            if "downstream_eval_split" in metrics
            else "."
        ),
        "",
    ]
    first = next(iter(next(iter(metrics["datasets"].values()))["architectures"].values()))
    lines += ["Metric variants (each names its direction):", ""]
    keys = ("pwmcc", "hungarian_mcc", "hungarian_signed", "hungarian_minus_pwmcc")
    for key in (*keys, "shared_fraction@0.5", "shared_latent_curve"):
        if key in first["consistency"]:
            lines.append(f"- `{key.split('@')[0]}`: {first['consistency'][key]['variant']}")
    lines.append("")
    if "toy_model" in metrics:
        lines += _toy_section(metrics["toy_model"])
    if "sweep" in metrics:
        lines += sweep_section(metrics)
    for name, ds in metrics["datasets"].items():
        lines += _dataset_section(name, ds, metrics)
    lines += layer_lines(metrics) + (gates or [])
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
