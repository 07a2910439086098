"""ConcatRows: several stores of the same tokens joined column-wise (RouteSAE's rows)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from husai.errors import HusaiError
from husai.sae import train_sae
from husai.sae.base import spaced_rows
from husai.sae.config import SAEConfig
from husai.sae.data import ConcatRows, TensorRows, as_rows
from husai.store import ActivationStore, StoreWriter, TokenPolicy

SHARDS = [40, 25, 35]
D = 8


def _store(path: Path, x: torch.Tensor, shard_rows: list[int]) -> ActivationStore:
    w = StoreWriter(
        path,
        d=x.shape[1],
        hook_name=f"blocks.{path.name}.hook_resid_post",
        n_shards=len(shard_rows),
        policy=TokenPolicy(normalize="expected_average_only_in"),
    )
    for k, part in enumerate(x.split(shard_rows)):
        w.write(k, part)
    return w.finish()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[ActivationStore]:
    root = tmp_path_factory.mktemp("stores")
    g = torch.Generator().manual_seed(0)
    # different scales per layer: each store is normalised by its own scale
    return [
        _store(root / str(i), torch.randn(sum(SHARDS), D, generator=g) * (i + 1) + i, SHARDS)
        for i in range(3)
    ]


def test_concat_rows_match_the_concatenated_tensors(stores: list[ActivationStore]) -> None:
    x = torch.cat([s.load_all() for s in stores], dim=1)
    assert len({s.scale for s in stores}) == 3
    rows = ConcatRows(stores)
    assert (rows.n, rows.d, rows.block_rows) == (100, 3 * D, SHARDS)
    assert torch.equal(torch.cat(list(rows.blocks())), x)
    assert torch.allclose(rows.mean(), x.double().mean(0).float(), atol=1e-6)
    assert torch.equal(rows.mean(), TensorRows(x, SHARDS).mean())
    idx = torch.tensor([99, 0, 40, 39, 5, 5, 70])
    assert torch.equal(rows.take(idx), x[idx])
    assert torch.equal(rows.spaced(17), spaced_rows(x, 17))
    assert as_rows(rows) is rows
    raw = ConcatRows(stores, normalize=False)
    assert torch.equal(
        raw.block(1), torch.cat([s.read_shard(1, normalize=False) for s in stores], 1)
    )


def test_a_routesae_trains_on_concat_rows_as_on_the_same_blocks_in_memory(
    stores: list[ActivationStore],
) -> None:
    x = torch.cat([s.load_all() for s in stores], dim=1)
    cfg = SAEConfig.model_validate(
        {
            "architecture": "routesae",
            "n_layers": 3,
            "k": 2,
            "d_sae": 16,
            "epochs": 2,
            "batch_size": 16,
            "shuffle_buffer": 30,
        }
    )
    a, _ = train_sae(cfg, ConcatRows(stores), [1, 2])
    b, _ = train_sae(cfg, TensorRows(x, SHARDS), [1, 2])
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_misaligned_stores_are_refused(tmp_path: Path, stores: list[ActivationStore]) -> None:
    other = _store(tmp_path / "9", torch.randn(100, D), [50, 50])
    with pytest.raises(HusaiError, match="rows must align"):
        ConcatRows([stores[0], other])
