"""What `husai consensus` prints: the groups found and the quality table (formatting only)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from husai.cli.output import stdout


def _row(label: str, q: dict[str, float], rec: dict[str, Any] | None) -> list[str]:
    cells = [label, f"{q['explained_variance']:.4f}", f"{q['l0']:.2f}", f"{q['dead_fraction']:.3f}"]
    if rec is not None:
        cells.append(f"{rec['hungarian_mcc']:.4f}")
    return cells


def print_consensus(s: dict[str, Any]) -> None:
    out = stdout()
    by_n = ", ".join(f"{n} seeds: {c}" for n, c in s["groups_by_n_seeds"].items() if c)
    out.print(
        f"{s['n_groups']} groups over {s['n_saes']} SAEs (decoder rows, |cos| >= "
        f"{s['threshold']:g}): {by_n}"
    )
    out.print(
        f"consensus width {s['width']} (groups in >= {s['min_seeds']} of {s['n_saes']} SAEs; "
        f"single SAEs: {', '.join(str(w) for w in s['single_widths'])})"
        + (f", k {s['k']}" if "k" in s else "")
        + f"; encoder: {s['encoder']}"
    )
    q, rec = s.get("quality"), s.get("recovery")
    if q is None:
        out.print("no activations: EV / L0 / dead fraction not measured (pass --activations)")
        if rec is not None:
            best = max(r["hungarian_mcc"] for r in rec["single_seeds"])
            out.print(
                f"truth recovery (hungarian_mcc, higher = better): consensus "
                f"{rec['consensus']['hungarian_mcc']:.4f}, best single SAE {best:.4f}"
            )
        return
    t = Table(title=f"on {q['n_tokens']} tokens (EV higher = better; dead lower = better)")
    for col in ("SAE", "EV", "L0", "dead", *(("truth recovery (Hungarian MCC)",) if rec else ())):
        t.add_column(col)
    singles = rec["single_seeds"] if rec else [None] * len(q["single_seeds"])
    for i, (sq, sr) in enumerate(zip(q["single_seeds"], singles, strict=True)):
        t.add_row(*_row(f"seed SAE {i}", sq, sr))
    cons = rec["consensus"] if rec else None
    # recovery depends on the decoder only: the same for both encoders
    t.add_row(*_row("consensus (averaged encoder)", q["consensus_averaged"], cons))
    t.add_row(*_row("consensus (refit encoder)", q["consensus_refit"], cons))
    out.print(t)
