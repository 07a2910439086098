import json
import math
from itertools import permutations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from husai.errors import HusaiError
from husai.toy import (
    class_mean_structure,
    distinct_directions,
    embedding_structure,
    fourier_fit,
    fourier_row_labels,
    fourier_structure,
    recovery_against,
    structure_summary,
)
from husai.toy.structure import fourier_features, input_grid


def brute_class_means(x: np.ndarray, y: np.ndarray) -> tuple[list[list[float]], float]:
    """Loops in float64: unit centred class means (ascending label) and between / total SS."""
    n, d = x.shape
    mu = [sum(float(x[i, j]) for i in range(n)) / n for j in range(d)]
    xc = [[float(x[i, j]) - mu[j] for j in range(d)] for i in range(n)]
    dirs, between = [], 0.0
    for c in sorted(set(y.tolist())):
        rows = [xc[i] for i in range(n) if y[i] == c]
        m = [sum(r[j] for r in rows) / len(rows) for j in range(d)]
        norm = math.sqrt(sum(v * v for v in m))
        between += len(rows) * norm**2
        dirs.append([v / norm for v in m] if norm > 1e-9 else [0.0] * d)
    total = sum(v * v for r in xc for v in r)
    return dirs, between / total


@st.composite
def labelled(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, d, c = draw(st.integers(3, 12)), draw(st.integers(1, 4)), draw(st.integers(2, 4))
    y = rng.integers(0, c, size=n)
    means = rng.standard_normal((c, d))
    noise = draw(st.sampled_from([0.0, 0.3, 3.0]))
    x = means[y] + noise * rng.standard_normal((n, d))
    return x, y, noise


@settings(max_examples=40, deadline=None)
@given(labelled())
def test_class_means_match_brute_force(xy):
    x, y, noise = xy
    if np.allclose(x, x[0]):
        return
    dirs, ve = class_mean_structure(x, torch.from_numpy(y))
    ref_dirs, ref_ve = brute_class_means(x, y)
    assert ve == pytest.approx(ref_ve, abs=1e-9) and 0.0 <= ve <= 1.0
    np.testing.assert_allclose(dirs.numpy(), np.array(ref_dirs), atol=1e-5)
    if noise == 0.0:  # every row equals its class mean
        assert ve == pytest.approx(1.0, abs=1e-12)


def test_class_means_errors():
    x = torch.randn(6, 3)
    with pytest.raises(HusaiError, match="zero variance"):
        class_mean_structure(torch.ones(6, 3), torch.arange(6))
    with pytest.raises(HusaiError, match="labels"):
        class_mean_structure(x, torch.arange(5))
    with pytest.raises(HusaiError, match="labels"):
        class_mean_structure(x, torch.zeros(6))
    with pytest.raises(HusaiError, match="NaN"):
        class_mean_structure(x.index_fill(0, torch.tensor([2]), float("nan")), torch.arange(6))


def _planted(n: int = 13, d: int = 5) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """Activations on Z_n² with known parts: freq 3 of c, freq 5 of a, plus 0.5·freq 2 of b."""
    a = torch.arange(n).repeat_interleave(n)
    b = torch.arange(n).repeat(n)
    phases = {"a": a, "b": b, "c": (a + b) % n}
    g = torch.Generator().manual_seed(0)
    u = torch.randn(5, d, generator=g, dtype=torch.float64)
    f_c3 = fourier_features(phases["c"], n, [3])
    f_a5 = fourier_features(phases["a"], n, [5])
    f_b2 = fourier_features(phases["b"], n, [2])
    x = f_c3 @ u[:2] + f_a5 @ u[2:4] + 0.5 * f_b2[:, :1] * u[4] + 7.0  # offset is centred away
    ss = (u**2).sum(dim=1)
    return x, phases, {"u": u, "ss": ss, "total": float(ss[:4].sum() + 0.25 * ss[4])}


def test_fourier_fit_recovers_planted_structure():
    n = 13
    x, phases, k = _planted(n)
    dirs, r2 = fourier_fit(x, phases["c"], n, [3])
    assert dirs.shape == (2, 5) and fourier_row_labels(n, [3]) == ["cos 3 (c)", "sin 3 (c)"]
    cos = (dirs.double() * (k["u"][:2] / k["u"][:2].norm(dim=1, keepdim=True))).sum(1)
    torch.testing.assert_close(cos.abs(), torch.ones(2, dtype=torch.float64))
    assert r2 == pytest.approx(float(k["ss"][:2].sum()) / k["total"], abs=1e-9)
    # the class means (answer c) explain exactly the c part, like all frequencies of c
    cm_dirs, cm = class_mean_structure(x, phases["c"])
    assert cm == pytest.approx(r2, abs=1e-9)
    assert fourier_fit(x, phases["c"], n, range(1, 7))[1] == pytest.approx(cm, abs=1e-9)
    # inputs basis: a's rows then b's; freq 2 of b carries only a cos part
    ab = torch.stack([phases["a"], phases["b"]], dim=1)
    dirs_ab, r2_ab = fourier_fit(x, ab, n, [2, 5])
    assert len(fourier_row_labels(n, [2, 5], ("a", "b"))) == dirs_ab.shape[0] == 8
    assert float(dirs_ab[:2].abs().sum()) == 0.0  # freq 2 of a is absent: zero rows
    assert float(dirs_ab[5:].abs().sum()) == 0.0  # sin 2 (b) and freq 5 of b are absent
    assert r2_ab == pytest.approx(1.0 - float(k["ss"][:2].sum()) / k["total"], abs=1e-9)


def test_fourier_features_unit_variance_and_nyquist():
    f = fourier_features(torch.arange(12), 12, [1, 6])
    assert f.shape == (12, 3)  # cos 1, sin 1, cos 6 (no Nyquist sin)
    torch.testing.assert_close(f.T @ f / 12, torch.eye(3, dtype=torch.float64))
    assert fourier_row_labels(12, [6, 1]) == ["cos 1 (c)", "sin 1 (c)", "cos 6 (c)"]
    with pytest.raises(HusaiError, match="frequencies"):
        fourier_features(torch.arange(12), 12, [7])
    with pytest.raises(HusaiError, match="rows"):
        fourier_fit(torch.randn(5, 2), torch.arange(6), 12, [1])


def test_distinct_directions_drops_zero_and_parallel_rows():
    e = torch.eye(3)
    rows = torch.stack([e[0], -2 * e[0], 0 * e[0], e[1], e[0] + 1e-3 * e[1], e[0] + e[2]])
    kept, idx = distinct_directions(rows)
    assert idx.tolist() == [0, 3, 5]
    torch.testing.assert_close(kept, rows[[0, 3, 5]])
    assert distinct_directions(rows, max_cos=0.7)[1].tolist() == [0, 3]  # cos(e0, e0+e2) ≈ 0.707
    with pytest.raises(HusaiError, match="directions"):
        distinct_directions(torch.ones(3))


def brute_recovery(truth: np.ndarray, w: np.ndarray, t: float) -> tuple[float, float]:
    """Best injection of truth rows into decoder rows (T <= F) by enumeration."""
    u = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    v = w / np.linalg.norm(w, axis=1, keepdims=True)
    sim = np.abs(u @ v.T)
    best = max(sum(sim[i, p[i]] for i in range(len(u))) for p in permutations(range(len(v)), 3))
    return best / len(u), float((sim.max(axis=1) > t).mean())


def test_recovery_against_matches_brute_force():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((3, 4))
    w = rng.standard_normal((2, 5, 4))
    w[0, 1:4] = -2 * truth[[2, 0, 1]] + 0.05 * rng.standard_normal((3, 4))
    r = recovery_against(torch.from_numpy(w), torch.from_numpy(truth), threshold=0.8)
    refs = [brute_recovery(truth, w_s, 0.8) for w_s in w]
    for got, (mcc, frac) in zip(r["per_seed"], refs, strict=True):
        assert got["hungarian_mcc"] == pytest.approx(mcc, abs=1e-5)
        assert got["fraction_recovered"] == frac
    assert r["hungarian_mcc"] == pytest.approx((refs[0][0] + refs[1][0]) / 2, abs=1e-5)
    assert (r["n_seeds"], r["n_true"], r["n_latents"], r["threshold"]) == (2, 3, 5, 0.8)
    single = recovery_against(w[0], truth, threshold=0.8)
    assert single["n_seeds"] == 1 and single["per_seed"] == r["per_seed"][:1]
    with pytest.raises(HusaiError, match="zero rows"):
        recovery_against(w, np.vstack([truth, np.zeros((1, 4))]))
    with pytest.raises(HusaiError, match="decoder"):
        recovery_against(w[0, 0], truth)
    with pytest.raises(HusaiError, match="widths"):
        recovery_against(w, truth[:, :3])


def test_summary_on_grokked_model(grokked_toy):
    model, summary = grokked_toy
    s = structure_summary(model, model.cfg)
    json.dumps(s, allow_nan=False)
    assert s["key_frequencies"] == summary["fourier"]["key_frequencies"]
    assert s["n_inputs"] == model.cfg.p**2 and set(s["hooks"]) == set(model.hook_names)
    for name in ("embed", "blocks.0.resid_pre"):  # the `=` token: constant at the answer
        assert s["hooks"][name]["constant"] and s["hooks"][name]["class_means"] is None
    for name, h in s["hooks"].items():
        if h["constant"]:
            continue
        cm, ans = h["class_means"]["variance_explained"], h["answer_fourier"]
        assert ans["variance_explained_all"] == pytest.approx(cm, abs=1e-6), name
        assert ans["variance_explained_key"] <= cm + 1e-9
    post = s["hooks"]["blocks.0.resid_post"]
    cm = post["class_means"]["variance_explained"]
    assert cm > 0.7  # the answer dominates
    assert post["answer_fourier"]["variance_explained_key"] > 0.9 * cm  # mostly key freqs
    attn = s["hooks"]["blocks.0.attn_out"]["input_fourier"]
    assert attn["variance_explained_key"] > 0.7
    # attention splits evenly between a and b, so their rows share directions
    assert attn["n_distinct_directions"] < attn["n_directions"] == 4 * len(s["key_frequencies"])
    assert s["embedding"]["variance_explained"] > 0.85


def test_truth_recovered_by_its_copies_not_by_random(grokked_toy):
    model, summary = grokked_toy
    key = summary["fourier"]["key_frequencies"]
    hook = "blocks.0.resid_post"
    truth = fourier_structure(model, model.cfg, hook, key)
    d = model.cfg.d_model
    assert truth.shape == (2 * len(key), d)
    torch.testing.assert_close(truth.norm(dim=1), torch.ones(len(truth)))
    g = torch.Generator().manual_seed(0)
    copies = truth[torch.randperm(len(truth), generator=g)] * -3.0
    copies = copies + 1e-3 * torch.randn(copies.shape, generator=g)
    decoder = torch.cat([torch.randn(20, d, generator=g), copies])
    r = recovery_against(torch.stack([decoder, decoder.flip(0)]), truth)
    assert r["hungarian_mcc"] > 0.99 and r["fraction_recovered"] == 1.0
    rand = recovery_against(torch.randn(2, 32, d, generator=g), truth)
    assert rand["hungarian_mcc"] < 0.5 and rand["fraction_recovered"] == 0.0
    grid = input_grid(model.cfg)
    _, cache = model.run_with_cache(grid.tokens, [hook])
    means, _ = class_mean_structure(cache[hook], grid.labels)
    assert means.shape == (model.cfg.p, d)
    inputs = fourier_structure(model, model.cfg, "blocks.0.attn_out", key, basis="inputs")
    assert inputs.shape == (4 * len(key), d)
    with pytest.raises(HusaiError, match="embed.*zero variance"):
        fourier_structure(model, model.cfg, "embed", key)
    emb, share = embedding_structure(model, key)
    assert emb.shape == (2 * len(key), d) and 0.85 < share <= 1.0


@pytest.mark.parametrize("op", ["sub", "mul"])
def test_answer_fourier_spans_class_means_for_any_op(op):
    from husai.config import ToyModelConfig
    from husai.toy import ToyTransformer

    cfg = ToyModelConfig(p=11, op=op, d_model=16, n_heads=2, d_mlp=32)
    model = ToyTransformer(cfg, seed=0)  # untrained: the identity is algebraic
    s = structure_summary(model, cfg, ["blocks.0.mlp_out"], key_freqs=[1, 5])
    h = s["hooks"]["blocks.0.mlp_out"]
    assert s["n_inputs"] == (100 if op == "mul" else 121)
    cm = h["class_means"]["variance_explained"]
    assert h["answer_fourier"]["variance_explained_all"] == pytest.approx(cm, abs=1e-9)
    # mul: discrete logs over Z_10, so frequency 5 is the Nyquist (a cos row only)
    assert h["answer_fourier"]["n_directions"] == (3 if op == "mul" else 4)
    with pytest.raises(HusaiError, match="does not match"):
        structure_summary(model, ToyModelConfig(p=13, op=op, d_model=16, n_heads=2, d_mlp=32))
