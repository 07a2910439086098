"""report.md's sections for a language-model data set (source `lm`): what was extracted, the
SAELens-standard quality and next-token metrics on held-out contexts, every consistency
metric against its random baseline, and the published numbers they compare with."""

from __future__ import annotations

from typing import Any

from husai.report.format import interval, markdown_table
from husai.report.literature import REFERENCES

QUALITY = [  # (quality key, header, digits)
    ("explained_variance", "EV", 3),
    ("mse", "MSE (normalised units)", 4),
    ("l0", "L0", 1),
    ("dead_fraction", "dead frac", 3),
    ("dense_fraction", "dense frac", 4),
    ("downstream_loss", "CE spliced (nats)", 4),
    ("downstream_loss_recovered_vs_zero", "loss recovered vs zero", 3),
    ("downstream_loss_recovered_vs_mean", "loss recovered vs mean", 3),
    ("downstream_kl_to_clean", "KL to clean (nats)", 4),
]
CONSISTENCY = [  # (block, where, name)
    ("pwmcc", "consistency", "PWMCC"),
    ("hungarian_mcc", "consistency", "Hungarian MCC"),
    ("shared_latent_rate", "lm_consistency", "shared latent rate (Paulo & Belrose)"),
    ("subspace_similarity", "lm_consistency", "subspace similarity"),
    ("activation_mcc", "lm_consistency", "activation MCC (held-out tokens)"),
]


