"""Gated SAE training: forward/loss by hand, ground-truth recovery, save/load, sae-lens."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _sae_truth import recovery_l0_ev, train_on_synthetic_truth

from husai.config import SAEConfig
from husai.sae import build_sae, load, save

# matched on the synthetic truth below (true L0 = 2): gives L0 3.23, MCC 0.84, EV 0.90
TARGET_L0 = 3.0
CFG = SAEConfig(
    architecture="gated", d_sae=64, epochs=20, batch_size=256, lr=3e-3, l1_coefficient=1.0
)


def test_forward_and_loss_by_hand() -> None:
    sae = build_sae(SAEConfig(architecture="gated", d_sae=2, l1_coefficient=0.5), 2, [0])
    with torch.no_grad():
        sae.W_enc[0] = torch.eye(2)
        sae.W_dec[0] = torch.eye(2)
        sae.b_dec.zero_()
        sae.b_enc[0] = torch.tensor([0.0, -1.0])  # b_gate
        sae.r_mag[0] = torch.tensor([math.log(2.0), 0.0])
        sae.b_mag[0] = torch.tensor([0.5, 0.0])
    x = torch.tensor([[2.0, 0.5]])
    # π_gate = (2, −0.5) → gate (1, 0); π_mag = (2·2 + 0.5, 0.5) → codes (4.5, 0)
    assert torch.allclose(sae.encode(x)[0], torch.tensor([[4.5, 0.0]]))
    loss, parts = sae.loss(x.unsqueeze(0))
    # mse ‖(2, .5) − (4.5, 0)‖² = 6.5; L1 0.5·ReLU(π_gate)=(2, 0) → 1; aux ‖(2, .5) − (2, 0)‖² = .25
    assert torch.allclose(parts["mse"], torch.tensor([6.5]))
    assert torch.allclose(parts["penalty"], torch.tensor([1.0]))
    assert torch.allclose(parts["aux"], torch.tensor([0.25]))
    assert torch.allclose(loss, torch.tensor([7.75]))


def test_aux_loss_does_not_train_the_decoder() -> None:
    sae = build_sae(SAEConfig(architecture="gated", d_sae=5, l1_coefficient=0.0), 3, [0])
    x = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(0))
    _, parts = sae.loss(x)
    full, _ = sae.loss(x)
    full.sum().backward()
    g_full = sae.W_dec.grad.clone()
    sae.zero_grad()
    codes = sae.encode(x)
    (sae.decode(codes) - x).pow(2).sum(-1).mean(-1).sum().backward()
    assert torch.allclose(g_full, sae.W_dec.grad, atol=1e-6)


@pytest.fixture(scope="module")
def trained():
    return train_on_synthetic_truth(CFG)


def test_recovers_synthetic_truth_at_target_l0(trained) -> None:
    mcc, l0, ev = recovery_l0_ev(*trained)
    assert mcc >= 0.8, mcc
    assert abs(l0 - TARGET_L0) <= 0.2 * TARGET_L0, l0
    assert ev > 0.85, ev


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
