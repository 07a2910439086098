"""Training streamed from an activation store (husai.sae.data), devices and bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from husai.errors import HusaiError
from husai.runtime import resolve_device
from husai.sae import train_sae
from husai.sae.base import spaced_rows
from husai.sae.config import SAEConfig
from husai.sae.data import ShuffleStream, StoreRows, TensorRows, as_rows
from husai.store import ActivationStore, StoreWriter

SHARDS = [130, 70, 100, 150, 150]  # uneven, N = 600
D = 16
BASE = {"d_sae": 32, "epochs": 2, "batch_size": 32, "shuffle_buffer": 200}


def _x() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(sum(SHARDS), D, generator=g) * torch.rand(D, generator=g) + 0.5


def _store(path: Path, x: torch.Tensor, shard_rows: list[int]) -> ActivationStore:
    w = StoreWriter(
        path, d=x.shape[1], hook_name="blocks.0.hook_resid_post", n_shards=len(shard_rows)
    )
    for k, part in enumerate(x.split(shard_rows)):
        w.write(k, part)
    return w.finish()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ActivationStore:
    return _store(tmp_path_factory.mktemp("store") / "s", _x(), SHARDS)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_rows_match_the_tensor_expressions(store: ActivationStore) -> None:
    x = _x()
    rows, one = StoreRows(store), TensorRows(x)
    assert (rows.n, rows.d, rows.n_blocks) == (600, D, 5)
    assert torch.equal(one.mean(), x.mean(0))
    assert torch.allclose(rows.mean(), x.double().mean(0).float(), atol=1e-6)
    assert torch.equal(rows.mean(), TensorRows(x, SHARDS).mean())
    idx = torch.tensor([599, 0, 130, 129, 5, 5, 400])
    assert torch.equal(rows.take(idx), x[idx]) and torch.equal(one.take(idx), x[idx])
    assert torch.equal(rows.spaced(50), spaced_rows(x, 50))
    assert torch.equal(rows.spaced(10_000), x)
    assert isinstance(as_rows(store), StoreRows) and as_rows(rows) is rows


def test_a_one_shard_store_trains_exactly_as_the_tensor(tmp_path: Path) -> None:
    x = _x()
    one = _store(tmp_path / "one", x, [len(x)])
    cfg = SAEConfig(architecture="topk", k=4, **BASE)
    a, info_a = train_sae(cfg, x, [1, 2])
    b, info_b = train_sae(cfg, one, [1, 2])
    assert _same(a, b) and info_a == info_b


@pytest.mark.parametrize(
    "fields",
    [
        {"architecture": "topk", "k": 4, "init": "data", "resample_every_epochs": 1, "epochs": 3},
        {"architecture": "batchtopk", "k": 4},
        {"architecture": "relu", "target_l0": 4.0},
        {"architecture": "jumprelu"},
        {"architecture": "topk", "k": 4, "consistency_penalty": "reference", "epochs": 1},
    ],
)
def test_a_store_trains_as_the_same_blocks_in_memory(store: ActivationStore, fields: dict) -> None:
    """Every data-dependent step (init: data, resampling, BatchTopK's calibration, target_l0,
    the default reference) reads the store as it would the tensor in the same blocks."""
    cfg = SAEConfig(**{**BASE, **fields})
    a, info_a = train_sae(cfg, store, [3, 4])
    b, info_b = train_sae(cfg, TensorRows(_x(), SHARDS), [3, 4])
    assert _same(a, b) and info_a == info_b
    assert info_a["steps"] == [cfg.epochs * (600 // 32)] * 2
    assert all(torch.isfinite(p).all() for p in a.parameters())


def test_the_buffer_gives_n_over_b_batches_deterministic_and_per_seed(
    store: ActivationStore,
) -> None:
    def orders(seed: int) -> list[torch.Tensor]:
        stream = ShuffleStream(StoreRows(store), torch.Generator().manual_seed(seed), 32, 200)
        return [torch.cat([ids for ids, _ in stream.epoch()]) for _ in range(2)]

    a, again, other = orders(1), orders(1), orders(2)
    assert all(len(e) == (600 // 32) * 32 for e in a)
    assert all(torch.equal(p, q) for p, q in zip(a, again, strict=True))
    assert not torch.equal(a[0], other[0]) and not torch.equal(a[0], a[1])


@pytest.mark.parametrize(("batch", "buffer"), [(32, 200), (7, 1), (64, 10_000), (600, 100)])
def test_each_epoch_is_a_permutation_of_the_rows_but_a_remainder(
    store: ActivationStore, batch: int, buffer: int
) -> None:
    rows = StoreRows(store)
    x = _x()
    stream = ShuffleStream(rows, torch.Generator().manual_seed(5), batch, buffer)
    for _ in range(2):
        out = list(stream.epoch())
        assert len(out) == 600 // batch
        ids = torch.cat([i for i, _ in out])
        assert len(ids.unique()) == len(ids) and 600 - len(ids) < batch
        assert torch.equal(torch.cat([r for _, r in out]), x[ids])  # rows are those rows
    assert stream.peak_rows < max(buffer, batch) + max(SHARDS)  # memory: buffer + one shard


def test_an_in_memory_tensor_keeps_todays_randperm_order() -> None:
    g = torch.Generator().manual_seed(9)
    ids = torch.cat([i for i, _ in ShuffleStream(TensorRows(_x()), g, 32, 1).epoch()])
    assert torch.equal(ids, torch.randperm(600, generator=torch.Generator().manual_seed(9))[:576])


def test_store_errors(store: ActivationStore) -> None:
    cfg = SAEConfig(architecture="topk", k=4, **BASE)
    with pytest.raises(HusaiError, match="targets .* in-memory tensor"):
        train_sae(cfg, store, [1], y_ND=torch.zeros(600, 4))
    with pytest.raises(HusaiError, match="tensor or an activation store"):
        train_sae(cfg, [[1.0]], [1])


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(HusaiError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(HusaiError, match="device cuda requested but no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(HusaiError, match="no CUDA GPU"):
            train_sae(SAEConfig(architecture="topk", k=4, **BASE), _x(), [1], device="cuda")


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "relu", "gated", "jumprelu"])
def test_bf16_trains_close_to_fp32(arch: str) -> None:
    fields = {"architecture": arch, **({"k": 4} if "topk" in arch else {}), **BASE, "epochs": 3}
    x = _x()
    fp32, i32 = train_sae(SAEConfig(**fields), x, [1, 2])
    bf16, i16 = train_sae(SAEConfig(**fields, precision="bf16"), x, [1, 2])
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    for a, b in zip(i32["final_train_mse"], i16["final_train_mse"], strict=True):
        assert b == pytest.approx(a, rel=0.1)
    assert not _same(fp32, bf16)
