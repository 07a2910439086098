"""report.md's "Seed independence" table (issue 13's protocol): per SAE configuration, are
its seeds independent, did they agree before training, and how consistent are they over
alive latents only. Formats metrics.json's `protocol` blocks; computes nothing."""

from __future__ import annotations

from typing import Any

from husai import results as R
from husai.report.format import interval, markdown_table


def _seeds(p: dict[str, Any]) -> str:
    if not p["independent"]:
        return "coupled: " + "; ".join(p["couplings"])
    return "independent" + (" (data-anchored init)" if p["caveats"] else "")


def _verdict(p: dict[str, Any]) -> str:
    if p["counts"]:
        return "**counts**: independent seeds that agree after training, not at init"
    if not p["independent"]:
        return "coupled: agreement imposed by training"
    if p["agrees_at_init"]:
        return f"agreed at init (> {p['init_tolerance']} above random)"
    return "trained − init not resolved above 0"


def _validation_lines(name: str, ds: dict[str, Any]) -> list[str]:
    out = []
    for c, by in ds.get("coupled_validation", {}).items():
        for i, v in by.items():
            out.append(
                f"- coupled `{c}` against independent `{i}`: cross-seed Hungarian MCC "
                f"{interval(v['cross'])} (every `{c}` seed × every `{i}` seed) vs "
                f"{v['independent_within']:.3f} among the `{i}` seeds, {v['coupled_within']:.3f} "
                f"among the `{c}` seeds (imposed) and {v['random']:.3f} for random "
                f"dictionaries. Source: `metrics.json` → `datasets.{name}.coupled_validation`."
            )
    if not out:
        return []
    first = next(iter(next(iter(ds["coupled_validation"].values())).values()))
    head = (
        "Coupled configurations validated against independent ones of the same width "
        f"(higher = more alike; {first['variant']}):"
    )
    return [head, "", *out, ""]


def protocol_lines(name: str, ds: dict[str, Any]) -> list[str]:
    """The table and the coupled validation, or nothing when no entry has a protocol block
    (older metrics.json)."""
    archs = ds["architectures"]
    rows = []
    for label, a in archs.items():
        p = a.get("protocol")
        if p is None:
            continue
        alive = p["alive_hungarian_mcc"]
        frac = p["alive_fraction"]
        rows.append(
            [
                label,
                _seeds(p),
                f"{R.metric(a, 'hungarian_mcc')['init']['mean']:.3f} − "
                f"{R.metric(a, 'hungarian_mcc')['random']['mean']:.3f} = "
                f"{round(p['init_minus_random_hungarian'], 3) or 0.0:+.3f}",  # no "-0.000"
                interval(R.trained(a, "hungarian_mcc")),
                f"{min(frac['trained']):.2f}–{max(frac['trained']):.2f}",
                interval(alive["trained"]),
                f"{alive['random']['mean']:.3f}",
                f"{alive['init']['mean']:.3f}",
                _verdict(p),
            ]
        )
    if not rows:
        return []
    header = [
        "SAE",
        "seeds",
        "Hungarian init − random",
        "Hungarian trained",
        "alive frac (seed min–max)",
        "alive Hungarian trained",
        "alive random",
        "alive init",
        "verdict",
    ]
    first = next(a for a in archs.values() if "protocol" in a)["protocol"]
    return [
        f"### Seed independence and alive latents (`{name}`)",
        "",
        "A seed is independent when its init and data order come from its own generator and "
        "its training sees nothing of the other seeds; agreement of coupled seeds is imposed, "
        "not found. Hungarian MCC is the |cos| one-to-one matching (higher = more "
        f"consistent). Rule: {first['rule']}. *alive Hungarian*: "
        f"{first['alive_hungarian_mcc']['variant']}. Source: `metrics.json` → "
        f"`datasets.{name}.architectures.<SAE>.protocol`.",
        "",
        *markdown_table(header, rows),
        "",
        *_validation_lines(name, ds),
    ]
