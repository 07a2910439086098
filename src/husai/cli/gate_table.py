"""What `husai gate` prints: one row per gate and piece of evidence."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from husai.cli.output import rich_table


def _num(v: Any) -> str:
    return "null" if v is None else f"{v:.4g}"


def gate_table(result: dict[str, Any]) -> Table:
    """Gate, required, status, value OP threshold, evidence path(s) (a control gate's
    value is the real set's ci_low − the control set's ci_high)."""
    rows = []
    for g in result["gates"]:
        head = [g["name"], "yes" if g["required"] else "no", g["status"].upper()]
        if not g["evidence"]:
            rows.append([*head, f"— {g['op']} {g['threshold']:g}", g.get("reason", "")])
        for i, e in enumerate(g["evidence"]):
            mark = "" if e["pass"] else " ✗"
            cell = f"{_num(e['value'])} {g['op']} {g['threshold']:g}{mark}"
            paths = " − ".join(e["paths"])
            if e.get("control_learned") is False:  # the control SAEs learned nothing
                cell += f"; control EV {_num(e['control_ev'])} < {g['control_ev_floor']:g}"
                paths += f"; EV: {e['control_ev_path']}"
            rows.append([*(head if i == 0 else ["", "", ""]), cell, paths])
    verdict = "PASS" if result["passed"] else "FAIL: " + ", ".join(result["failed_required"])
    return rich_table(
        f"release gates ({verdict})",
        ["gate", "required", "status", "value vs threshold", "evidence (metrics.json path)"],
        rows,
    )
