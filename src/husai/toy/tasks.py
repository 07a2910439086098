"""Binary probing tasks on the toy model's inputs (a, b) and answer c = (a op b) mod p, for
SAEBench-style sparse probing (husai.metrics.probing): the answer class one-vs-rest for four
classes spread over Z_p (SAEBench's tasks are one class against the rest, too), and for each
of a, b and c its lower half (< p/2) and its parity."""

from __future__ import annotations

from torch import Tensor

from husai.toy.data import make_dataset


def probe_labels(p: int, op: str, rows: Tensor) -> dict[str, Tensor]:
    """name → bool labels of the pairs `rows` (indices into the a-major p² grid)."""
    tokens, answers = make_dataset(p, op)
    a, b, c = tokens[rows, 0], tokens[rows, 1], answers[rows]
    out = {f"c={j}": c == j for j in sorted({0, p // 4, p // 2, 3 * p // 4})}
    for name, v in (("c", c), ("a", a), ("b", b)):
        out[f"{name}<p/2"] = v < p / 2
        out[f"{name} even"] = v % 2 == 0
    return out
