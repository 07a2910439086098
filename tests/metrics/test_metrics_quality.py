import json

import _metrics_brute as brute
import pytest
import torch

from husai.errors import HusaiError
from husai.metrics import (
    QualityAccumulator,
    dead_fraction,
    dense_fraction,
    explained_variance,
    firing_counts,
    firing_histogram,
    loss_recovered,
    mean_l0,
    mse,
    reconstruction_quality,
    stream_quality,
)
from husai.metrics.quality import LOG10_EDGES

X = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])


def test_mse_by_hand():
    x_hat = X + torch.tensor([[1.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
    assert mse(X, x_hat) == pytest.approx((1 + 4) / 6)
    assert mse(X, X) == 0.0


def test_explained_variance_by_hand():
    assert explained_variance(X, X) == 1.0
    assert explained_variance(X, X.mean(0).expand_as(X)) == pytest.approx(0.0, abs=1e-12)
    # per-dim means (3, 4): SST = (4+0+4) + (4+4+0) = 16; SSE = 1 + 4 = 5
    x_hat = X + torch.tensor([[1.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
    assert explained_variance(X, x_hat) == pytest.approx(1 - 5 / 16)
    assert explained_variance(X, torch.zeros_like(X)) < 0


def test_sparsity_by_hand():
    codes = torch.tensor([[0.0, 1.5, 0.0, 2.0], [0.0, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]])
    assert mean_l0(codes) == pytest.approx(4 / 3)
    assert firing_counts(codes).tolist() == [0, 2, 0, 2]
    assert dead_fraction(codes) == 0.5


def test_seeds_axis_returns_lists():
    x_hat = torch.stack([X, X.mean(0).expand_as(X)])
    assert explained_variance(X, x_hat) == pytest.approx([1.0, 0.0], abs=1e-12)
    assert mse(torch.stack([X, X]), x_hat) == pytest.approx([0.0, mse(X, x_hat[1])])
    codes = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]]])
    assert mean_l0(codes) == [1.0, 1.5]
    assert firing_counts(codes).tolist() == [[2, 0], [1, 2]]
    assert dead_fraction(codes) == [0.5, 0.0]


def test_loss_recovered():
    assert loss_recovered(2.0, 2.0, 6.0) == 1.0
    assert loss_recovered(2.0, 6.0, 6.0) == 0.0
    assert loss_recovered(2.0, 3.0, 6.0) == 0.75


def test_quality_errors():
    with pytest.raises(HusaiError, match="shapes differ"):
        mse(X, X[:2])
    with pytest.raises(HusaiError, match="NaN"):
        mse(X, torch.full_like(X, float("nan")))
    with pytest.raises(HusaiError, match="zero variance"):
        explained_variance(torch.ones(3, 2), torch.ones(3, 2))
    with pytest.raises(HusaiError, match="ablated_loss equals clean_loss"):
        loss_recovered(1.0, 2.0, 1.0)
    with pytest.raises(HusaiError, match="not finite"):
        loss_recovered(1.0, float("nan"), 2.0)
    with pytest.raises(HusaiError, match=r"\[n, d\]"):
        mean_l0(torch.ones(4))


def test_reconstruction_quality_against_a_target():
    """A transcoder's prediction is scored against its target y (here X), not its input."""
    y_hat = X + torch.tensor([[1.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
    codes = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 1.0], [3.0, 0.0, 0.0]])
    q = reconstruction_quality(X, y_hat, codes)
    assert q == pytest.approx(
        {"mse": 5 / 6, "explained_variance": 1 - 5 / 16, "l0": 4 / 3, "dead_fraction": 1 / 3}
    )
    per_seed = reconstruction_quality(X, torch.stack([y_hat, X]), torch.stack([codes, codes]))
    assert per_seed[0] == pytest.approx(q) and per_seed[1]["explained_variance"] == 1.0
    with pytest.raises(HusaiError, match="different row counts"):
        reconstruction_quality(X, y_hat, codes[:2])


def _seeds(S: int, n: int, d: int, f: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 2 + 1
    x_hat = x + 0.3 * torch.randn(S, n, d, generator=g)
    codes = torch.relu(torch.randn(S, n, f, generator=g) - 1.0)
    codes[:, :, :2] = 0  # two dead latents in every seed
    return x, x_hat, codes


@pytest.mark.parametrize("chunk", [1, 7, 40])
def test_accumulator_against_brute_force(chunk: int) -> None:
    x, x_hat, codes = _seeds(3, 40, 5, 9)
    acc = QualityAccumulator()
    for i in range(0, 40, chunk):
        acc.update(codes[:, i : i + chunk], x[i : i + chunk], x_hat[:, i : i + chunk])
    got = acc.result()
    assert acc.counts.tolist() == [firing_counts(codes[s]).tolist() for s in range(3)]
    for s in range(3):
        want = brute.quality(x.numpy(), x_hat[s].numpy(), codes[s].numpy())
        assert got[s] == pytest.approx(want, rel=1e-6), s
        assert got[s]["dead_fraction"] == 2 / 9


def test_accumulator_gives_the_whole_array_numbers_however_chunked() -> None:
    """Exactly (not approximately) what the single metrics give on all rows at once, for
    any chunking: `husai run`'s metrics.json must not depend on the evaluation chunk size."""
    x, x_hat, codes = _seeds(2, 20_000, 16, 8, seed=1)
    whole = [
        {
            "mse": mse(x, x_hat[s]),
            "explained_variance": explained_variance(x, x_hat[s]),
            "l0": mean_l0(codes[s]),
            "dead_fraction": dead_fraction(codes[s]),
        }
        for s in range(2)
    ]
    for chunk in (4096, 777, 20_000):
        acc = QualityAccumulator()
        for i in range(0, 20_000, chunk):
            acc.update(codes[:, i : i + chunk], x[i : i + chunk], x_hat[:, i : i + chunk])
        assert acc.result() == whole, chunk
    codes_only = QualityAccumulator()
    codes_only.update(codes[:, :5000])
    codes_only.update(codes[:, 5000:])
    assert codes_only.result() == [{k: q[k] for k in ("l0", "dead_fraction")} for q in whole]


def test_stream_quality_encodes_and_decodes_chunk_by_chunk() -> None:
    x, _, _ = _seeds(1, 300, 4, 3)
    w = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(2))  # two "seeds"

    def encode(xb: torch.Tensor) -> torch.Tensor:
        return torch.relu(xb @ w)

    def decode(c: torch.Tensor) -> torch.Tensor:
        return c @ w.transpose(1, 2)

    acc = stream_quality(encode, x, decode, chunk=64)
    codes = encode(x)
    assert acc.result() == reconstruction_quality(x, decode(codes), codes)
    y = x[:, :3] * 2
    targeted = stream_quality(encode, x, lambda c: decode(c)[..., :3], y, chunk=50).result()
    assert targeted[1]["mse"] == mse(y, decode(codes)[1, :, :3])
    with pytest.raises(HusaiError, match="different row counts"):
        stream_quality(encode, x, decode, y[:10])


def test_accumulator_errors() -> None:
    x, x_hat, codes = _seeds(2, 10, 3, 4)
    acc = QualityAccumulator()
    with pytest.raises(HusaiError, match="no rows"):
        acc.result()
    with pytest.raises(HusaiError, match="both"):
        acc.update(codes, x)
    acc.update(codes, x, x_hat)
    with pytest.raises(HusaiError, match="every chunk"):
        acc.update(codes)
    with pytest.raises(HusaiError, match="seeds"):
        acc.update(codes[:1], x, x_hat[:1])


def _firing_codes(S: int = 2, n: int = 200, f: int = 12, seed: int = 3) -> torch.Tensor:
    """Latent k fires on a random subset of rows of size spread over decades (k = 0 dead,
    the last one on every row), so every histogram bin shape is exercised."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.zeros(S, n, f)
    sizes = [0, 1, 2, 3, 5, 19, 20, 21, 60, 63, 150, n]
    for s in range(S):
        for k in range(f):
            rows = torch.randperm(n, generator=g)[: sizes[(k + s) % f]]
            codes[s, rows, k] = torch.rand(len(rows), generator=g) + 0.1
    return codes


def test_dense_fraction_by_hand_and_against_brute_force() -> None:
    codes = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 0.0], [1.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    assert dense_fraction(codes) == pytest.approx(3 / 3)  # 1.0, 0.25, 0.25 > 0.1
    assert dense_fraction(codes, threshold=0.25) == pytest.approx(1 / 3)  # strictly more
    c = _firing_codes()
    for thr in (0.0, 0.01, 0.1, 0.105, 0.5, 0.99):
        want = [brute.dense_fraction(c[s].numpy(), thr) for s in range(2)]
        assert dense_fraction(c, threshold=thr) == want, thr
        acc = QualityAccumulator()
        acc.update(c[:, :70])
        acc.update(c[:, 70:])
        assert acc.dense_fraction(thr) == want
    with pytest.raises(HusaiError, match="dense threshold"):
        dense_fraction(codes, threshold=1.0)


@pytest.mark.parametrize("edges", [LOG10_EDGES, (-2.0, -1.0, -0.5, 0.0), (-1.0, -0.3)])
def test_firing_histogram_against_brute_force(edges) -> None:
    c = _firing_codes()
    acc = QualityAccumulator()
    for i in range(0, 200, 33):  # chunked: the same counts
        acc.update(c[:, i : i + 33])
    for s, h in enumerate(firing_histogram(c, edges)):
        want = brute.firing_histogram(c[s].numpy(), list(edges))
        assert h == want and acc.histogram(edges)[s] == want
        assert sum(h["counts"]) + h["dead"] == h["n_latents"] == 12
        json.dumps(h)
    assert firing_histogram(c[0], edges) == firing_histogram(c, edges)[0]


def test_firing_histogram_by_hand() -> None:
    codes = torch.zeros(100, 4)
    codes[:1, 1] = 1  # frequency 0.01: log10 = -2, the left edge of [-2, -1)
    codes[:10, 2] = 1  # 0.1: [-1, 0]
    codes[:, 3] = 1  # 1: the closed last bin
    h = firing_histogram(codes, (-3.0, -2.0, -1.0, 0.0))
    assert h == {
        "log10_edges": [-3.0, -2.0, -1.0, 0.0],
        "counts": [0, 1, 2],
        "dead": 1,
        "n_latents": 4,
        "n_rows": 100,
    }
    with pytest.raises(HusaiError, match="edges must increase"):
        firing_histogram(codes, (0.0, -1.0))
    with pytest.raises(HusaiError, match="no rows"):
        QualityAccumulator().histogram()
