"""Transcoders (input x at one hook, target y at another): forward by hand, every architecture
through the one trainer, ground-truth recovery, save/load, bad input, paired activations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _sae_truth import arch_config
from safetensors.torch import load_file

from husai.activations import (
    extract_toy,
    extract_toy_pair,
    load_activation_pair,
    load_activations,
    save_activation_pair,
    save_activations,
)
from husai.config import ActivationConfig, SAEConfig, ToyConfig, ToyModelConfig
from husai.errors import HusaiError
from husai.metrics import reconstruction_quality, recovery
from husai.sae import REGISTRY, SAE, build_sae, load, save, train_sae
from husai.synthetic import SyntheticConfig, generate

ARCHS = sorted(REGISTRY)
D_IN, D_OUT, F = 6, 4, 10
SAELENS_NAMES = {
    "relu": "transcoder",
    "jumprelu": "jumprelu_transcoder",
    "batchtopk": "jumprelu_transcoder",
    "matryoshka": "jumprelu_transcoder",
    "topk": "topk_transcoder",
    "hierarchical_topk": "topk_transcoder",
    "gated": "gated_transcoder",
    "archetypal": "topk_transcoder",
    "routesae": "routesae_transcoder",  # husai's own name (sae-lens has no RouteSAE)
}


def _pair(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, 6] with a nonzero mean and y [n, 4] a noisy nonlinear function of it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g) + 1.0
    y = torch.relu(x @ torch.randn(D_IN, D_OUT, generator=g)) + 0.1 * torch.randn(n, D_OUT)
    return x, y


def _cfg(arch: str, **kw: object) -> SAEConfig:
    base = {"architecture": arch, "d_sae": F, "k": 3, "epochs": 3, "batch_size": 64, "lr": 3e-3}
    return arch_config(**{**base, "l1_coefficient": 1e-2, "l0_coefficient": 1e-2, **kw})


def _tiny(arch: str, **kw: object) -> SAE:
    """d_in 2 → d_out 3 with hand-set weights."""
    sae = build_sae(arch_config(arch, d_sae=3, k=2, **kw), 2, [0], d_out=3)
    with torch.no_grad():
        sae.W_enc[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        sae.b_enc[0] = torch.tensor([0.0, -5.0, 0.0])
        sae.W_dec[0] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.0, 0.8]])
        sae.b_dec[0] = torch.tensor([1.0, 2.0, 3.0])
    return sae


@pytest.mark.parametrize(("arch", "penalty"), [("topk", 0.0), ("relu", 4.0)])
def test_forward_and_loss_by_hand(arch: str, penalty: float) -> None:
    sae = _tiny(arch, l1_coefficient=0.5)
    assert sae.transcoder and (sae.d_in, sae.d_out) == (2, 3)
    x = torch.tensor([[3.0, 2.0]])  # not centred: pre = (3, -3, 5) → codes (3, 0, 5)
    assert torch.equal(sae.encode(x)[0], torch.tensor([[3.0, 0.0, 5.0]]))
    out = torch.tensor([[3 + 3 + 1.0, 2.0, 4 + 3.0]])  # 3·row0 + 5·row2 + b_dec
    assert torch.allclose(sae(x)[0], out)
    y = torch.tensor([[7.0, 3.0, 5.0]])  # error (0, -1, 2): MSE 5
    loss, parts = sae.loss(x, y)
    assert torch.allclose(parts["mse"], torch.tensor([5.0]))
    assert torch.allclose(loss, torch.tensor([5.0 + penalty]))  # ReLU: 0.5 · (3 + 5)


def test_sae_loss_with_y_equal_x_is_unchanged() -> None:
    sae = build_sae(SAEConfig(architecture="topk", d_sae=F, k=3), D_IN, [0, 1])
    x = torch.randn(2, 16, D_IN)
    assert not sae.transcoder and sae.d_out == D_IN
    assert torch.equal(sae.loss(x)[0], sae.loss(x, x)[0])


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_paths_match_dense_autograd_with_a_target(arch: str) -> None:
    sae = build_sae(arch_config(arch, d_sae=40, k=5), 12, [3, 4], d_out=7)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    x, y = torch.randn(2, 20, 12), torch.randn(2, 20, 7)
    fast, _ = sae.loss(x, y)
    fast.sum().backward()
    g_fast = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
    sae.zero_grad()
    pre = sae.pre_acts(x).relu()
    if arch == "topk":
        codes = pre * torch.zeros_like(pre).scatter_(-1, pre.topk(5, dim=-1).indices, 1.0)
    else:
        S, B, _ = pre.shape
        keep = torch.zeros_like(pre).reshape(S, -1)
        keep.scatter_(1, pre.reshape(S, -1).topk(5 * B, dim=-1).indices, 1.0)
        codes = pre * keep.view_as(pre)
    dense = (sae.decode(codes) - y).pow(2).sum(-1).mean(-1)
    dense.sum().backward()
    assert torch.allclose(fast, dense, atol=1e-5)
    for n, g in g_fast.items():
        assert torch.allclose(g, getattr(sae, n).grad, atol=1e-5), n


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_trains_as_a_transcoder(arch: str) -> None:
    x, y = _pair()
    extra = {"auxk_coefficient": 1 / 32, "dead_tokens_threshold": 64} if arch == "topk" else {}
    ens, info = train_sae(_cfg(arch, **extra), x, [5, 6], y_ND=y)
    assert ens.transcoder and ens.W_dec.shape == (2, F, D_OUT) and ens.b_dec.shape == (2, D_OUT)
    assert ens(x).shape == (2, len(x), D_OUT)
    norms = ens.W_dec.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    init = build_sae(_cfg(arch), D_IN, [5, 6], d_out=D_OUT)
    init.fit_init(x, y)
    with torch.no_grad():
        assert ens.loss(x, y)[1]["mse"].max() < init.loss(x, y)[1]["mse"].min()
        if arch in ("batchtopk", "matryoshka"):  # θ calibrated on the (uncentred) inputs
            assert ((ens.encode(x) > 0).sum((1, 2)) == 3 * len(x)).all()
    for s, seed in enumerate([5, 6]):  # the ensemble is the seeds trained one at a time
        alone, _ = train_sae(_cfg(arch, **extra), x, [seed], y_ND=y)
        for name, p in alone.named_parameters():
            assert torch.allclose(getattr(ens, name)[s], p[0], atol=1e-4), (seed, name)
    again, _ = train_sae(_cfg(arch, **extra), x, [5, 6], y_ND=y)
    for name, p in ens.named_parameters():
        assert torch.equal(p, getattr(again, name)), name


def test_topk_transcoder_recovers_the_output_dictionary() -> None:
    """x = z D_in, y = z D_out for sparse codes z: the decoder rows find D_out."""
    truth = SyntheticConfig(n_features=32, d=16, k_active=2, n_samples=8000, noise_std=0)
    x, _, z = generate(truth, return_codes=True)
    D_out = torch.randn(32, 12, generator=torch.Generator().manual_seed(1))
    D_out /= D_out.norm(dim=1, keepdim=True)
    y = z @ D_out
    cfg = SAEConfig(architecture="topk", d_sae=32, k=2, epochs=10, batch_size=128, lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is several times faster
    try:
        sae, _ = train_sae(cfg, x, [0], y_ND=y)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        codes = sae.encode(x)
        q = reconstruction_quality(y, sae.decode(codes), codes)[0]
    assert recovery(D_out, sae.W_dec[0].detach())["hungarian_mcc"] >= 0.8
    assert abs(q["l0"] - 2) <= 0.4, q
    assert q["explained_variance"] > 0.6, q


def _randomize(sae: SAE) -> SAE:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        if hasattr(sae, "threshold"):
            sae.threshold.abs_()
    return sae


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_is_exact(arch: str, tmp_path: Path) -> None:
    ens = _randomize(build_sae(_cfg(arch), D_IN, [3, 4], d_out=D_OUT))
    ens.hook_name, ens.hook_name_out = "blocks.0.resid_mid", "blocks.0.mlp_out"
    one = ens.select(1)
    assert one.transcoder and one.d_out == D_OUT and one.hook_name_out == "blocks.0.mlp_out"
    save(one, tmp_path / "t")
    back = load(tmp_path / "t")
    assert type(back) is type(one) and back.cfg == one.cfg and back.seeds == [4]
    assert back.transcoder and (back.d_in, back.d_out) == (D_IN, D_OUT)
    assert (back.hook_name, back.hook_name_out) == ("blocks.0.resid_mid", "blocks.0.mlp_out")
    for name, p in one.named_parameters():
        assert torch.equal(p, getattr(back, name)), name
    x, _ = _pair(32)
    assert torch.equal(back(x), one(x))
    raw = json.loads((tmp_path / "t" / "cfg.json").read_text())
    assert raw["architecture"] == SAELENS_NAMES[arch] and raw["d_out"] == D_OUT
    assert raw["apply_b_dec_to_input"] is False and raw["hook_name_out"] == "blocks.0.mlp_out"
    w = load_file(str(tmp_path / "t" / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (D_IN, F) and w["W_dec"].shape == (F, D_OUT)
    assert w["b_dec"].shape == (D_OUT,)
    save(build_sae(_cfg(arch), D_IN, [0]), tmp_path / "sae", hook_name="blocks.0.resid_mid")
    raw = json.loads((tmp_path / "sae" / "cfg.json").read_text())  # an SAE: no d_out
    assert "d_out" not in raw and "hook_name_out" not in raw and raw["apply_b_dec_to_input"]
    assert not load(tmp_path / "sae").transcoder


def test_bad_targets_are_clear_errors() -> None:
    x, y = _pair()
    cfg = _cfg("topk")
    with pytest.raises(HusaiError, match=r"different row counts \(256 vs 255\)"):
        train_sae(cfg, x, [0], y_ND=y[:-1])
    y_nan = y.clone()
    y_nan[7, 1] = float("nan")
    with pytest.raises(HusaiError, match="targets contain NaN/Inf"):
        train_sae(cfg, x, [0], y_ND=y_nan)
    with pytest.raises(HusaiError, match="targets must be a non-empty"):
        train_sae(cfg, x, [0], y_ND=y[:, 0])
    sae = build_sae(cfg, D_IN, [0], d_out=D_OUT)
    with pytest.raises(ValueError, match="needs its target"):
        sae.loss(x)
    with pytest.raises(ValueError, match="expected"):
        sae.loss(x, x)  # width d_in, not d_out


def test_extract_toy_pair_same_rows_and_file_round_trip(tmp_path: Path) -> None:
    from husai.toy import ToyTransformer

    toy = ToyConfig(model=ToyModelConfig(p=11, d_model=16, n_heads=2, d_mlp=32))
    model = ToyTransformer(toy.model, seed=0)
    blk = model.blocks[0]
    for position in ("answer", "all"):
        cfg = ActivationConfig(hook="blocks.0.resid_mid", position=position, split="train")
        x, y = extract_toy_pair(model, toy, cfg, "blocks.0.mlp_post")
        assert x.shape[1] == 16 and y.shape[1] == 32 and len(x) == len(y)
        assert torch.equal(x, extract_toy(model, toy, cfg))
        post = cfg.model_copy(update={"hook": "blocks.0.mlp_post"})
        assert torch.equal(y, extract_toy(model, toy, post))
        with torch.no_grad():  # same rows: mlp_post = ReLU(resid_mid W_in + b_in)
            assert torch.allclose(y, torch.relu(x @ blk.W_in + blk.b_in), atol=1e-5)
    path = save_activation_pair(tmp_path / "pair.safetensors", x, y, {"target_hook": "post"})
    x2, y2, meta = load_activation_pair(path)
    assert torch.equal(x2, x) and torch.equal(y2, y)
    assert meta["d"] == "16" and meta["d_out"] == "32" and meta["target_hook"] == "post"
    assert torch.equal(load_activations(path)[0], x)
    single = save_activations(tmp_path / "single.safetensors", x, {})
    with pytest.raises(HusaiError, match="no 'targets' tensor"):
        load_activation_pair(single)
    with pytest.raises(HusaiError, match="same n"):
        save_activation_pair(tmp_path / "bad.safetensors", x, y[:-1], {})
