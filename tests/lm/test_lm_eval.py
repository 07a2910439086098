"""LM downstream evaluation on tiny Llama and GPT-2 models: an identity SAE recovers all the
loss (KL 0), an SAE decoding to zeros / the mean equals zero- / mean-ablation, the numbers
against independent computations (metrics on hand-hooked forwards, stream_quality on a
capture), a transcoder, bad input."""

from __future__ import annotations

import pytest
import torch
from _lm_tiny import N_LAYERS, VOCAB, D
from test_capture import _n_hooks

from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.experiments.lm_eval import lm_downstream, replaced_positions
from husai.lm import capture, splice
from husai.metrics import cross_entropy, kl_divergence, stream_quality
from husai.sae import build_sae

pytest.importorskip("transformers", reason="transformers not installed (pip install -e '.[lm]')")

SITE = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def contexts() -> tuple[torch.Tensor, torch.Tensor]:
    """5 contexts of 6 tokens (evaluated in batches of 2), the last right-padded."""
    ids = torch.randint(0, VOCAB, (5, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[4, 4:] = 0
    return ids, mask


def _relu(seeds=(0, 1), d_sae=2 * D, d_out=None):
    return build_sae(SAEConfig(architecture="relu", d_sae=d_sae), D, list(seeds), d_out)


def _identity():
    """A ReLU SAE that reconstructs exactly: relu(x) − relu(−x) = x."""
    sae = _relu()
    eye = torch.eye(D)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]).expand_as(sae.W_enc))
        sae.W_dec.copy_(torch.cat([eye, -eye]).expand_as(sae.W_dec))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _constant(value: torch.Tensor, seeds=(0, 1)):
    """Decodes every input to `value` (b_dec; no latent fires)."""
    sae = _relu(seeds)
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_enc):
            p.zero_()
        sae.b_dec.copy_(value.expand_as(sae.b_dec))
    return sae


def _site_mean(model, ids, mask) -> torch.Tensor:
    acts = capture(model, ids, [SITE], mask)[SITE]
    return acts[replaced_positions(mask)].double().mean(0).float()


def test_identity_sae_recovers_everything(tiny, contexts) -> None:
    ids, mask = contexts
    before = _n_hooks(tiny)
    r = lm_downstream(tiny, _identity(), SITE, ids, mask, batch_size=2)
    assert _n_hooks(tiny) == before
    base = r["baselines"]
    assert set(base) == {"clean", "zero_ablated", "mean_ablated"}
    assert base["zero_ablated"]["loss"] != base["clean"]["loss"]  # a random model: either way
    assert base["zero_ablated"]["kl_to_clean"] > 0 and "kl_to_clean" not in base["clean"]
    assert len(r["per_seed"]) == 2
    for seed in r["per_seed"]:
        assert seed["loss"] == pytest.approx(base["clean"]["loss"], abs=1e-6)
        assert seed["loss_recovered_vs_zero"] == pytest.approx(1.0, abs=1e-6)
        assert seed["loss_recovered_vs_mean"] == pytest.approx(1.0, abs=1e-6)
        assert seed["kl_to_clean"] == pytest.approx(0.0, abs=1e-6)
        assert seed["accuracy"] == base["clean"]["accuracy"]
        assert seed["explained_variance"] == pytest.approx(1.0, abs=1e-6)
        assert seed["mse"] == pytest.approx(0.0, abs=1e-10)
        assert seed["l0"] == pytest.approx(D, abs=1)  # each dimension fires one of ±
    n_real = int(mask.sum())
    assert r["n_replaced_tokens"] == n_real - len(ids)  # position 0 excluded
    assert r["n_predictions"] == int((mask[:, :-1] & mask[:, 1:]).sum())
    assert (r["site"], r["site_out"], r["exclude_first"]) == (SITE, None, True)


def test_constant_saes_equal_the_ablations(tiny, contexts) -> None:
    ids, mask = contexts
    zero = lm_downstream(tiny, _constant(torch.zeros(D)), SITE, ids, mask, batch_size=2)
    for seed in zero["per_seed"]:
        assert seed["loss"] == zero["baselines"]["zero_ablated"]["loss"]
        assert seed["kl_to_clean"] == zero["baselines"]["zero_ablated"]["kl_to_clean"]
        assert seed["loss_recovered_vs_zero"] == 0.0
        assert seed["l0"] == 0.0 and seed["dead_fraction"] == 1.0
    mean = _site_mean(tiny, ids, mask)
    r = lm_downstream(tiny, _constant(mean), SITE, ids, mask, batch_size=3)
    for seed in r["per_seed"]:
        assert seed["loss"] == pytest.approx(r["baselines"]["mean_ablated"]["loss"], abs=1e-6)
        assert seed["loss_recovered_vs_mean"] == pytest.approx(0.0, abs=1e-5)
        assert seed["explained_variance"] == pytest.approx(0.0, abs=1e-5)


