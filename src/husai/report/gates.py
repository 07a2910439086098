"""The report's release-gate table: what `gate.json` (husai gate, or `husai run` with the
default policy) holds, formatted; nothing is evaluated here."""

from __future__ import annotations

from typing import Any

from husai.report.format import markdown_table


def _num(v: Any) -> str:
    return "null" if v is None else f"{v:.4g}"


def gate_lines(gate: dict[str, Any] | None, metrics_sha256: str) -> list[str]:
    """Per gate and piece of evidence: required, status, value vs threshold, metrics.json
    path; a gate.json of another metrics.json is named stale, not shown."""
    if gate is None:
        return []
    head = ["## Release gates", ""]
    if gate.get("metrics_sha256") != metrics_sha256:
        return [
            *head,
            "`gate.json` was evaluated on another metrics.json (stale): rerun `husai gate`.",
            "",
        ]
    rows = []
    for g in gate["gates"]:
        first = [f"`{g['name']}`", "yes" if g["required"] else "no", f"**{g['status']}**"]
        if not g["evidence"]:
            rows.append([*first, f"— {g['op']} {g['threshold']:g}", g.get("reason", "")])
        for i, e in enumerate(g["evidence"]):
            cell = f"{_num(e['value'])} {g['op']} {g['threshold']:g}" + ("" if e["pass"] else " ✗")
            paths = " − ".join(f"`{p}`" for p in e["paths"])
            if e.get("control_learned") is False:
                cell += f"; control EV {_num(e['control_ev'])} < {g['control_ev_floor']:g}"
                paths += f"; EV: `{e['control_ev_path']}`"
            rows.append([*(first if i == 0 else ["", "", ""]), cell, paths])
    verdict = (
        "every required gate passes"
        if gate["passed"]
        else "failed (required gates not passing: " + ", ".join(gate["failed_required"]) + ")"
    )
    return [
        *head,
        f"Policy hash `{gate['policy_hash']}` (`gate.json`; `husai gate RUN_DIR --policy FILE` "
        f"re-evaluates and redraws this section): **{verdict}**. A *missing* gate lacks the data "
        "it needs (its reason says which) and fails when required. Value vs threshold per piece "
        "of evidence, ✗ = fails; a control gate's value is the real set's lower CI bound − the "
        "control set's upper bound.",
        "",
        *markdown_table(["gate", "required", "status", "value vs threshold", "evidence"], rows),
        "",
    ]
