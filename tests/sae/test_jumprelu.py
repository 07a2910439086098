"""JumpReLU training: forward/loss/STE gradients by hand, ground-truth recovery, save/load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _sae_truth import recovery_l0_ev, train_on_synthetic_truth

from husai.config import SAEConfig
from husai.sae import build_sae, load, save

# matched on the synthetic truth below (true L0 = 2): gives L0 2.50, MCC 0.88, EV 0.92
TARGET_L0 = 2.5
CFG = SAEConfig(
    architecture="jumprelu",
    d_sae=64,
    epochs=30,
    batch_size=256,
    lr=3e-3,
    l0_coefficient=0.07,
    jumprelu_bandwidth=0.05,
    jumprelu_init_threshold=0.3,
)


def test_forward_loss_and_threshold_gradient_by_hand() -> None:
    cfg = SAEConfig(architecture="jumprelu", d_sae=3, l0_coefficient=0.3, jumprelu_bandwidth=0.5)
    sae = build_sae(cfg, 2, [0])
    with torch.no_grad():
        sae.W_enc[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        sae.W_dec[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold[0] = torch.tensor([1.9, 1.0, 4.0])
    x = torch.tensor([[2.0, 0.5]])  # pre = (2, 0.5, 2.5): only latent 0 clears its threshold
    assert torch.allclose(sae.encode(x)[0], torch.tensor([[2.0, 0.0, 0.0]]))
    loss, parts = sae.loss(x.unsqueeze(0))
    # recon (2, 0): mse 0.25; L0 = 1
    assert torch.allclose(parts["mse"], torch.tensor([0.25]))
    assert torch.allclose(parts["l0"], torch.tensor([1.0]))
    assert torch.allclose(loss, torch.tensor([0.25 + 0.3]))
    loss.sum().backward()
    # ε = 0.5 · ‖x‖; latents 0 and 1 lie within ε/2 of θ, latent 2 does not.
    # θ0: code part −(θ/ε)·∂mse/∂code0 = 0 (residual ⟂ row 0); L0 part −λ/ε.
    # θ1: ∂mse/∂code1 = 2 (0 − 0.5) = −1 → +θ1/ε = 1/ε; L0 part −λ/ε.
    eps = 0.5 * math.sqrt(4.25)
    want = torch.tensor([[-0.3 / eps, (1.0 - 0.3) / eps, 0.0]])
    assert torch.allclose(sae.threshold.grad, want, atol=1e-6)
    # the L0 term passes no gradient into the encoder; the codes pass H(pre − θ)
    assert torch.allclose(sae.b_enc.grad, torch.zeros(1, 3))  # residual ⟂ row 0


def test_threshold_is_kept_non_negative() -> None:
    sae = build_sae(SAEConfig(architecture="jumprelu", d_sae=4), 3, [0])
    with torch.no_grad():
        sae.threshold.fill_(-1.0)
    sae.normalize_decoder()
    assert torch.equal(sae.threshold, torch.zeros(1, 4))


@pytest.fixture(scope="module")
def trained():
    return train_on_synthetic_truth(CFG)


def test_recovers_synthetic_truth_at_target_l0(trained) -> None:
    mcc, l0, ev = recovery_l0_ev(*trained)
    sae = trained[0]
    assert mcc >= 0.8, mcc
    assert abs(l0 - TARGET_L0) <= 0.2 * TARGET_L0, l0
    assert ev > 0.85, ev
    assert (sae.threshold > 0).all()


def test_save_load_exact_and_saelens_forward(trained, tmp_path: Path) -> None:
    sae, x, _ = trained
    save(sae, tmp_path / "s")
    back = load(tmp_path / "s")
    assert back.cfg == sae.cfg
    for name, p in sae.named_parameters():
        assert torch.equal(p, getattr(back, name)), name
    assert torch.equal(back(x[:64]), sae(x[:64]))
    sae_lens = pytest.importorskip("sae_lens", reason="needs the interop extra (sae-lens)")
    lib = sae_lens.SAE.load_from_disk(tmp_path / "s")
    with torch.no_grad():
        assert torch.allclose(lib.encode(x[:256]), sae.encode(x[:256])[0], atol=1e-5)
        assert torch.allclose(lib(x[:256]), sae(x[:256])[0], atol=1e-5)


# ---- the activation's kernels: native (one pass each way) and torch ops ------------------


def _brute_force(pre, theta, eps, g_codes, g_l0):
    """codes, L0 and the straight-through gradients of the module docstring, entry by entry
    in Python floats."""
    S, B, F = pre.shape
    codes, l0 = torch.zeros(S, B, F), torch.zeros(S, B)
    g_pre, g_theta = torch.zeros(S, B, F), torch.zeros(S, 1, F)
    for s in range(S):
        e = float(eps[s])
        for b in range(B):
            for f in range(F):
                p, t, g = float(pre[s, b, f]), float(theta[s, 0, f]), float(g_codes[s, b, f])
                on = p > t
                codes[s, b, f] = max(p, 0.0) if on else 0.0
                l0[s, b] += on
                g_pre[s, b, f] = g if on and p > 0 else 0.0
                if abs(p - t) < e / 2:
                    g_theta[s, 0, f] -= (t * g + float(g_l0[s, b])) / e
    return codes, l0, g_pre, g_theta


def _activation_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    S, B, F = 2, 9, 300  # F past one 256-column block of the native backward
    pre = torch.randint(-6, 7, (S, B, F), generator=g).float() / 4  # ties with θ, zeros
    pre[0, 0, :5] = torch.tensor([-0.0, 0.0, 0.25, 0.5, 0.75])
    theta = torch.randint(-1, 4, (S, 1, F), generator=g).float() / 4  # θ < 0 too (loaded SAEs)
    eps = torch.tensor([0.5, 1.0]).view(S, 1, 1)  # |pre − θ| = ε/2 exactly occurs: not near
    return pre, theta, eps, torch.randn(S, B, F, generator=g), torch.randn(S, B, generator=g)


@pytest.mark.parametrize("path", ["native", "torch"])
def test_activation_and_gradients_against_brute_force(path: str, monkeypatch) -> None:
    from husai.sae import native
    from husai.sae.architectures.jumprelu import _JumpReLU

    if path == "native" and native.library() is None:
        pytest.skip("no working C++ compiler (g++/c++) on this machine")
    if path == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    pre, theta, eps, g_codes, g_l0 = _activation_case()
    want = _brute_force(pre, theta, eps, g_codes, g_l0)
    pre.requires_grad_(True)
    theta.requires_grad_(True)
    codes, l0 = _JumpReLU.apply(pre, theta, eps)
    torch.autograd.backward([codes, l0], [g_codes, g_l0])
    assert torch.equal(codes, want[0]) and torch.equal(l0, want[1])
    assert torch.equal(pre.grad, want[2])
    torch.testing.assert_close(theta.grad, want[3], rtol=1e-5, atol=1e-5)


def test_native_activation_keeps_torch_semantics_and_is_thread_independent(monkeypatch) -> None:
    """NaN/inf propagate as torch's product does (not silently zeroed); the native θ
    gradient is the same for any thread count, and within float rounding of torch's."""
    from husai.sae import native

    if native.library() is None:
        pytest.skip("no working C++ compiler (g++/c++) on this machine")
    pre, theta, eps, g_codes, g_l0 = _activation_case(1)
    pre[1, 2, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0])
    g_codes[1, 3, 7] = float("nan")
    theta_SF = theta.reshape(2, -1)
    exact = {"rtol": 0.0, "atol": 0.0, "equal_nan": True}
    runs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append(native.jumprelu_backward(pre, theta_SF, eps, g_codes, g_l0))
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(runs[0], runs[1], **exact)
    fast = native.jumprelu_forward(pre, theta_SF)
    monkeypatch.setattr(native, "library", lambda: None)
    on = pre > theta
    torch.testing.assert_close(fast, (torch.relu(pre) * on, on.sum(-1).float()), **exact)
    assert fast[0][1, 2, :3].isnan().tolist() == [True, False, False]
    from husai.sae.architectures.jumprelu import _JumpReLU

    pre.requires_grad_(True)
    theta.requires_grad_(True)
    torch.autograd.backward(list(_JumpReLU.apply(pre, theta, eps)), [g_codes, g_l0])
    torch.testing.assert_close(runs[0][0], pre.grad, **exact)
    torch.testing.assert_close(
        runs[0][1], theta.grad.reshape(2, -1), rtol=1e-5, atol=1e-5, equal_nan=True
    )
    assert runs[0][1].isnan().sum() == 1  # the NaN gradient entry reaches its θ, as in torch