def test_numbers_match_independent_computations(tiny, contexts) -> None:
    """Random SAE: baselines and per-seed numbers from full-batch forwards hooked by
    `splice` and the next-token metrics; quality from stream_quality on a capture."""
    ids, mask = contexts
    sae = _relu(seeds=(3, 4, 5))
    r = lm_downstream(tiny, sae, SITE, ids, mask, batch_size=2, exclude_first=False)
    pos = mask.bool()
    clean = splice(tiny, ids, {}, mask)
    assert r["baselines"]["clean"]["loss"] == pytest.approx(cross_entropy(clean, ids, mask))
    zero = splice(tiny, ids, {SITE: torch.zeros_like}, mask, positions=pos)
    assert r["baselines"]["zero_ablated"]["loss"] == pytest.approx(cross_entropy(zero, ids, mask))
    assert r["baselines"]["zero_ablated"]["kl_to_clean"] == pytest.approx(
        kl_divergence(clean, zero, mask)
    )
    acts = capture(tiny, ids, [SITE], mask)[SITE]
    x = acts[pos]
    want_q = stream_quality(sae.encode, x, sae.decode).result()
    for s, seed in enumerate(r["per_seed"]):
        one = sae.select(s)
        spliced = splice(
            tiny, ids, {SITE: lambda a, one=one: one(a.reshape(-1, D))[0].view_as(a)}, mask
        )
        assert seed["loss"] == pytest.approx(cross_entropy(spliced, ids, mask), rel=1e-5)
        assert seed["kl_to_clean"] == pytest.approx(kl_divergence(clean, spliced, mask), rel=1e-4)
        for k, v in want_q[s].items():
            assert seed[k] == pytest.approx(v, rel=1e-6, abs=1e-9)
    assert r["n_replaced_tokens"] == int(mask.sum())


def test_transcoder(tiny, contexts) -> None:
    """A transcoder reading the MLP's input and replacing its output; one decoding to
    zeros equals zero-ablating mlp_out, and its quality is against mlp_out."""
    ids, mask = contexts
    tc = _relu(d_out=D)
    with torch.no_grad():
        for p in (tc.W_enc, tc.W_dec, tc.b_enc, tc.b_dec):
            p.zero_()
    kw = {"site_out": "blocks.1.hook_mlp_out", "batch_size": 2}
    r = lm_downstream(tiny, tc, "blocks.1.ln2.hook_normalized", ids, mask, **kw)
    assert r["site_out"] == "blocks.1.hook_mlp_out"
    for seed in r["per_seed"]:
        assert seed["loss"] == r["baselines"]["zero_ablated"]["loss"]
        assert seed["explained_variance"] < 0.01  # zeros vs mlp_out's variance
    y = capture(tiny, ids, ["blocks.1.hook_mlp_out"], mask)["blocks.1.hook_mlp_out"]
    y = y[replaced_positions(mask)]
    assert r["per_seed"][0]["mse"] == pytest.approx(float(y.double().pow(2).mean()), rel=1e-6)
    with pytest.raises(HusaiError, match="must come after"):
        lm_downstream(
            tiny, tc, "blocks.1.hook_mlp_out", ids, mask, site_out="blocks.0.hook_mlp_out"
        )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"site": f"blocks.{N_LAYERS}.hook_resid_post"}, "out of range"),
        ({"site": "blocks.0.hook_resid"}, "unknown site"),
        ({"sae": "narrow"}, rf"the SAE maps d_in 16 → d_out 16, the site {SITE} has width {D}"),
        ({"ids": torch.zeros(0, 6, dtype=torch.long)}, r"≥ 1 context; got \(0, 6\)"),
        ({"ids": torch.zeros(3, 1, dtype=torch.long)}, "need ≥ 2 tokens"),
        ({"mask": torch.zeros(5, 6, dtype=torch.long)}, "no eval tokens to replace"),
        ({"site_out": "blocks.2.hook_mlp_out"}, "site_out is for transcoders"),
        ({"sae": "transcoder"}, "a transcoder needs site_out"),
    ],
)
def test_bad_input(tiny, contexts, change, match) -> None:
    ids, mask = contexts
    sae = {
        "narrow": build_sae(SAEConfig(architecture="relu", d_sae=8), 16, [0]),
        "transcoder": _relu(d_out=D),
    }.get(change.get("sae"), _relu())
    args = {"site": SITE, "ids": ids, "mask": mask, **change}
    if args["ids"] is not ids and "mask" not in change:
        args["mask"] = None
    before = _n_hooks(tiny)
    with pytest.raises(HusaiError, match=match) as err:
        lm_downstream(
            tiny, sae, args["site"], args["ids"], args["mask"], site_out=change.get("site_out")
        )
    assert "\n" not in str(err.value) and _n_hooks(tiny) == before
