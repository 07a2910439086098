"""Next-token cross-entropy, accuracy and KL against brute-force loops over positions."""

from __future__ import annotations

import _metrics_brute as brute
import pytest
import torch

from husai.errors import HusaiError
from husai.metrics import (
    cross_entropy,
    kl_divergence,
    next_token_accuracy,
    prediction_mask,
    token_cross_entropy,
    token_kl,
)
from husai.metrics import next_token as nt


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g) * 3
    other = logits + torch.randn(3, 5, 7, generator=g)
    ids = torch.randint(0, 7, (3, 5), generator=g)
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[1, 3:] = 0  # right-padded
    mask[2, :2] = 0  # left-padded
    return logits, other, ids, mask


def test_cross_entropy_matches_brute_force(data) -> None:
    logits, _, ids, mask = data
    want = brute.next_token_ce(logits.tolist(), ids.tolist(), mask.tolist())
    assert cross_entropy(logits, ids, mask) == pytest.approx(want, rel=1e-12)
    ones = torch.ones_like(ids).tolist()
    assert cross_entropy(logits, ids) == pytest.approx(
        brute.next_token_ce(logits.tolist(), ids.tolist(), ones), rel=1e-12
    )
    # and torch's own cross-entropy on the shifted, masked predictions
    pred = prediction_mask(ids, mask)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1][pred].double(), ids[:, 1:][pred])
    assert cross_entropy(logits, ids, mask) == pytest.approx(float(ref), rel=1e-12)
    assert token_cross_entropy(logits, ids).dtype == torch.float64


def test_kl_matches_brute_force(data) -> None:
    logits, other, _, mask = data
    want = brute.next_token_kl(logits.tolist(), other.tolist(), mask.tolist())
    assert kl_divergence(logits, other, mask) == pytest.approx(want, rel=1e-10)
    assert kl_divergence(logits, logits, mask) == 0.0
    assert kl_divergence(logits, logits + 5.0) == pytest.approx(0.0, abs=1e-12)  # shift-free
    assert token_kl(logits, other).shape == (3, 5)
    assert bool((token_kl(logits, other) >= 0).all())


def test_accuracy_and_mask(data) -> None:
    logits, _, ids, mask = data
    pred = prediction_mask(ids, mask)
    assert pred.shape == (3, 4) and int(pred.sum()) == 4 + 2 + 2
    hits = [
        int(logits[b, t].argmax()) == int(ids[b, t + 1])
        for b in range(3)
        for t in range(4)
        if pred[b, t]
    ]
    assert next_token_accuracy(logits, ids, mask) == pytest.approx(sum(hits) / len(hits))


def test_chunked_rows_agree(data, monkeypatch) -> None:
    logits, other, ids, mask = data
    ce, kl = cross_entropy(logits, ids, mask), kl_divergence(logits, other, mask)
    monkeypatch.setattr(nt, "ROWS", 2)
    assert cross_entropy(logits, ids, mask) == pytest.approx(ce, rel=1e-14)
    assert kl_divergence(logits, other, mask) == pytest.approx(kl, rel=1e-14)


def test_bad_input(data) -> None:
    logits, other, ids, mask = data
    with pytest.raises(HusaiError, match=r"logits must be \[batch, tokens, vocab\]"):
        cross_entropy(logits[0], ids)
    with pytest.raises(HusaiError, match="differ in shape"):
        cross_entropy(logits, ids[:, :4])
    with pytest.raises(HusaiError, match="clean and spliced logits differ in shape"):
        kl_divergence(logits, other[:, :4])
    with pytest.raises(HusaiError, match="mask must be"):
        cross_entropy(logits, ids, mask[:, :4])
    with pytest.raises(HusaiError, match="no positions to average over"):
        cross_entropy(logits, ids, torch.zeros_like(mask))
