"""The one formatter of numbers, intervals and tables (report.md, the CLI's tables)."""

from __future__ import annotations

from typing import Any


def interval(b: dict[str, Any], sign: str = "", digits: int = 3) -> str:
    """`mean [ci_low, ci_high]`; sign "+" prints every sign."""
    f = f"{sign}.{digits}f"
    return f"{b['mean']:{f}} [{b['ci_low']:{f}}, {b['ci_high']:{f}}]"


def p_value(x: float | None) -> str:
    return "p n/a" if x is None else (f"p = {x:.2g}" if x >= 1e-4 else "p < 1e-4")


def level(x: float) -> str:
    """A confidence level as a percentage: 0.95 → "95%"."""
    return f"{x:.0%}" if round(x * 100, 6).is_integer() else f"{x:.1%}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(r) + " |" for r in rows],
    ]
