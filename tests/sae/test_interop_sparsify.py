"""EleutherAI sparsify: SAEs built and saved by the library (`save_to_disk`), loaded by husai."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

sparsify = pytest.importorskip(
    "sparsify", reason="interop extra not installed (pip install husai[interop])"
)
from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402
from sparsify.config import TrainConfig  # noqa: E402

from husai.sae import find_saes, load  # noqa: E402

D, F, K = 8, 24, 3


def _library_sae(seed: int, transcode: bool = False) -> SparseCoder:
    torch.manual_seed(seed)  # as sparsify's Trainer does per seed
    sae = SparseCoder(D, SparseCoderConfig(num_latents=F, k=K, transcode=transcode))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.encoder.bias.copy_(torch.randn(F, generator=g) * 0.3)
        sae.b_dec.copy_(torch.randn(D, generator=g) * 0.3)
        if transcode:
            sae.W_dec.copy_(torch.randn(F, D, generator=g))
    return sae


def _check(husai_sae, lib: SparseCoder) -> None:
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        top_acts, top_idx, _ = lib.encode(x)
        dense = torch.zeros(64, F).scatter(-1, top_idx, top_acts)
        assert (husai_sae.encode(x)[0] - dense).abs().max() < 1e-5
        assert (husai_sae(x)[0] - lib.decode(top_acts, top_idx)).abs().max() < 1e-5
        assert (husai_sae(x)[0] - lib(x).sae_out).abs().max() < 1e-5
    assert torch.equal(husai_sae.W_dec[0], lib.W_dec.detach())


@pytest.mark.parametrize("transcode", [False, True])
def test_sparsify_one_hookpoint(transcode: bool, tmp_path: Path) -> None:
    lib = _library_sae(0, transcode)
    lib.save_to_disk(tmp_path / "layers.3")
    sae = load(tmp_path / "layers.3")
    assert sae.transcoder == transcode
    _check(sae, lib)


def test_sparsify_multi_seed_run_directory(tmp_path: Path) -> None:
    """The Trainer's layout: `<run>/<hook>/seed<N>/` per seed, a run config.json, `best/`."""
    run = tmp_path / "run"
    libs = {}
    for hook in ("layers.0", "layers.1"):
        for seed in (0, 1, 10):
            libs[f"{hook}/seed{seed}"] = lib = _library_sae(seed)
            lib.save_to_disk(run / hook / f"seed{seed}")
    libs["layers.0/seed0"].save_to_disk(run / "best" / "layers.0" / "seed0")
    TrainConfig(SparseCoderConfig(num_latents=F, k=K), init_seeds=[0, 1, 10]).save_json(
        run / "config.json"
    )
    found = find_saes(run)
    assert [str(p.relative_to(run)) for p in found] == list(libs)
    for path in found:
        sae = load(path)
        assert sae.seeds == [int(path.name.removeprefix("seed"))]
        _check(sae, libs[str(path.relative_to(run))])
