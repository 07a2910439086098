import json

import pytest
import torch
from pydantic import ValidationError

from husai.activations import load_activations, save_activations
from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.metrics import pairwise, random_dictionaries
from husai.metrics.recovery import recovery
from husai.sae import train_sae
from husai.synthetic import (
    SyntheticConfig,
    effective_rank,
    firing_probabilities,
    generate,
    load_ground_truth,
    max_coherence,
    welch_bound,
    write_synthetic,
)

SMALL = dict(n_features=24, d=12, n_samples=3000, k_active=2.0)


def test_defaults_are_the_validation_setting():
    c = SyntheticConfig()
    assert (c.n_features, c.d, c.n_samples, c.k_active, c.regime) == (64, 32, 20_000, 3.0, "sparse")
    assert c.coherence is None and c.noise_std == 0.01 and c.frequency == "uniform"


def test_deterministic_shapes_and_no_global_rng():
    cfg = SyntheticConfig(**SMALL, seed=3)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    x, F, codes = generate(cfg, return_codes=True)
    assert torch.equal(torch.random.get_rng_state(), before)
    x2, F2, none = generate(cfg)
    assert none is None and torch.equal(x, x2) and torch.equal(F, F2)
    assert x.shape == (3000, 12) and F.shape == (24, 12) and codes.shape == (3000, 24)
    assert x.dtype == F.dtype == codes.dtype == torch.float32
    torch.testing.assert_close(F.norm(dim=1), torch.ones(24))
    x3, F3, _ = generate(cfg.model_copy(update={"seed": 4}))
    assert not torch.equal(F, F3) and not torch.equal(x, x3)


def test_sparse_codes_and_noise():
    cfg = SyntheticConfig(**{**SMALL, "n_samples": 20_000}, noise_std=0.0)
    x, F, codes = generate(cfg, return_codes=True)
    torch.testing.assert_close(x, codes @ F)
    assert (codes >= 0).all()
    assert (codes > 0).sum(1).float().mean().item() == pytest.approx(2.0, abs=0.05)
    noisy, _, _ = generate(cfg.model_copy(update={"noise_std": 0.1}))
    assert (noisy - x).std().item() == pytest.approx(0.1, rel=0.05)  # same codes, added noise


@pytest.mark.parametrize("magnitude", ["half_normal", "exponential", "uniform", "constant"])
def test_magnitudes_non_negative(magnitude):
    _, _, c = generate(SyntheticConfig(**SMALL, magnitude=magnitude), return_codes=True)
    active = c[c > 0]
    assert (c >= 0).all() and len(active) > 0
    if magnitude == "constant":
        assert (active == 1).all()
    if magnitude == "uniform":
        assert active.max() <= 1


def test_zipf_frequencies_sum_to_k_and_cap_at_one():
    p = firing_probabilities(SyntheticConfig(frequency="zipf", k_active=10, zipf_exponent=1.5))
    assert p.sum().item() == pytest.approx(10.0) and p.max() <= 1.0 and p[0] == 1.0
    assert (p[:-1] >= p[1:]).all()
    cfg = SyntheticConfig(**{**SMALL, "n_samples": 20_000}, frequency="zipf")
    _, _, c = generate(cfg, return_codes=True)
    torch.testing.assert_close(
        (c > 0).double().mean(0), firing_probabilities(cfg), atol=0.01, rtol=0
    )


def test_correlated_groups_keep_marginals_and_co_fire():
    cfg = SyntheticConfig(**{**SMALL, "n_samples": 20_000}, correlated=True, group_size=4)
    _, _, c = generate(cfg, return_codes=True)
    a = (c > 0).double()
    torch.testing.assert_close(a.mean(0), firing_probabilities(cfg), atol=0.01, rtol=0)
    corr = torch.corrcoef(a.T)
    same = torch.arange(24) // 4
    within = corr[(same[:, None] == same[None]) & ~torch.eye(24, dtype=torch.bool)]
    across = corr[same[:, None] != same[None]]
    assert within.min() > 0.3 and across.abs().max() < 0.05


