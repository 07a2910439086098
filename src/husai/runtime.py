"""Run-time switches that make the numbers reproducible."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def deterministic() -> Iterator[None]:
    """Use torch's deterministic kernels inside the block (restored afterwards).

    On CPU with several threads, some backward kernels (e.g. the embedding gradient)
    accumulate in a thread-dependent order; with this switch, reruns are bit-identical.
    """
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one thread inside the block (restored afterwards), for the few kernels
    whose result depends on the thread count (e.g. LAPACK's eigensolvers), so that numbers
    are the same whatever the executor's threads per worker."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
