"""Training rows: an in-memory tensor or an on-disk activation store, behind one interface.

`Rows` is what the trainer reads: `n` rows of width `d` in `n_blocks` blocks (a tensor: one
block, or the blocks `TensorRows(x, block_rows=...)` is given; a store: block k = shard k,
float32, normalised as the store's reader does). Beside the blocks it gives the mean, random
access by global row index (`take`, reading only the blocks it needs, one at a time) and the
evenly spaced rows `spaced(n)` (husai.sae.base.spaced_rows). On one in-memory block every one
of these is today's tensor expression, bit for bit (mean = x.mean(0), take = x[i]).

`ShuffleStream` is one seed's data order: per epoch, the seed's generator permutes the block
order (not drawn for one block), takes whole blocks until the buffer holds ≥ `buffer` rows
(with the < B rows left over from the previous group), permutes them, emits full batches of B
and carries the rest; the epoch's last remainder is dropped. On one block that is exactly
`torch.randperm(N, generator=g)` in slices of B; every seed emits N // B batches an epoch, so
stacked seeds step in lockstep, and a seed holds fewer than max(buffer, B) + one block rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from husai.errors import HusaiError


def spaced_indices(n_rows: int, n: int) -> Tensor:
    """The row indices `spaced_rows` picks: at most n, evenly spaced over n_rows."""
    return torch.linspace(0, n_rows - 1, min(n_rows, n)).long()


class Rows:
    """Training rows in blocks; subclasses give `block(k)` and `block_rows`."""

    d: int
    block_rows: list[int]

    @property
    def n(self) -> int:
        return sum(self.block_rows)

    @property
    def n_blocks(self) -> int:
        return len(self.block_rows)

    def block(self, k: int) -> Tensor:
        raise NotImplementedError

    def blocks(self) -> Iterator[Tensor]:
        for k in range(self.n_blocks):
            yield self.block(k)

    def offsets(self) -> Tensor:
        """[n_blocks + 1] global index of each block's first row (and n at the end)."""
        return torch.tensor([0, *self.block_rows]).cumsum(0)

    def checked_blocks(self) -> Iterator[Tensor]:
        """The blocks, for the one pass that computes the mean (a store checks them there)."""
        return self.blocks()

    def mean(self) -> Tensor:
        """[d] float32 mean row: one block's `mean(0)`; several: summed in float64, streamed."""
        total = torch.zeros(self.d, dtype=torch.float64)
        for b in self.checked_blocks():
            if self.n_blocks == 1:
                return b.mean(0)
            total += b.double().sum(0)
        return (total / self.n).float()

    def take(self, idx: Tensor) -> Tensor:
        """Rows [len(idx), d] at global indices idx (any order, repeats allowed)."""
        idx = idx.long()
        out = torch.empty(len(idx), self.d)
        off = self.offsets()
        which = torch.bucketize(idx, off[1:], right=True)
        for k in which.unique().tolist():
            mask = which == k
            out[mask] = self.block(k)[idx[mask] - off[k]]
        return out

    def spaced(self, n: int) -> Tensor:
        """At most n evenly spaced rows (the same rows as `spaced_rows` on the whole set)."""
        return self.take(spaced_indices(self.n, n))


class TensorRows(Rows):
    """An in-memory [N, d] tensor, as one block or split into `block_rows`."""

    def __init__(self, x_ND: Tensor, block_rows: list[int] | None = None) -> None:
        self.x = x_ND
        self.d = int(x_ND.shape[1])
        self.block_rows = [len(x_ND)] if block_rows is None else [int(r) for r in block_rows]
        if sum(self.block_rows) != len(x_ND):
            raise HusaiError(f"block_rows sum to {sum(self.block_rows)}, not {len(x_ND)} rows")
        self._off = self.offsets().tolist()

    def block(self, k: int) -> Tensor:
        return self.x[self._off[k] : self._off[k + 1]]

    def mean(self) -> Tensor:
        return self.x.mean(0) if self.n_blocks == 1 else super().mean()

    def take(self, idx: Tensor) -> Tensor:
        return self.x[idx]


