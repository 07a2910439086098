"""RouteSAE: shapes, routing and target by brute force, n_layers 1 = TopK, learning the
routing on synthetic data, ensemble = seeds alone, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _sae_truth import arch_config
from safetensors.torch import load_file

from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.sae import build_sae, load, save, train_sae

L, D, F = 3, 4, 10


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is several times faster
    yield
    torch.set_num_threads(threads)


def _cfg(**kw: object) -> SAEConfig:
    base = {"architecture": "routesae", "n_layers": L, "d_sae": F, "k": 3, "epochs": 2}
    return SAEConfig.model_validate({**base, "batch_size": 32, "lr": 3e-3, **kw})


def _random(sae):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        sae.normalize_decoder()
    return sae


def test_shapes_and_refusals() -> None:
    sae = build_sae(_cfg(), L * D, [1, 2])
    assert (sae.d_in, sae.d_out, sae.d_layer, sae.n_layers) == (L * D, D, D, L)
    assert sae.W_enc.shape == (2, F, D) and sae.W_dec.shape == (2, F, D)
    assert sae.b_dec.shape == (2, D) and sae.W_router.shape == (2, L, D)
    x = torch.randn(7, L * D)
    assert sae.encode(x).shape == (2, 7, F) and sae(x).shape == (2, 7, D)
    assert sae.reconstruction_target(x).shape == (2, 7, D)
    layer, weight, u = sae.route(x)
    assert layer.shape == weight.shape == (2, 7) and u.shape == (2, 7, D)
    assert ((weight >= 1 / L) & (weight <= 1)).all()
    assert (sae.encode(x) > 0).sum(-1).max() <= 3
    dist = sae.layer_distribution(x)
    assert dist.shape == (2, L) and torch.allclose(dist.sum(1), torch.ones(2))
    with pytest.raises(HusaiError, match="not n_layers"):
        build_sae(_cfg(), L * D + 1, [0])
    with pytest.raises(HusaiError, match="not a transcoder"):
        build_sae(_cfg(), L * D, [0], d_out=5)
    with pytest.raises(HusaiError, match="init: data"):
        build_sae(_cfg(init="data"), L * D, [0])


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_routing_and_target_by_brute_force(aggregation: str) -> None:
    sae = _random(build_sae(_cfg(aggregation=aggregation), L * D, [3, 4]))
    x = torch.randn(2, 9, L * D, generator=torch.Generator().manual_seed(1))
    layer, weight, u = sae.route(x)
    loss, parts = sae.loss(x)
    with torch.no_grad():
        codes, recon = sae.encode(x), sae(x)
    target = sae.reconstruction_target(x)
    for s in range(2):
        mse = 0.0
        for b in range(9):
            blocks = [x[s, b, i * D : (i + 1) * D] for i in range(L)]
            v = sum(blocks) if aggregation == "sum" else sum(blocks) / L
            logits = torch.stack([sae.W_router[s, i] @ v for i in range(L)]).detach()
            p = torch.softmax(logits, 0)
            best = int(p.argmax())
            assert int(layer[s, b]) == best and torch.isclose(weight[s, b], p[best])
            assert torch.equal(target[s, b], blocks[best])
            inp = p[best] * blocks[best]
            assert torch.allclose(u[s, b], inp, atol=1e-6)
            pre = (sae.W_enc[s] @ (inp - sae.b_dec[s]) + sae.b_enc[s]).detach()
            top = pre.topk(3)
            code = torch.zeros(F).scatter_(0, top.indices, top.values.clamp_min(0))
            assert torch.allclose(codes[s, b], code, atol=1e-5)
            out = code @ sae.W_dec[s].detach() + sae.b_dec[s].detach()
            assert torch.allclose(recon[s, b], out, atol=1e-5)
            mse += float((out - blocks[best]).pow(2).sum()) / 9
        assert abs(float(parts["mse"][s]) - mse) < 1e-4 and torch.allclose(loss, parts["mse"])
    loss.sum().backward()  # the router learns through the input's scale p_{l*}
    assert sae.W_router.grad is not None and sae.W_router.grad.abs().sum() > 0


def test_one_layer_is_a_topk_sae() -> None:
    x = torch.randn(256, 6, generator=torch.Generator().manual_seed(2)) + 0.5
    route, _ = train_sae(_cfg(n_layers=1), x, [5, 6])
    topk, _ = train_sae(arch_config(**{**_cfg().model_dump(), "architecture": "topk"}), x, [5, 6])
    for name, p in topk.named_parameters():
        assert torch.allclose(getattr(route, name), p, atol=1e-6), name
    assert torch.equal(route.route(x)[1], torch.ones(2, len(x)))


def _layered(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of 3 layers × 16: each token's sparse signal (features of a shared dictionary, the
    subset f ≡ l mod 3 for layer l) lives in one known layer l; the others carry small noise."""
    g = torch.Generator().manual_seed(seed)
    n_feats, d = 24, 16
    feats = torch.randn(n_feats, d, generator=g)
    feats /= feats.norm(dim=1, keepdim=True)
    layer = torch.randint(3, (n,), generator=g)
    own = (torch.arange(n_feats) % 3).unsqueeze(0) == layer.unsqueeze(1)
    codes = 3 * torch.rand(n, n_feats, generator=g) * (torch.rand(n, n_feats, generator=g) < 0.25)
    x = 0.1 * torch.randn(n, 3, d, generator=g)
    x[torch.arange(n), layer] += (codes * own) @ feats
    return x.reshape(n, 3 * d), layer


