"""Shared helper for the architecture tests (pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch

from husai.config import SAEConfig
from husai.sae import SAE, train_sae
from husai.synthetic import SyntheticConfig, generate


def arch_config(architecture: str, **fields: object) -> SAEConfig:
    """An SAEConfig for tests parametrised over architectures: the fields of other
    architectures (e.g. k for relu) are left out."""
    from husai.sae.registry import REGISTRY, field_owners

    own = REGISTRY[architecture].Params.model_fields
    kept = {k: v for k, v in fields.items() if k in own or k not in field_owners()}
    return SAEConfig.model_validate({**kept, "architecture": architecture})


TRUTH = SyntheticConfig(n_features=32, d=16, k_active=2, n_samples=8000, noise_std=0)


def train_on_synthetic_truth(cfg: SAEConfig) -> tuple[SAE, torch.Tensor, torch.Tensor]:
    """Train one seed on a small sparse data set with known features: (sae, x, true_FD)."""
    x, true_FD, _ = generate(TRUTH)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is several times faster
    try:
        sae, _ = train_sae(cfg, x, [0])
    finally:
        torch.set_num_threads(threads)
    return sae, x, true_FD


def recovery_l0_ev(sae: SAE, x: torch.Tensor, true_FD: torch.Tensor) -> tuple[float, float, float]:
    """(recovery Hungarian MCC, mean L0, explained variance) of a one-seed SAE on x."""
    from husai.metrics import recovery

    with torch.no_grad():
        codes = sae.encode(x)
        l0 = (codes > 0).sum(-1).float().mean().item()
        ev = 1 - (sae.decode(codes)[0] - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    return recovery(true_FD, sae.W_dec[0].detach())["hungarian_mcc"], l0, float(ev)


def gradient_test_inputs(sae: SAE, shape: tuple[int, ...], seed: int, ties: bool) -> torch.Tensor:
    """Inputs x of `shape` for a sparse-path-vs-dense-autograd test, with random biases set
    on `sae`; `ties`: integer encoder weights and inputs and zero biases instead, so that
    many pre-activations tie."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    with torch.no_grad():
        sae.b_enc.normal_(generator=g)
        sae.b_dec.normal_(generator=g)
        if ties:
            sae.W_enc.copy_(torch.randint(-1, 2, sae.W_enc.shape, generator=g).float())
            sae.b_enc.zero_()
            sae.b_dec.zero_()
            x = torch.randint(-1, 2, x.shape, generator=g).float()
    return x
