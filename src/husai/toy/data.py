"""Modular-arithmetic dataset: every pair (a, b) in Z_p as tokens [a, b, =]."""

from __future__ import annotations

import torch

from husai.errors import HusaiError

OPS = ("add", "sub", "mul")


def make_dataset(p: int, op: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All p² inputs, row a*p + b: tokens [a, b, p] (id p is `=`), label (a op b) mod p."""
    if op not in OPS:
        raise HusaiError(f"unknown op {op!r}; valid ops: {', '.join(OPS)}")
    if p < 2:
        raise HusaiError(f"p must be at least 2, got {p}")
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    if op == "add":
        labels = (a + b) % p
    elif op == "sub":
        labels = (a - b) % p
    else:
        labels = (a * b) % p
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    return tokens, labels


def split_indices(n: int, train_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random train/test split of range(n); both index sets are returned sorted."""
    n_train = int(train_frac * n)
    if not 0 < n_train < n:
        raise HusaiError(f"train_frac={train_frac} leaves an empty train or test split of {n} rows")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    return perm[:n_train].sort().values, perm[n_train:].sort().values
