"""SAE base, architectures, trainer (ensemble = sequential), save/load."""

from __future__ import annotations

import pytest
import torch
from _sae_truth import arch_config

from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.sae import REGISTRY, SAE, build_sae, load, save, train_sae

ARCHS = sorted(REGISTRY)


def _data(n: int = 512, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(32, d, generator=g)
    codes = torch.rand(n, 32, generator=g) * (torch.rand(n, 32, generator=g) < 0.1)
    return codes @ feats + 0.5


def _cfg(arch: str, **kw: object) -> SAEConfig:
    base = {
        "architecture": arch,
        "d_sae": 48,
        "k": 4,
        "epochs": 3,
        "batch_size": 64,
        "l1_coefficient": 1e-3,
        "lr": 3e-3,
    }
    return arch_config(**{**base, **kw})


def test_topk_forward_by_hand() -> None:
    sae = build_sae(SAEConfig(architecture="topk", d_sae=3, k=2), 2, [0])
    with torch.no_grad():
        sae.W_enc[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        sae.W_dec[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
        sae.b_enc[0] = torch.tensor([0.0, -5.0, 0.0])
        sae.b_dec[0] = torch.tensor([1.0, 1.0])
    x = torch.tensor([[3.0, 2.0]])  # centred (2, 1); pre = (2, -4, 3) → top-2 {0: 2, 2: 3}
    codes = sae.encode(x)[0]
    assert torch.allclose(codes, torch.tensor([[2.0, 0.0, 3.0]]))
    expected = torch.tensor([[1 + 2 + 1.8, 1 + 0 + 2.4]])
    assert torch.allclose(sae(x)[0], expected)


def test_relu_forward_and_penalty_by_hand() -> None:
    sae = build_sae(SAEConfig(architecture="relu", d_sae=2, l1_coefficient=0.5), 2, [0])
    with torch.no_grad():
        sae.W_enc[0] = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
        sae.W_dec[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        sae.b_dec.zero_()
        sae.b_enc.zero_()
    x = torch.tensor([[2.0, 1.0]])
    assert torch.allclose(sae.encode(x)[0], torch.tensor([[2.0, 0.0]]))
    loss, parts = sae.loss(sae._stack(x))
    # recon (2, 0): mse 1, penalty 0.5 * 2 * |row| = 1
    assert torch.allclose(parts["mse"], torch.tensor([1.0]))
    assert torch.allclose(loss, torch.tensor([2.0]))


def test_topk_sparse_training_path_matches_dense_autograd() -> None:
    sae = build_sae(SAEConfig(architecture="topk", d_sae=40, k=5), 12, [3, 4])
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    x = torch.randn(2, 20, 12)
    fast, _ = sae.loss(x)
    fast.sum().backward()
    g_fast = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    dense, _ = SAE.loss(sae, x)
    dense.sum().backward()
    assert torch.allclose(fast, dense, atol=1e-5)
    for n, p in sae.named_parameters():
        assert torch.allclose(g_fast[n], p.grad, atol=1e-5), n


@pytest.mark.parametrize("arch", ARCHS)
def test_ensemble_equals_one_at_a_time(arch: str) -> None:
    x = _data()
    seeds = [5, 6, 7]
    ens, _ = train_sae(_cfg(arch), x, seeds)
    for s, seed in enumerate(seeds):
        alone, _ = train_sae(_cfg(arch), x, [seed])
        for name, p in alone.named_parameters():
            assert torch.allclose(getattr(ens, name)[s], p[0], atol=1e-4), (arch, seed, name)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_reduces_loss_keeps_unit_decoder_and_is_deterministic(arch: str) -> None:
    x = _data()
    sae, info = train_sae(_cfg(arch, epochs=20), x, [1, 2])
    norms = sae.W_dec.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    init = build_sae(_cfg(arch), x.shape[1], [1, 2])
    init.init_b_dec(x.mean(0))
    with torch.no_grad():
        assert sae.loss(x)[1]["mse"].max() < 0.5 * init.loss(x)[1]["mse"].min()
    again, _ = train_sae(_cfg(arch, epochs=20), x, [1, 2])
    for name, p in sae.named_parameters():
        assert torch.equal(p, getattr(again, name)), name


def test_topk_l0_is_k() -> None:
    sae, _ = train_sae(_cfg("topk"), _data(), [0])
    with torch.no_grad():
        l0 = (sae.encode(_data()) > 0).sum(-1).float()
    assert l0.max() <= 4


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_is_exact(arch: str, tmp_path) -> None:
    sae, _ = train_sae(_cfg(arch, epochs=1), _data(), [11, 12])
    one = sae.select(1)
    save(one, tmp_path / "s", extra={"note": "x"})
    back = load(tmp_path / "s")
    assert type(back) is type(one) and back.seeds == [12] and back.cfg == one.cfg
    for name, p in one.named_parameters():
        assert torch.equal(p, getattr(back, name)), name
    x = _data(32)
    assert torch.equal(one(x), back(x))
    raw = __import__("json").loads((tmp_path / "s" / "cfg.json").read_text())
    assert raw["d_in"] == 16 and raw["d_sae"] == 48 and raw["husai"]["note"] == "x"
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (16, 48) and w["W_dec"].shape == (48, 16)


def test_load_rejects_bad_checkpoints(tmp_path) -> None:
    sae, _ = train_sae(_cfg("topk", epochs=1), _data(), [1])
    d = save(sae, tmp_path / "ok")
    weights = d / "sae_weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(HusaiError, match="sae_weights.safetensors"):
        load(d)
    import pickle

    weights.write_bytes(pickle.dumps({"W_enc": 1}))
    with pytest.raises(HusaiError, match="not a valid safetensors"):
        load(d)
    with pytest.raises(HusaiError, match="not an SAE directory"):
        load(tmp_path / "missing")
    d2 = save(sae, tmp_path / "nan")
    from safetensors.torch import load_file, save_file

    w = load_file(str(d2 / "sae_weights.safetensors"))
    w["W_dec"][0, 0] = float("nan")
    save_file(w, str(d2 / "sae_weights.safetensors"))
    with pytest.raises(HusaiError, match="NaN"):
        load(d2)


def test_nan_activations_and_divergence_are_clear_errors() -> None:
    x = _data()
    x[3, 2] = float("nan")
    with pytest.raises(HusaiError, match="NaN/Inf"):
        train_sae(_cfg("topk"), x, [1])
    huge = _data() * 1e30
    with pytest.raises(HusaiError, match=r"seed 1: loss became NaN/Inf at step 0"):
        train_sae(_cfg("relu"), huge, [1, 2])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="k \\(64\\) must be ≤ d_sae \\(32\\)"):
        SAEConfig(d_sae=32, k=64)
    with pytest.raises(ValueError, match="unknown architecture"):
        SAEConfig(architecture="nope")
    assert SAEConfig(d_sae=None, expansion_factor=2.0).resolve(16).d_sae == 32
