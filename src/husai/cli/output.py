"""What the `husai` commands print: progress bars and rich tables (cells formatted by
husai.report's one formatter)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from husai.report.format import interval, level

console = Console(stderr=True)


def progress() -> tuple[Progress, Callable[[str, int, int], None]]:
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(label: str, i: int, n: int) -> None:
        if label not in tasks:
            what = "SAE jobs done" if label == "jobs" else f"train SAE {label}"
            tasks[label] = bar.add_task(what, total=n)
        bar.update(tasks[label], completed=i)

    return bar, update


def stdout() -> Console:
    """Standard output; wide enough for the tables when it is not a terminal."""
    c = Console()
    return c if c.is_terminal else Console(width=160)


def rich_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title)
    for col in header:
        t.add_column(col)
    for r in rows:
        t.add_row(*r)
    return t


def summary_table(metrics: dict[str, Any]) -> Table:
    """The run's results, one row per data set / SAE (columns from husai.report.tables)."""
    from husai.report.tables import COLUMNS, columns, known_extras, rows

    header: list[str] = []
    body: list[list[str]] = []
    for name, ds in metrics["datasets"].items():
        first = next(iter(ds["architectures"].values()))
        extra = known_extras(first)[:1]  # downstream accuracy or recovery MCC
        cols = [
            ("data / SAE", lambda label, _, name=name: f"{name}/{label}"),
            *columns("pwmcc", "pwmcc_random", "delta", "hungarian", "ev", "l0", "dead"),
            ("acc (spliced) / recovery", COLUMNS[extra[0]][1] if extra else lambda *_: "—"),
        ]
        header, part = rows(ds["architectures"], cols)
        body += part
    return rich_table(
        "husai: cross-seed consistency (decoder rows; higher = more consistent)", header, body
    )


def compare_table(res: dict[str, Any], n: int) -> Table:
    """`husai compare`: one row per metric, trained vs random."""
    ci = level(res["pwmcc"]["trained_minus_random"]["level"])
    header = ["metric", f"trained mean [{ci} CI]", "random", f"Δ [{ci} CI]", "variant"]
    body = [
        [
            key,
            interval(v["trained"]),
            f"{v['random']['mean']:.3f}",
            interval(v["trained_minus_random"], "+"),
            v["variant"],
        ]
        for key, v in res.items()
        if isinstance(v, dict) and "trained" in v
    ]
    title = (
        f"{n} SAEs, d_in {res['d_in']}: {res['rows_compared']}-row consistency "
        "(every score: higher = more consistent)"
    )
    return rich_table(title, header, body)


def matrix_table(res: dict[str, Any], key: str, labels: list[str]) -> Table:
    t = Table(title=f"{key} per pair (trained; random mean {res[key]['random']['mean']:.3f})")
    t.add_column("")
    for lab in labels:
        t.add_column(lab)
    for lab, row in zip(labels, res[key]["matrix"], strict=True):
        t.add_row(lab, *(f"{v:.3f}" for v in row))
    return t
