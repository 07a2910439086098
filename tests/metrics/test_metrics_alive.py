"""alive_hungarian_mcc against brute force over all one-to-one matchings, and
seed_coupling's reading of configs."""

from __future__ import annotations

import itertools

import pytest
import torch

from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.metrics import alive_hungarian_mcc, hungarian_mcc
from husai.sae.coupling import seed_coupling


def _brute(a: torch.Tensor, b: torch.Tensor, alive_a, alive_b) -> float:
    """Max over every injective map of rows to columns (the smaller side onto the larger) of
    the summed |cos|, dead rows and columns contributing 0; / min size."""
    ua = a / a.norm(dim=1, keepdim=True)
    ub = b / b.norm(dim=1, keepdim=True)
    sim = (ua @ ub.T).abs() * alive_a[:, None] * alive_b[None, :]
    if len(a) > len(b):
        sim = sim.T
    n, m = sim.shape
    best = max(
        sum(float(sim[i, p[i]]) for i in range(n)) for p in itertools.permutations(range(m), n)
    )
    return best / n


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (6, 4)])
def test_alive_hungarian_equals_brute_force(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    for trial in range(4):
        a = torch.randn(shape[0], 3, generator=g)
        b = torch.randn(shape[1], 3, generator=g)
        alive_a = torch.rand(shape[0], generator=g) > 0.3
        alive_b = torch.rand(shape[1], generator=g) > 0.3
        got = alive_hungarian_mcc(a, b, alive_a, alive_b)
        assert got == pytest.approx(_brute(a, b, alive_a, alive_b), abs=1e-6), trial


def test_alive_hungarian_all_alive_is_hungarian_and_none_alive_is_zero() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)
    yes, no = torch.ones(7, dtype=torch.bool), torch.zeros(7, dtype=torch.bool)
    assert alive_hungarian_mcc(a, b, yes, yes) == pytest.approx(hungarian_mcc(a, b), abs=1e-6)
    assert alive_hungarian_mcc(a, b, no, yes) == 0.0
    # parked copies: the same dead rows in both seeds count for nothing
    half = torch.tensor([True] * 3 + [False] * 4)
    assert alive_hungarian_mcc(a, a, half, half) == pytest.approx(3 / 7, abs=1e-6)


def test_alive_hungarian_rejects_a_mask_of_the_wrong_length() -> None:
    with pytest.raises(HusaiError, match="alive_a must be bool"):
        alive_hungarian_mcc(torch.randn(3, 2), torch.randn(3, 2), [True, False], [True] * 3)


def test_seed_coupling_reads_the_config() -> None:
    assert seed_coupling(SAEConfig())["independent"] is True
    assert seed_coupling(SAEConfig(balance_rate=0.01))["independent"] is True
    joint = seed_coupling(SAEConfig(consistency_penalty="joint", consistency_lambda=10))
    assert joint["independent"] is False and "joint" in joint["couplings"][0]
    # λ = 0 trains without the penalty: independent
    assert seed_coupling(SAEConfig(consistency_penalty="reference"))["independent"] is True
    data = seed_coupling(SAEConfig(init="data"))
    assert data["independent"] is True and "init data" in data["caveats"][0]
    arche = seed_coupling(SAEConfig(architecture="archetypal"))
    assert arche["independent"] is True and "archetypal" in arche["caveats"][0]