class StoreRows(Rows):
    """An activation store (husai.store.ActivationStore): block k = shard k, read on demand
    (float32, normalised unless `normalize=False`); the mean is computed once, streamed, and
    every shard is checked for NaN/Inf on that pass."""

    def __init__(self, store: Any, *, normalize: bool = True) -> None:
        self.store, self.normalize = store, normalize
        self.d = int(store.d)
        self.block_rows = list(store.shard_rows)
        self._mean: Tensor | None = None
        if self.n == 0:
            raise HusaiError(f"{store.path}: the store holds no rows")

    def block(self, k: int) -> Tensor:
        return self.store.read_shard(k, normalize=self.normalize)

    def checked_blocks(self) -> Iterator[Tensor]:
        for k, b in enumerate(self.blocks()):
            bad = ~torch.isfinite(b).all(-1)
            if bad.any():
                raise HusaiError(
                    f"{self.store.path}: shard {k} contains NaN/Inf ({int(bad.sum())} rows)"
                )
            yield b

    def mean(self) -> Tensor:
        if self._mean is None:
            self._mean = super().mean()
        return self._mean


class ConcatRows(Rows):
    """Several stores of the same tokens joined column-wise (a RouteSAE's rows: L layers,
    layer-major): block k = each store's shard k (normalised by its own scale, as its
    reader gives it) concatenated along dim 1. The stores must hold equal shard row counts."""

    def __init__(self, stores: list[Any], *, normalize: bool = True) -> None:
        if not stores:
            raise HusaiError("ConcatRows needs at least one store")
        self.parts = [StoreRows(s, normalize=normalize) for s in stores]
        self.block_rows = self.parts[0].block_rows
        for p in self.parts[1:]:
            if p.block_rows != self.block_rows:
                raise HusaiError(
                    f"{p.store.path}: shard rows {p.block_rows} differ from "
                    f"{self.parts[0].store.path}'s {self.block_rows} (rows must align)"
                )
        self.d = sum(p.d for p in self.parts)
        self._mean: Tensor | None = None

    def block(self, k: int) -> Tensor:
        return torch.cat([p.block(k) for p in self.parts], dim=1)

    def checked_blocks(self) -> Iterator[Tensor]:
        for k, b in enumerate(self.blocks()):
            if not torch.isfinite(b).all():
                raise HusaiError(f"shard {k} of the joined stores contains NaN/Inf")
            yield b

    def mean(self) -> Tensor:
        if self._mean is None:
            self._mean = super().mean()
        return self._mean


def as_rows(x: Tensor | Rows | Any) -> Rows:
    """A `Rows` for a tensor (one block), a `Rows` (as it is) or an activation store."""
    if isinstance(x, Rows):
        return x
    if isinstance(x, Tensor):
        return TensorRows(x)
    if hasattr(x, "read_shard") and hasattr(x, "shard_rows"):
        return StoreRows(x)
    raise HusaiError(f"training data must be a tensor or an activation store, not {type(x)}")


class ShuffleStream:
    """One seed's batches: `epoch()` yields (global row ids [B], rows [B, d]) N // B times.
    `peak_rows` records the most rows its buffer has held (for tests and benchmarks)."""

    def __init__(self, rows: Rows, generator: torch.Generator, batch: int, buffer: int) -> None:
        self.rows, self.g, self.B, self.buffer = rows, generator, int(batch), int(buffer)
        self.peak_rows = 0

    def epoch(self) -> Iterator[tuple[Tensor, Tensor]]:
        rows, B = self.rows, self.B
        if rows.n_blocks == 1:  # no block order to draw: today's randperm(N) in slices of B
            yield from self._emit(torch.arange(rows.n), rows.block(0))
            return
        off = rows.offsets().tolist()
        ids: list[Tensor] = []
        data: list[Tensor] = []
        for k in torch.randperm(rows.n_blocks, generator=self.g).tolist():
            ids.append(torch.arange(off[k], off[k + 1]))
            data.append(rows.block(k))
            if sum(map(len, ids)) >= self.buffer:
                yield from self._emit(torch.cat(ids), torch.cat(data))
                ids, data = [self._carry[0]], [self._carry[1]]
        if sum(map(len, ids)) >= B:
            yield from self._emit(torch.cat(ids), torch.cat(data))

    def _emit(self, ids: Tensor, data: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """Permute one group, yield its full batches, keep the rest in `_carry`."""
        B = self.B
        self.peak_rows = max(self.peak_rows, len(ids))
        order = torch.randperm(len(ids), generator=self.g)
        full = len(ids) // B
        for i in range(full):
            pick = order[i * B : (i + 1) * B]
            yield ids.index_select(0, pick), data.index_select(0, pick)  # = [pick], faster
        rest = order[full * B :]
        self._carry = (ids[rest], data[rest])
