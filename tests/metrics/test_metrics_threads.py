"""Numbers that reach metrics.json must not depend on torch's thread count (executors run
jobs with different threads per worker; metrics.json must be byte-identical)."""

from __future__ import annotations

import pytest
import torch

from husai.metrics import explained_variance, mse
from husai.metrics.spectrum import effective_rank


def _at_threads(n: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("shape", [(12_769, 128), (20_000, 128), (50_000, 64)])
def test_quality_and_effective_rank_are_thread_count_invariant(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g) * 3 + 1  # large enough for torch to split full sums
    x_hat = x + 0.1 * torch.randn(*shape, generator=g)

    def numbers():
        return mse(x, x_hat), explained_variance(x, x_hat), effective_rank(x)

    one = _at_threads(1, numbers)
    for n in (2, 3, 4):
        assert _at_threads(n, numbers) == one, n
