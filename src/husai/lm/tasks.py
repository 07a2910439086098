"""Binary token-level probing tasks for SAEBench-style sparse probing (husai.metrics.probing),
computed from the tokenizer's string of each token: character classes of the token and, as
SAEBench's one-class-against-the-rest tasks, the identity of the most frequent tokens."""

from __future__ import annotations

import keyword
import string
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

PROPERTIES: dict[str, Callable[[str], bool]] = {
    "whitespace-prefixed": lambda s: s[:1].isspace(),
    "capitalised": lambda s: s.strip()[:1].isupper(),
    "digits": lambda s: s.strip().isdigit(),
    "punctuation": lambda s: bool(s.strip()) and all(c in string.punctuation for c in s.strip()),
    "python keyword": lambda s: s.strip() in keyword.kwlist,
    "newline": lambda s: "\n" in s,
}
N_FREQUENT = 3  # one-vs-rest tasks for this many most frequent tokens


def token_strings(tokenizer: Any, ids: Tensor) -> list[str]:
    """Each token id's decoded string (leading spaces kept), in the order of `ids`."""
    flat = ids.flatten().tolist()
    decoded = {i: tokenizer.decode([i]) for i in sorted(set(flat))}
    return [decoded[i] for i in flat]


def token_labels(ids: Tensor, strings: list[str]) -> dict[str, Tensor]:
    """name → bool labels of each token: every property in PROPERTIES, and `token = 'x'` for
    the N_FREQUENT most frequent ids (ties: the lower id)."""
    flat = ids.flatten()
    out = {
        name: torch.tensor([prop(s) for s in strings], dtype=torch.bool)
        for name, prop in PROPERTIES.items()
    }
    counts = Counter(flat.tolist())
    top = sorted(counts, key=lambda i: (-counts[i], i))[:N_FREQUENT]
    for i in top:
        out[f"token = {strings[flat.tolist().index(i)]!r}"] = flat == i
    return out
