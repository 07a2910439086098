import math
from types import SimpleNamespace

import pytest
import torch

from husai.config import ToyModelConfig
from husai.errors import HusaiError
from husai.toy import (
    ToyTransformer,
    embedding_frequency_norms,
    fourier_basis,
    fourier_labels,
    fourier_summary,
    key_frequencies,
    logit_r2,
    make_dataset,
)
from husai.toy.fourier import discrete_log_order, primitive_root


@pytest.mark.parametrize("n", [5, 13, 12])
def test_basis_orthonormal(n: int) -> None:
    basis = fourier_basis(n)
    assert basis.shape == (n, n)
    torch.testing.assert_close(basis @ basis.T, torch.eye(n, dtype=basis.dtype))
    labels = fourier_labels(n)
    assert len(labels) == n and labels[:3] == ["const", "cos 1", "sin 1"]
    assert torch.allclose(basis[0], basis[0, 0].expand(n))


def _synthetic_embedding(n: int, freqs: list[int], d: int = 24, const: float = 0.0):
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    W = const * torch.ones(n, 1) * torch.randn(1, d, generator=gen, dtype=torch.float64)
    for k in freqs:
        w = 2 * math.pi * k / n
        W = W + torch.cos(w * x) * torch.randn(1, d, generator=gen, dtype=torch.float64)
        W = W + torch.sin(w * x) * torch.randn(1, d, generator=gen, dtype=torch.float64)
    return W


def test_synthetic_embedding_key_frequencies() -> None:
    p, freqs = 31, [3, 7, 12]
    W = _synthetic_embedding(p, freqs)
    noise = 1e-3 * torch.randn(p, 24, generator=torch.Generator().manual_seed(1))
    W_E = torch.cat([W + noise, torch.randn(1, 24)])  # extra `=` row is ignored
    fracs = embedding_frequency_norms(W_E, p)
    assert fracs.shape == ((p - 1) // 2,)
    assert key_frequencies(fracs, 0.9) == freqs
    assert abs(float(fracs.sum()) - 1) < 1e-4


def test_constant_counts_in_total_only() -> None:
    p = 13
    W = _synthetic_embedding(p, [2], const=1.0)
    fracs = embedding_frequency_norms(W)
    const_share = float((W.mean(0) ** 2).sum() * p / (W**2).sum())
    torch.testing.assert_close(float(fracs.sum()), 1 - const_share)


def test_mul_embedding_uses_discrete_log() -> None:
    p = 23
    g = primitive_root(p)
    assert sorted(pow(g, x, p) for x in range(p - 1)) == list(range(1, p))
    order = discrete_log_order(p)
    W_log = _synthetic_embedding(p - 1, [4, 11])  # frequency 11 is the Nyquist one for n = 22
    W = torch.zeros(p, W_log.shape[1], dtype=W_log.dtype)
    W[order] = W_log
    W[0] = 5.0  # the number 0 is outside Z_p^* and ignored
    assert key_frequencies(embedding_frequency_norms(W, p, op="mul"), 0.99) == [4, 11]


def test_key_frequencies_smallest_set() -> None:
    fracs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    assert key_frequencies(fracs, 0.9) == [2, 3, 4]
    assert key_frequencies(fracs, 0.8) == [2, 4]
    assert key_frequencies(fracs, 0.5) == [2]
    assert key_frequencies(torch.tensor([0.2, 0.2]), 0.9) == [1, 2]  # unreachable: all


class _FakeModel:
    """Logits = cos(w k s + phase) at frequency k, where s is the op's phase index."""

    def __init__(self, p: int, op: str, k: int) -> None:
        self.cfg = SimpleNamespace(p=p, op=op)
        self.p, self.op, self.k = p, op, k

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        p = self.p
        a, b, c = tokens[:, 0:1], tokens[:, 1:2], torch.arange(p).unsqueeze(0)
        if self.op == "mul":
            log = torch.zeros(p, dtype=torch.long)
            log[discrete_log_order(p)] = torch.arange(p - 1)
            s, n = log[a] + log[b] - log[c], p - 1
        else:
            s, n = (a + b - c if self.op == "add" else a - b - c), p
        return torch.cos(2 * math.pi * self.k * s / n + 0.3) + 0.5 * torch.randn(a.shape)


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_logit_r2_on_synthetic_logits(op: str) -> None:
    torch.manual_seed(0)
    model = _FakeModel(17, op, k=5)
    assert logit_r2(model, [5]) > 0.99  # the per-input offset is centred away
    assert logit_r2(model, [1, 2, 3]) < 0.01
    with pytest.raises(HusaiError, match="frequency 9"):
        logit_r2(model, [9])


def test_untrained_model_fails_fourier_check() -> None:
    model = ToyTransformer(ToyModelConfig(p=31, d_model=64, d_mlp=256), seed=0)
    s = fourier_summary(model, mass=0.9, max_key_freqs=4)
    assert not s["passed"]
    assert s["n_key_freqs"] > 8
    assert s["logit_r2"] < 0.5


def test_grokked_model_passes_fourier_check(grokked_toy) -> None:
    model, summary = grokked_toy
    assert summary["stopped_by"] == "criterion"
    assert summary["test_acc"] >= 0.99
    s = fourier_summary(model, mass=0.9, max_key_freqs=4)
    assert s["passed"] and s["n_key_freqs"] <= 4 and s["key_mass"] >= 0.9
    assert s["logit_r2"] > 0.85
    assert s == summary["fourier"]
    # The logits are explained by the key frequencies, not by just any frequencies.
    others = [k for k in range(1, 16) if k not in s["key_frequencies"]][:4]
    assert logit_r2(model, others) < 0.1


def test_fourier_dataset_order_matches_model_grid() -> None:
    tokens, labels = make_dataset(5, "sub")
    assert labels.view(5, 5)[3, 1].item() == 2