def test_router_learns_the_layer_holding_the_signal() -> None:
    x, layer = _layered(2000)
    cfg = _cfg(d_sae=48, k=4, epochs=5, batch_size=64)
    before = build_sae(cfg, x.shape[1], [0])
    sae, _ = train_sae(cfg, x, [0])
    with torch.no_grad():
        acc_before = (before.route(x)[0][0] == layer).float().mean()
        acc = (sae.route(x)[0][0] == layer).float().mean()
        signal = x.view(len(x), 3, 16)[torch.arange(len(x)), layer]
        ev = 1 - (sae(x)[0] - signal).pow(2).sum() / (signal - signal.mean(0)).pow(2).sum()
    assert acc_before < 0.5 and acc > 0.6, (acc_before, acc)  # chance: 1/3
    assert ev > 0.5, ev


def test_ensemble_equals_seeds_alone() -> None:
    x, _ = _layered(256, seed=1)
    cfg = _cfg(d_sae=24, k=3, epochs=2, n_layers=3)
    ens, _ = train_sae(cfg, x, [7, 8])
    for s, seed in enumerate([7, 8]):
        alone, _ = train_sae(cfg, x, [seed])
        for name, p in alone.named_parameters():
            assert torch.allclose(getattr(ens, name)[s], p[0], atol=1e-5), (seed, name)


def test_fit_init_is_the_mean_layer_activation() -> None:
    x = torch.randn(64, L * D) + torch.arange(L * D).float()
    sae = build_sae(_cfg(), L * D, [0])
    sae.fit_init(x)
    assert torch.allclose(sae.b_dec[0], x.view(64, L, D).mean((0, 1)), atol=1e-5)


def test_save_load_round_trip(tmp_path: Path) -> None:
    ens = _random(build_sae(_cfg(aggregation="mean"), L * D, [3, 4]))
    one = ens.select(1)
    save(one, tmp_path / "r")
    back = load(tmp_path / "r")
    assert type(back) is type(one) and back.cfg == one.cfg and back.seeds == [4]
    assert (back.d_in, back.d_out, back.n_layers) == (L * D, D, L) and not back.transcoder
    for name, p in one.named_parameters():
        assert torch.equal(p, getattr(back, name)), name
    x = torch.randn(16, L * D)
    assert torch.equal(back(x), one(x)) and torch.equal(back.route(x)[0], one.route(x)[0])
    raw = json.loads((tmp_path / "r" / "cfg.json").read_text())
    assert raw["architecture"] == "routesae" and raw["d_in"] == L * D and raw["n_layers"] == L
    w = load_file(str(tmp_path / "r" / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (D, F) and w["W_dec"].shape == (F, D)
    assert w["W_router"].shape == (L, D)
    # without husai's own config: k and n_layers from the file (aggregation: the default)
    raw.pop("husai")
    (tmp_path / "r" / "cfg.json").write_text(json.dumps(raw))
    bare = load(tmp_path / "r")
    assert bare.n_layers == L and bare.params.k == 3 and bare.d_in == L * D
    for name, p in one.named_parameters():
        assert torch.equal(p, getattr(bare, name)), name
