"""The native kernels (husai.sae.native) against torch: row-wise top-k against a stable
sort (values, indices, order; ties, ±0, ±inf, k = F, many candidates, by index), the
counting sort against torch.sort, and the build (cache, opt-out, damaged cache)."""

from __future__ import annotations

import pytest
import torch

from husai.sae import native, sparse_ops

pytestmark = pytest.mark.skipif(
    native.library() is None, reason="no working C++ compiler (g++/c++) on this machine"
)


def _reference(pre: torch.Tensor, k: int, by_index: bool = False):
    """The documented rule by brute force: sort by (value descending, index ascending) with
    −0.0 below +0.0, take k (then, by_index, in index order)."""
    rows_v, rows_i = [], []
    for row in pre.tolist():
        key = sorted(range(len(row)), key=lambda j: (-row[j], str(row[j]) == "-0.0", j))[:k]
        if by_index:
            key = sorted(key)
        rows_v.append([row[j] for j in key])
        rows_i.append(key)
    return torch.tensor(rows_v), torch.tensor(rows_i)


def _cases() -> dict[str, tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(0)
    inf_row = torch.randn(6, 64, generator=g)
    inf_row[0, 3] = torch.inf
    inf_row[1, :] = -torch.inf
    inf_row[2, :60] = -torch.inf
    zeros = torch.zeros(4, 64)
    zeros[:, ::3] = -0.0
    return {
        "gaussian": (torch.randn(70, 1024, generator=g), 32),
        "ties": (torch.randint(-3, 4, (30, 64), generator=g).float(), 8),
        "k = F": (torch.randint(-2, 3, (5, 16), generator=g).float(), 16),
        "k = 1": (torch.randn(9, 50, generator=g), 1),
        "F not a multiple of 4k": (torch.randn(7, 37, generator=g), 4),
        "many candidates": (torch.randint(0, 2, (3, 600), generator=g).float(), 100),
        "±0": (zeros, 5),
        "±inf": (inf_row, 6),
    }


@pytest.mark.parametrize("by_index", [False, True])
@pytest.mark.parametrize("case", list(_cases()))
def test_topk_rows_equals_the_documented_rule(case: str, by_index: bool) -> None:
    pre, k = _cases()[case]
    vals, idx = native.topk_rows(pre, k, by_index)
    ref_v, ref_i = _reference(pre, k, by_index)
    assert torch.equal(idx, ref_i)
    assert torch.equal(vals, ref_v) and torch.equal(vals.signbit(), ref_v.signbit())
    t_vals, t_idx = pre.topk(k, dim=-1)  # values: torch.topk's
    if not by_index:
        assert torch.equal(vals, t_vals)


def test_topk_rows_nan_row_gives_none_and_the_caller_uses_torch() -> None:
    pre = torch.randn(100, 256)
    pre[7, 9] = torch.nan
    assert native.topk_rows(pre, 8) is None
    vals, idx = sparse_ops.topk_rows(pre, 8)
    ref_v, ref_i = pre.topk(8, dim=-1)
    assert torch.equal(idx, ref_i) and torch.equal(vals.isnan(), ref_v.isnan())


def test_topk_rows_does_not_depend_on_threads() -> None:
    pre = torch.randn(300, 512, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.topk_rows(pre, 16)
        torch.set_num_threads(max(2, threads))
        two = native.topk_rows(pre, 16)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_native_and_torch_paths_agree(monkeypatch) -> None:
    pre = torch.randint(-4, 5, (200, 384), generator=torch.Generator().manual_seed(2)).float()
    fast = sparse_ops.topk_rows(pre, 24)
    monkeypatch.setattr(native, "library", lambda: None)
    slow = sparse_ops.topk_rows(pre, 24)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_rows_take_the_native_path_exactly(dtype, monkeypatch) -> None:
    pre = torch.randn(100, 256, generator=torch.Generator().manual_seed(4)).to(dtype)
    fast = sparse_ops.topk_rows(pre, 12)
    monkeypatch.setattr(native, "library", lambda: None)
    slow = sparse_ops.topk_rows(pre, 12)
    assert fast[0].dtype == dtype and torch.equal(fast[0], slow[0])
    assert torch.equal(fast[1], slow[1])


def test_group_by_column_is_a_stable_sort() -> None:
    cols = torch.randint(0, 50, (3000,), generator=torch.Generator().manual_seed(3))
    cols[cols == 7] = 8  # column 7 empty
    order, offsets = native.group_by_column(cols, 60)
    counts = torch.bincount(cols, minlength=60)
    assert torch.equal(order, torch.sort(cols, stable=True).indices)
    assert torch.equal(offsets, counts.cumsum(0) - counts)
    assert native.group_by_column(torch.tensor([0, 60]), 60) is None  # out of range: no write
    assert native.group_by_column(torch.tensor([-1]), 60) is None


def test_build_cache_opt_out_and_damaged_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HUSAI_CACHE_DIR", str(tmp_path / "a"))
    native.library.cache_clear()
    try:
        assert native.library() is not None
        (built,) = (tmp_path / "a" / "kernels").glob("topk-*.so")
        assert not list(built.parent.glob("*.tmp"))  # built aside, renamed into place
        # a damaged cached build elsewhere (never the loaded file: it is mapped) is rebuilt
        damaged = tmp_path / "b" / "kernels" / built.name
        damaged.parent.mkdir(parents=True)
        damaged.write_bytes(built.read_bytes()[:100])
        monkeypatch.setenv("HUSAI_CACHE_DIR", str(tmp_path / "b"))
        native.library.cache_clear()
        assert native.library() is not None and damaged.stat().st_size > 100
        monkeypatch.setenv("HUSAI_NATIVE", "0")
        native.library.cache_clear()
        assert native.library() is None and native.topk_rows(torch.randn(70, 64), 4) is None
    finally:
        native.library.cache_clear()
