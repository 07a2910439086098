"""Run-time switches that make the numbers reproducible."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from husai.errors import HusaiError

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """ "cpu", "cuda" (or "cuda:N") or "auto" (cuda when a GPU is available) as a device;
    cuda without a GPU is a HusaiError. On cuda, sets CUBLAS_WORKSPACE_CONFIG (unless set)
    so that `deterministic()` may use cuBLAS."""
    text = str(name)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text != "cpu" and not text.startswith("cuda"):
        raise HusaiError(f"unknown device {text!r} (valid: {', '.join(DEVICES)}, cuda:N)")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HusaiError(f"device {text} requested but no CUDA GPU is available")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        return torch.device(text)
    except RuntimeError as e:
        raise HusaiError(f"unknown device {text!r} ({e})") from None


@contextmanager
def deterministic(warn_only: bool = False) -> Iterator[None]:
    """Use torch's deterministic kernels inside the block (restored afterwards).

    On CPU with several threads, some backward kernels (e.g. the embedding gradient)
    accumulate in a thread-dependent order; with this switch, reruns are bit-identical.
    `warn_only` (for GPUs, where a few kernels have no deterministic version): warn, not fail.
    """
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


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