def test_dense_regime_is_gaussian_with_every_feature_active():
    x, F, c = generate(SyntheticConfig(**SMALL, regime="dense", noise_std=0.0), return_codes=True)
    assert (c != 0).all() and (c < 0).any()
    cov = torch.cov(x.double().T)
    torch.testing.assert_close(cov, (F.T @ F).double(), atol=0.15, rtol=0.1)


@pytest.mark.parametrize("n,d,target", [(64, 32, 0.3), (64, 32, 0.7), (8, 16, 0.05), (40, 8, 0.6)])
def test_coherence_reaches_target(n, d, target):
    _, F, _ = generate(SyntheticConfig(n_features=n, d=d, n_samples=2, coherence=target))
    assert max_coherence(F) == pytest.approx(target, abs=1e-4)
    torch.testing.assert_close(F.norm(dim=1), torch.ones(n))


def test_config_errors():
    assert welch_bound(8, 16) == 0.0 and welch_bound(64, 32) == pytest.approx(0.1260, abs=1e-4)
    with pytest.raises(ValidationError, match="Welch"):
        SyntheticConfig(coherence=0.1)
    with pytest.raises(ValidationError, match="k_active"):
        SyntheticConfig(n_features=4, k_active=5)
    with pytest.raises(ValidationError):
        SyntheticConfig(magnitude="gaussian")
    with pytest.raises(ValidationError):
        SyntheticConfig(unknown=1)
    SyntheticConfig(n_features=4, k_active=5, regime="dense")  # k_active ignored when dense


def test_write_and_load_round_trip(tmp_path):
    cfg = SyntheticConfig(**SMALL, coherence=0.6)
    path = write_synthetic(cfg, tmp_path / "syn.safetensors")
    x, meta = load_activations(path)
    x0, F0, _ = generate(cfg)
    assert torch.equal(x, x0)
    assert meta["source"] == "synthetic" and meta["n"] == "3000" and meta["d"] == "12"
    assert SyntheticConfig.model_validate(json.loads(meta["config"])) == cfg
    assert float(meta["coherence"]) == pytest.approx(0.6, abs=1e-4)
    assert torch.equal(load_ground_truth(path), F0)
    plain = save_activations(tmp_path / "plain.safetensors", x, {"source": "test"})
    with pytest.raises(HusaiError, match="features"):
        load_ground_truth(plain)


def test_effective_rank():
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(20_000, 16, generator=g)
    r = effective_rank(iso)
    assert r["participation_ratio"] == pytest.approx(16, rel=0.02)
    assert r["n_components_0.99"] == 16
    low = torch.randn(5000, 3, generator=g) @ torch.randn(3, 16, generator=g)
    r = effective_rank(low)
    assert r["participation_ratio"] <= 3 + 1e-6 and r["n_components_0.99"] <= 3


def _train(cfg: SyntheticConfig, d_sae: int):
    x, F, _ = generate(cfg)
    sae_cfg = SAEConfig(architecture="topk", d_sae=d_sae, k=3, epochs=5, lr=3e-3)
    sae, _ = train_sae(sae_cfg, x, [1, 2, 3])
    W = [sae.W_dec[s].detach() for s in range(3)]
    rand = pairwise(random_dictionaries(3, d_sae, cfg.d, seed=0), hungarian=False)
    return F, W, pairwise(W, hungarian=False)["pwmcc"]["values"], rand["pwmcc"]["values"]


@pytest.mark.slow
def test_topk_recovers_sparse_ground_truth():
    """64 features in d = 32, 3 active on average: TopK (k = 3, 2x latents) recovers them."""
    F, W, pw, rand = _train(SyntheticConfig(), d_sae=128)
    for w in W:
        assert recovery(F, w)["hungarian_mcc"] >= 0.9
    assert min(pw) > max(rand) + 0.25  # measured: 0.80-0.81 vs 0.48


@pytest.mark.slow
def test_dense_regime_consistency_near_random():
    """Gaussian data: no features to find; PWMCC falls towards chance (0.60 vs 0.44)."""
    _, _, pw, rand = _train(SyntheticConfig(regime="dense"), d_sae=64)
    assert max(pw) < min(rand) + 0.25
