"""BatchTopK and Matryoshka: forward by hand, synthetic recovery, threshold, sae-lens load."""

from __future__ import annotations

import pytest
import torch
from _sae_truth import arch_config, gradient_test_inputs

from husai.metrics.recovery import recovery
from husai.sae import build_sae, load, save, train_sae
from husai.synthetic import SyntheticConfig, generate


def _tiny(arch: str, **kw: object):
    sae = build_sae(arch_config(arch, d_sae=3, k=1, **kw), 2, [0])
    with torch.no_grad():
        sae.W_enc[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        sae.W_dec[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_batchtopk_training_codes_and_inference_by_hand() -> None:
    sae = _tiny("batchtopk")
    # pre-activations: x0 = (3, 1) → (3, 1, 4); x1 = (0.5, 0) → (0.5, 0, 0.5)
    x = torch.tensor([[3.0, 1.0], [0.5, 0.0]])
    codes = sae.batch_encode_dense(x)[0]  # k·B = 2 largest of the batch: 4 and 3, both in row 0
    assert torch.equal(codes, torch.tensor([[3.0, 0.0, 4.0], [0.0, 0.0, 0.0]]))
    loss, parts = sae.loss(x)
    recon0 = torch.tensor([3 + 2.4, 3.2])
    mse = ((recon0 - x[0]).pow(2).sum() + x[1].pow(2).sum()) / 2
    assert torch.allclose(loss, mse.view(1)) and parts["min_kept"].item() == 3.0
    assert parts["fired"].tolist() == [[True, False, True]]
    sae.after_step(parts, 2)  # first update sets θ to the smallest kept activation
    assert torch.equal(sae.threshold, torch.full((1, 3), 3.0))
    sae.after_step({**parts, "min_kept": torch.tensor([5.0])}, 2)  # then a running mean
    assert torch.allclose(sae.threshold, torch.full((1, 3), 4.0))
    with torch.no_grad():  # inference: JumpReLU at θ = 4 keeps only pre > 4
        assert torch.equal(sae.encode(torch.tensor([[3.0, 2.0]]))[0], torch.tensor([[0, 0, 5.0]]))


def test_matryoshka_prefix_losses_by_hand() -> None:
    sae = _tiny("matryoshka", prefix_sizes=(1 / 3, 2 / 3))
    assert sae.prefixes == [1, 2, 3]
    x = torch.tensor([[3.0, 1.0], [0.5, 0.0]])
    loss, parts = sae.loss(x)
    # kept: latent 2 (4) and latent 0 (3) of row 0. Prefix {0}, {0,1}: recon0 = (3, 0);
    # full: (5.4, 3.2); row 1 reconstructs 0 everywhere.
    x0, x1 = x[0], x[1].pow(2).sum()
    inner = ((torch.tensor([3.0, 0.0]) - x0).pow(2).sum() + x1) / 2
    full = ((torch.tensor([5.4, 3.2]) - x0).pow(2).sum() + x1) / 2
    assert torch.allclose(parts["prefix_mse"][:, 0], torch.stack([inner, inner, full]))
    assert torch.allclose(loss, (2 * inner + full).view(1)) and torch.allclose(parts["mse"], full)


def _dense_reference_loss(sae, x: torch.Tensor, n: int) -> torch.Tensor:
    """Plain autograd: the n largest pre-activations of each seed's batch (ties to the lower
    flat index, a stable sort), ReLU'd, as dense codes; each prefix's MSE (Matryoshka:
    summed; BatchTopK: the full dictionary only)."""
    pre = sae.pre_acts(x)
    S, B, F = pre.shape
    idx = pre.reshape(S, -1).sort(dim=-1, descending=True, stable=True).indices[:, :n]
    keep = torch.zeros(S, B * F).scatter_(1, idx, 1.0).view(S, B, F)
    codes = pre.relu() * keep
    ends = getattr(sae, "prefixes", [F])
    loss = 0
    for m in ends:
        recon = torch.baddbmm(sae.b_dec.unsqueeze(1), codes[..., :m], sae.W_dec[:, :m])
        loss = loss + (recon - x).pow(2).sum(-1).mean(-1)
    return loss


@pytest.mark.parametrize(
    ("arch", "case"),
    [
        ("batchtopk", "random"),
        ("batchtopk", "ties"),
        ("batchtopk", "n = B·F"),
        ("matryoshka", "random"),
        ("matryoshka", "ties"),
    ],
)
def test_sparse_path_matches_dense_autograd(arch: str, case: str) -> None:
    k = 40 if case == "n = B·F" else 5
    extra = {"prefix_sizes": (0.1, 0.25, 0.5)} if arch == "matryoshka" else {}
    sae = build_sae(arch_config(arch, d_sae=40, k=k, **extra), 12, [3, 4])
    x = gradient_test_inputs(sae, (2, 20, 12), seed=6, ties=case == "ties")
    fast, _ = sae.loss(x)
    fast.sum().backward()
    g_fast = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
    sae.zero_grad()
    dense = _dense_reference_loss(sae, x, k * 20)
    dense.sum().backward()
    assert torch.allclose(fast, dense, atol=1e-5)
    for n, grad in g_fast.items():
        assert torch.allclose(grad, getattr(sae, n).grad, atol=1e-5), n


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
def test_threshold_calibrated_so_inference_l0_is_k(arch: str) -> None:
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    sae, _ = train_sae(arch_config(arch, d_sae=24, k=3, epochs=2), x, [1, 2])
    with torch.no_grad():
        pre = sae.pre_acts(x)
        codes = sae.encode(x)
    for s in range(2):  # brute force: θ is the (k·n + 1)-th largest pre-activation
        theta = pre[s].flatten().sort(descending=True).values[3 * 300]
        assert sae.threshold[s].eq(theta).all()
        assert (codes[s] > 0).sum() == 3 * 300


@pytest.fixture(scope="module")
def synthetic():
    cfg = SyntheticConfig(n_features=32, d=16, k_active=2, n_samples=8000, noise_std=0)
    return generate(cfg)


@pytest.mark.parametrize(
    ("arch", "extra"), [("batchtopk", {}), ("matryoshka", {"prefix_sizes": (0.5, 1.0)})]
)
def test_recovers_synthetic_ground_truth(arch: str, extra: dict, synthetic) -> None:
    x, F_true, _ = synthetic
    cfg = arch_config(arch, d_sae=64, k=2, epochs=10, batch_size=128, lr=3e-3, **extra)
    sae, _ = train_sae(cfg, x, [0])
    with torch.no_grad():
        l0 = (sae.encode(x) > 0).sum(-1).float().mean()
    assert abs(l0 - 2) <= 0.4, l0  # inference (threshold) L0 within 20% of k
    assert recovery(F_true, sae.W_dec[0].detach())["hungarian_mcc"] >= 0.8


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
def test_saelens_loads_as_jumprelu(arch: str, tmp_path) -> None:
    sae_lens = pytest.importorskip("sae_lens", reason="needs the interop extra (sae-lens)")
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    sae, _ = train_sae(arch_config(arch, d_sae=24, k=3, epochs=3), x, [1])
    assert sae.threshold[0, 0] > 0
    save(sae, tmp_path / "s")
    back = load(tmp_path / "s")
    assert type(back) is type(sae) and torch.equal(back.threshold, sae.threshold)
    lib = sae_lens.SAE.load_from_disk(tmp_path / "s")
    assert type(lib).__name__ == "JumpReLUSAE"
    with torch.no_grad():
        f = lib.encode(x)
        assert (sae.encode(x)[0] - f).abs().max() < 1e-5 and (f > 0).any()
        assert (sae(x)[0] - lib(x)).abs().max() < 1e-5
