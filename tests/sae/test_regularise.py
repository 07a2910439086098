"""Consistency-regularised training: penalties by brute force, gradients, training effects."""

from __future__ import annotations

from itertools import combinations, permutations

import pytest
import torch
from _sae_truth import TRUTH

from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.metrics import pwmcc
from husai.sae import build_sae, train_sae
from husai.sae.regularise import ConsistencyRegulariser, train_reference
from husai.synthetic import generate


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is several times faster
    yield
    torch.set_num_threads(threads)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b).abs() / (a.norm() * b.norm())


def _best_matching(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean |cos| of the best one-to-one matching, by enumerating every injective map."""
    if len(a) > len(b):
        return _best_matching(b, a)
    return max(
        sum(float(_cos(a[i], b[j])) for i, j in enumerate(js)) / len(a)
        for js in permutations(range(len(b)), len(a))
    )


def test_reference_penalty_is_one_minus_mean_best_cos() -> None:
    w, ref = _rand(2, 5, 3), _rand(4, 3, seed=1)
    penalty, m = ConsistencyRegulariser("reference", 0.7, 1, ref)(w, 0)
    for s in range(2):
        best = sum(max(float(_cos(w[s, f], r)) for r in ref) for f in range(5)) / 5
        assert m[s].item() == pytest.approx(best, abs=1e-12)
        assert penalty[s].item() == pytest.approx(0.7 * (1 - best), abs=1e-12)


@pytest.mark.parametrize("n_ref", [3, 4, 5])  # fewer, as many and more reference rows
def test_assignment_penalty_is_the_best_permutation(n_ref: int) -> None:
    w, ref = _rand(2, 4, 3), _rand(n_ref, 3, seed=1)
    penalty, m = ConsistencyRegulariser("assignment", 2.0, 10, ref)(w, 0)
    for s in range(2):
        best = _best_matching(w[s], ref)
        assert m[s].item() == pytest.approx(best, abs=1e-9)
        assert penalty[s].item() == pytest.approx(2.0 * (1 - best), abs=1e-9)


def test_joint_penalty_is_the_mean_best_permutation_to_the_other_seeds() -> None:
    w = _rand(3, 4, 3)
    penalty, m = ConsistencyRegulariser("joint", 1.5, 10, None)(w, 0)
    best = {(s, t): _best_matching(w[s], w[t]) for s in range(3) for t in range(3) if s != t}
    for s in range(3):
        expect = sum(best[s, t] for t in range(3) if t != s) / 2
        assert m[s].item() == pytest.approx(expect, abs=1e-9)
        assert penalty[s].item() == pytest.approx(1.5 * (1 - expect), abs=1e-9)


@pytest.mark.parametrize("mode", ["reference", "assignment"])
def test_gradient_matches_finite_differences(mode: str) -> None:
    w = _rand(2, 4, 3).requires_grad_()
    reg = ConsistencyRegulariser(mode, 1.3, 1, _rand(5, 3, seed=1))
    assert torch.autograd.gradcheck(lambda v: reg(v, 0)[0], (w,))


def test_joint_gradient_is_that_of_the_pairwise_potential() -> None:
    """Detached partners: the summed loss's gradient is that of λ/(S−1)·Σ_{s<t}(1 − m_st)
    with both sides of every pair live (matchings fixed)."""
    S, F, lam = 3, 4, 1.5
    w = _rand(S, F, 3).requires_grad_()
    reg = ConsistencyRegulariser("joint", lam, 10, None)
    reg(w, 0)[0].sum().backward()
    v = w.detach().clone().requires_grad_()
    potential = sum(
        1 - sum(_cos(v[s, f], v[t, reg.partner[s, t, f]]) for f in range(F)) / F  # type: ignore[index]
        for s, t in combinations(range(S), 2)
    )
    (lam / (S - 1) * potential).backward()
    assert torch.allclose(w.grad, v.grad, atol=1e-12)


def test_matching_is_recomputed_every_n_steps_only() -> None:
    w, ref = _rand(1, 4, 3), _rand(4, 3, seed=1)
    reg = ConsistencyRegulariser("assignment", 1.0, 3, ref)
    reg(w, 0)
    first = reg.partner.clone()  # type: ignore[union-attr]
    shuffled = w[:, [1, 2, 3, 0]]
    reg(shuffled, 1)
    assert torch.equal(reg.partner, first)  # stale between recomputations
    reg(shuffled, 3)
    assert torch.equal(reg.partner, first[:, [1, 2, 3, 0]])


def _x() -> torch.Tensor:
    return generate(TRUTH)[0][:2000]


SMALL = dict(architecture="topk", d_sae=32, k=2, epochs=4, lr=3e-3)


@pytest.mark.parametrize("mode", ["reference", "assignment", "joint"])
def test_lambda_zero_trains_bit_identically(mode: str) -> None:
    x = _x()
    plain, _ = train_sae(SAEConfig(**{**SMALL, "epochs": 2}), x, [1, 2])
    ref = None if mode == "joint" else torch.randn(32, 16)
    cfg = SAEConfig(**{**SMALL, "epochs": 2}, consistency_penalty=mode, reassign_every=3)
    zero, info = train_sae(cfg, x, [1, 2], reference=ref)
    for name, p in plain.named_parameters():
        assert torch.equal(p, getattr(zero, name)), name
    assert info["consistency_penalty"] == [0.0, 0.0]
    assert all(0 < m <= 1 for m in info["consistency_mcc"])


@pytest.mark.parametrize("mode", ["reference", "assignment"])
def test_reference_penalty_raises_pwmcc_to_the_reference(mode: str) -> None:
    x = _x()
    ref = train_reference(SAEConfig(**SMALL), x, [0])
    scores = []
    for lam in (0.0, 3.0):
        cfg = SAEConfig(**SMALL, consistency_penalty=mode, consistency_lambda=lam)
        sae, info = train_sae(cfg, x, [1], reference=ref)
        scores.append(pwmcc(sae.W_dec[0].detach(), ref))
        assert len(info["consistency_penalty"]) == 1
    assert scores[1] > scores[0] + 0.05, scores


def test_joint_penalty_raises_cross_seed_pwmcc_and_is_deterministic() -> None:
    x = _x()

    def mean_pwmcc(lam: float) -> tuple[float, torch.Tensor]:
        cfg = SAEConfig(**SMALL, consistency_penalty="joint", consistency_lambda=lam)
        w = train_sae(cfg, x, [1, 2, 3])[0].W_dec.detach()
        return sum(pwmcc(w[s], w[t]) for s, t in combinations(range(3), 2)) / 3, w

    (base, _), (joint, w), (_, again) = mean_pwmcc(0.0), mean_pwmcc(3.0), mean_pwmcc(3.0)
    assert joint > base + 0.05, (base, joint)
    assert torch.equal(w, again)


def test_train_step_reports_the_penalty() -> None:
    from husai.sae.trainer import train_step

    sae = build_sae(SAEConfig(**SMALL), 16, [1, 2])
    reg = ConsistencyRegulariser("reference", 2.0, 1, torch.randn(8, 16))
    opt = torch.optim.Adam(sae.parameters())
    parts = train_step(sae, opt, _x()[:64], 0, consistency=reg)
    assert parts["consistency"].shape == (2,) and (parts["consistency"] > 0).all()
    assert torch.allclose(parts["consistency"], 2.0 * (1 - parts["consistency_mcc"]))


@pytest.mark.parametrize(
    ("mode", "seeds", "ref", "match"),
    [
        ("reference", [1], torch.randn(32, 15), r"must be \[n, 16\].*got \(32, 15\)"),
        ("reference", [1], torch.randn(32), r"must be \[n, 16\]"),
        ("reference", [1], torch.full((4, 16), float("nan")), "NaN/Inf or all-zero"),
        ("joint", [1], None, "'joint' needs at least 2 seeds"),
        ("joint", [1, 2], torch.randn(32, 16), "'joint' takes no reference"),
        ("none", [1], torch.randn(32, 16), "'none' takes no reference"),
    ],
)
def test_bad_setups_are_one_line_errors(mode: str, seeds: list, ref, match: str) -> None:
    cfg = SAEConfig(**SMALL, consistency_penalty=mode, consistency_lambda=1.0 * (mode != "none"))
    with pytest.raises(HusaiError, match=match) as e:
        train_sae(cfg, _x()[:64], seeds, reference=ref)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("mode", ["reference", "assignment"])
def test_without_a_reference_train_sae_trains_the_default_one(mode: str) -> None:
    from husai.sae.regularise import make_regulariser, train_reference

    cfg = SAEConfig(**SMALL, consistency_penalty=mode, consistency_lambda=1.0, reference_seed=9)
    x = _x()[:128]
    auto = train_sae(cfg, x, [1, 2])[0].W_dec
    given = train_sae(cfg, x, [1, 2], reference=train_reference(cfg, x, [1, 2]))[0].W_dec
    assert torch.equal(auto, given)
    with pytest.raises(HusaiError, match=f"'{mode}' needs a reference decoder"):
        make_regulariser(cfg, 2, 16, None)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="consistency_penalty is 'none'"):
        SAEConfig(consistency_lambda=1.0)
    with pytest.raises(ValueError):
        SAEConfig(consistency_penalty="joint", consistency_lambda=-1.0)
    with pytest.raises(ValueError):
        SAEConfig(consistency_penalty="joint", reassign_every=0)
    with pytest.raises(ValueError):
        SAEConfig(consistency_penalty="anchor")