def _block(a: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
    return a.get(where, {}).get(key)


def _multi_data_line(name: str, ds: dict[str, Any], seeds: list[int]) -> str:
    ev, er = ds["eval"], ds["effective_rank"]
    layers = "; ".join(
        f"`{p['hook']}` (scale {p['normalization']['scale']:.4g}, `{p['artifact']}`)"
        for p in ds["per_layer"]
    )
    return (
        f"Model `{ds['model']}`, a multi-layer set for RouteSAE: each row is one token's "
        f"activations at {len(ds['layers'])} layers, concatenated layer-major (d "
        f"{ds['d_layer']} per layer, {ds['d']} in all): {layers}. Corpus `{ds['corpus']}`: "
        f"{ds['n_contexts']} contexts of {ds['context_size']} tokens, {ds['n']} training "
        f"rows (the same tokens at every layer). Effective rank (participation ratio, "
        f"{ds['effective_rank_rows']} rows): {er['participation_ratio']:.1f}. Held out: "
        f"{ev['n_contexts']} contexts (`{ev['artifact']}`). Seeds {seeds}. Source: "
        f"`metrics.json` → `datasets.{name}`."
    )


def _routing(name: str, archs: dict[str, Any]) -> list[str]:
    """Each seed's layer distribution on the held-out tokens (RouteSAE)."""
    routed = {label: a["routing"] for label, a in archs.items() if a.get("routing")}
    if not routed:
        return []
    hooks = next(iter(routed.values()))["layers"]
    body = [
        [label, seed, *(f"{f:.3f}" for f in fr)]
        for label, r in routed.items()
        for seed, fr in [*r["per_seed"].items(), ("mean", r["mean"])]
    ]
    return [
        "Router layer distribution (fraction of the held-out tokens routed to each layer, "
        f"per seed; `metrics.json` → `datasets.{name}.architectures.<sae>.routing`):",
        "",
        *markdown_table(["SAE", "seed", *(f"`{h}`" for h in hooks)], body),
        "",
    ]


def lm_data_line(name: str, ds: dict[str, Any], seeds: list[int]) -> str:
    if ds.get("layers"):
        return _multi_data_line(name, ds, seeds)
    c, nrm, ev = ds["token_counts"], ds["normalization"], ds["eval"]
    drops = ", ".join(
        f"{k.removeprefix('dropped_').replace('_', ' ')} {c[k]}"
        for k in ("dropped_first", "dropped_bos", "dropped_outlier")
        if c.get(k)
    )
    clipped = f", {c['clipped_outlier']} outliers clipped" if c.get("clipped_outlier") else ""
    scale = (
        f"scaled by {nrm['scale']:.4g} so the mean norm is √d (`{nrm['method']}`; raw mean "
        f"norm {nrm['mean_norm']:.4g})"
        if nrm["method"] != "none"
        else f"not normalised (mean norm {nrm['mean_norm']:.4g})"
    )
    er = ds["effective_rank"]
    return (
        f"Model `{ds['model']}`, hook `{ds['hook']}` (d {ds['d']}), corpus `{ds['corpus']}` "
        f"(sha256 `{ds['corpus_hash'][:12]}…`): {ds['n_contexts']} contexts of "
        f"{ds['context_size']} tokens{' (BOS first)' if ds['prepend_bos'] else ''}, "
        f"{c['seen']} tokens seen, {ds['n']} kept as training rows (dropped: "
        f"{drops or 'none'}{clipped}); activations {scale}; store `{ds['artifact']}` "
        f"({ds['store_dtype']}, content hash `{ds['store_content_hash'][:12]}…`). Effective "
        f"rank (participation ratio, {ds['effective_rank_rows']} evenly spaced rows): "
        f"{er['participation_ratio']:.1f}. Held out for evaluation: {ev['n_contexts']} "
        f"contexts ({ev['n_tokens']} tokens, `{ev['artifact']}`), never trained on. Seeds "
        f"{seeds}, trained as one batched ensemble, each with its own init and data order. "
        f"Source: `metrics.json` → `datasets.{name}`."
    )


def _quality_table(archs: dict[str, Any]) -> list[str]:
    first = next(iter(archs.values()))
    cols = [(k, h, d) for k, h, d in QUALITY if k in first["quality"]["ci"]]
    header = ["SAE", *(h for _, h, _ in cols)]
    body = [
        [label, *(interval(a["quality"]["ci"][k], digits=d) for k, _, d in cols)]
        for label, a in archs.items()
    ]
    return markdown_table(header, body)


def _consistency_table(archs: dict[str, Any]) -> list[str]:
    header = ["SAE", "metric", "trained", "random", "at init", "trained − random"]
    body = []
    for label, a in archs.items():
        for key, where, name in CONSISTENCY:
            b = _block(a, key, where)
            if b is None:
                continue
            init = interval(b["init"]) if "init" in b else "—"
            body.append(
                [
                    label,
                    name,
                    interval(b["trained"]),
                    interval(b["random"]),
                    init,
                    interval(b["trained_minus_random"], "+"),
                ]
            )
    return markdown_table(header, body)


def _variants(archs: dict[str, Any]) -> list[str]:
    a = next(iter(archs.values()))
    out = []
    for key, where, name in CONSISTENCY:
        b = _block(a, key, where)
        if b is not None:
            out.append(f"- {name} (`{where}.{key}`): {b['variant']}")
    return out


def _literature(name: str, ds: dict[str, Any], archs: dict[str, Any]) -> list[str]:
    header = ["study", "model, site", "width", "seeds", "published", "here (husai metric)"]
    body = []
    for ref in REFERENCES:
        here = "; ".join(
            f"{label}: {interval(b['trained'])}"
            for label, a in archs.items()
            if (
                b := _block(a, ref["metric"], "consistency")
                or _block(a, ref["metric"], "lm_consistency")
            )
        )
        body.append(
            [
                ref["study"],
                ", ".join(x for x in (ref["model"], ref["site"]) if x),
                ref["width"],
                str(ref["seeds"] or "—"),
                f"{ref['value']} ({ref['architecture']})",
                f"`{ref['metric']}` {here or 'n/a'}",
            ]
        )
    first = next(iter(archs.values()))
    width = ", ".join(sorted({str(a["config"]["d_sae"]) for a in archs.values()}))
    return [
        "Beside the published numbers (their models, widths and token budgets differ: here "
        f"`{ds['model']}` `{ds['hook']}`, d_sae {width}, {ds['n']} training tokens × "
        f"{first['config']['epochs']} epoch(s); theirs: far larger models, 16k–131k "
        "latents, hundreds of millions of tokens or more — read these as the same metric "
        "family, not a replication):",
        "",
        *markdown_table(header, body),
        "",
        *[f"- {r['study']} ({r['model']}): {r['variant']}." for r in REFERENCES],
        "",
    ]


def lm_section(name: str, ds: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """The LM-specific part of a data set's section."""
    archs = ds["architectures"]
    first = next(iter(archs.values()))
    return [
        lm_data_line(name, ds, metrics["seeds"]),
        "",
        *(_downstream_lines(name, first) if "downstream_baselines" in first else _routed(first)),
        "",
        *_quality_table(archs),
        "",
        *(
            [f"![firing-frequency histograms](figures/firing_{name}.png)", ""]
            if all("firing_histograms" in a.get("lm_eval", {}) for a in archs.values())
            else []
        ),
        *_routing(name, archs),
        "Consistency across seeds, every metric against its matched random baseline "
        "(decoder rows unless the variant says otherwise; mean over seed pairs [CI]; higher = "
        f"more consistent; `metrics.json` → `datasets.{name}.architectures.<sae>.consistency` "
        "and `.lm_consistency`):",
        "",
        *_consistency_table(archs),
        "",
        *_variants(archs),
        "",
        *_literature(name, ds, archs),
    ]


def _routed(first: dict[str, Any]) -> list[str]:
    return [
        "Quality on the held-out contexts (every position but the first, captured at every "
        "layer, each × its store's scale), against each token's routed layer (the RouteSAE's "
        "reconstruction target), seed mean [seed-bootstrap CI]. LM next-token metrics (the "
        f"SAE spliced in): {first.get('downstream_reason', 'not computed')}."
    ]


def _downstream_lines(name: str, first: dict[str, Any]) -> list[str]:
    base, ev = first["downstream_baselines"], first["lm_eval"]
    return [
        f"Quality and next-token metrics on the held-out contexts ({ev['n_replaced_tokens']} "
        "replaced tokens: every position but the first; "
        f"{ev['n_predictions']} next-token predictions), seed mean "
        "[seed-bootstrap CI]. The SAE reads the activation × the store's scale and its output "
        "is divided by it before it replaces the activation. LM baselines (`metrics.json` → "
        f"`datasets.{name}.architectures.<sae>.downstream_baselines`): "
        + "; ".join(
            f"{k}: CE {r['loss']:.4f}, next-token accuracy {r['accuracy']:.4f}"
            + (f", KL to clean {r['kl_to_clean']:.4f}" if "kl_to_clean" in r else "")
            for k, r in base.items()
        )
        + ". Loss recovered = (CE zero-ablated − CE spliced) / (CE zero-ablated − CE clean) "
        "(vs mean: with the mean-ablated CE); higher = better, 1 = as clean."
    ]
