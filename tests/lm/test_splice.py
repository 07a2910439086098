"""Splicing replacements into tiny Llama and GPT-2 forwards: identity changes nothing, the
replacement is what downstream modules read (probe hooks written here), positions, hook
removal after errors, bad input."""

from __future__ import annotations

import pytest
import torch
from _lm_tiny import N_LAYERS, D
from test_capture import _module, _n_hooks

from husai.errors import HusaiError
from husai.lm import KINDS, capture, site, splice

pytest.importorskip("transformers", reason="transformers not installed (pip install -e '.[lm]')")

ALL = [site(layer, kind).name for layer in range(N_LAYERS) for kind in KINDS]


def _clean(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


@pytest.mark.parametrize("name", ALL)
def test_identity_changes_nothing_and_zeros_do(tiny, batch, name) -> None:
    ids, mask = batch
    clean = _clean(tiny, ids, mask)
    torch.testing.assert_close(splice(tiny, ids, {}, mask), clean, rtol=0, atol=0)
    torch.testing.assert_close(splice(tiny, ids, {name: lambda a: a}, mask), clean, rtol=0, atol=0)
    # a copy goes through the replacement path (resid_mid: through the attention output)
    copied = splice(tiny, ids, {name: lambda a: a.clone()}, mask)
    torch.testing.assert_close(copied, clean, rtol=0, atol=1e-5)
    if not name.endswith("resid_mid"):
        torch.testing.assert_close(copied, clean, rtol=0, atol=0)
    zeroed = splice(tiny, ids, {name: torch.zeros_like}, mask)
    assert (zeroed - clean).abs().max() > 1e-3


def _probe(model, ids, mask, parts, replacements):
    """Inputs of modules (layer, part) in one spliced forward, recorded by hooks here."""
    got, handles = {}, []
    for layer, part in parts:

        def hook(_m, args, kwargs, _out, key=(layer, part)):  # noqa: B023 - bound by default
            got[key] = (args[0] if args else kwargs["hidden_states"]).clone()

        # a forward hook sees the args the forward ran on (after every pre-hook, splice's too)
        m = _module(model, layer, part)
        handles.append(m.register_forward_hook(hook, with_kwargs=True))
    try:
        splice(model, ids, replacements, mask)
    finally:
        for h in handles:
            h.remove()
    return got


def test_downstream_modules_read_the_replacement(tiny, batch) -> None:
    ids, mask = batch
    g = torch.Generator().manual_seed(3)
    R = torch.randn(*ids.shape, D, generator=g)
    parts = [(1, "block"), (1, "ln2"), (1, "mlp"), (2, "block"), (None, "final_norm")]
    # resid_post of layer 0 is layer 1's input; the last block's output the final norm's
    got = _probe(tiny, ids, mask, parts, {"blocks.0.hook_resid_post": lambda a: R})
    torch.testing.assert_close(got[1, "block"], R, rtol=0, atol=0)
    got = _probe(tiny, ids, mask, parts, {f"blocks.{N_LAYERS - 1}.hook_resid_post": lambda a: R})
    torch.testing.assert_close(got[None, "final_norm"], R, rtol=0, atol=0)
    # resid_pre is the block's input
    got = _probe(tiny, ids, mask, parts, {"blocks.1.hook_resid_pre": lambda a: R})
    torch.testing.assert_close(got[1, "block"], R, rtol=0, atol=0)
    # resid_mid reaches both the MLP's norm and the residual stream (the next block)
    got = _probe(tiny, ids, mask, parts, {"blocks.1.hook_resid_mid": lambda a: R})
    torch.testing.assert_close(got[1, "ln2"], R, rtol=0, atol=1e-5)
    acts = capture(tiny, ids, ["blocks.1.hook_mlp_out"], mask, stop=False)
    mlp_out = _mlp_out_with(tiny, got[1, "mlp"], layer=1)
    torch.testing.assert_close(got[2, "block"], got[1, "ln2"] + mlp_out, rtol=0, atol=1e-5)
    assert not torch.allclose(mlp_out, acts["blocks.1.hook_mlp_out"])
    # ln2_normalized is what the MLP reads; mlp_in the norm's input (TransformerLens)
    got = _probe(tiny, ids, mask, parts, {"blocks.1.ln2.hook_normalized": lambda a: R})
    torch.testing.assert_close(got[1, "mlp"], R, rtol=0, atol=0)
    got = _probe(tiny, ids, mask, parts, {"blocks.1.hook_mlp_in": lambda a: R})
    torch.testing.assert_close(got[1, "ln2"], R, rtol=0, atol=0)


def _mlp_out_with(model, x, layer):
    with torch.no_grad():
        return _module(model, layer, "mlp")(x)


@pytest.mark.parametrize("kind", ["attn_out", "mlp_out"])
def test_sublayer_outputs_enter_the_residual(tiny, batch, kind) -> None:
    """resid_post = resid_mid + mlp_out: the replaced output is what is added."""
    ids, mask = batch
    R = torch.randn(*ids.shape, D, generator=torch.Generator().manual_seed(4))
    names = ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"]
    before = capture(tiny, ids, names, mask, stop=False)
    got = _probe(tiny, ids, mask, [(2, "block"), (1, "ln2")], {site(1, kind): lambda a: R})
    if kind == "attn_out":
        torch.testing.assert_close(got[1, "ln2"], before[names[0]] + R)
    else:
        torch.testing.assert_close(got[2, "block"], before[names[1]] + R)


def test_splicing_changes_logits_only_downstream(tiny, batch) -> None:
    """Layer-1 splicing changes the logits; a replacement at the last position only changes
    that position's logits (causal), and `positions` limits the replacement."""
    ids, mask = batch
    clean = _clean(tiny, ids, mask)
    name = "blocks.1.hook_resid_post"
    changed = splice(tiny, ids, {name: lambda a: a * 0.5}, mask)
    assert (changed - clean).abs().max() > 1e-3
    last = torch.zeros_like(ids, dtype=torch.bool)
    last[:, -1] = True
    only_last = splice(tiny, ids, {name: lambda a: a * 0.5}, mask, positions=last)
    torch.testing.assert_close(only_last[:, :-1], clean[:, :-1], rtol=0, atol=0)
    assert (only_last[0, -1] - clean[0, -1]).abs().max() > 1e-3
    none = torch.zeros_like(last)
    torch.testing.assert_close(
        splice(tiny, ids, {name: torch.zeros_like}, mask, positions=none), clean, rtol=0, atol=0
    )
    # the first position kept: its logits are clean, the rest change
    rest = torch.ones_like(last)
    rest[:, 0] = False
    kept = splice(tiny, ids, {name: torch.zeros_like}, mask, positions=rest)
    torch.testing.assert_close(kept[:, 0], clean[:, 0], rtol=0, atol=0)
    assert (kept[:, 1:] - clean[:, 1:]).abs().max() > 1e-3
    as_ints = splice(tiny, ids, {name: torch.zeros_like}, mask, positions=rest.long())
    torch.testing.assert_close(as_ints, kept, rtol=0, atol=0)


def test_several_sites_in_forward_order(tiny, batch) -> None:
    """A transcoder-like pair: read layer 0's MLP input, replace its output by a function
    of it (hooks fire in forward order whatever the mapping's order)."""
    ids, mask = batch
    seen = {}

    def read(a):
        seen["x"] = a
        return a

    replacements = {  # pop fails unless the read ran first
        "blocks.0.hook_mlp_out": lambda a: a + 0 * seen.pop("x"),
        "blocks.0.ln2.hook_normalized": read,
    }
    torch.testing.assert_close(
        splice(tiny, ids, replacements, mask), _clean(tiny, ids, mask), rtol=0, atol=0
    )
    assert seen == {}


def test_hooks_removed_also_after_errors(tiny, batch) -> None:
    ids, mask = batch
    before = _n_hooks(tiny)
    splice(tiny, ids, {name: torch.zeros_like for name in ALL}, mask)
    assert _n_hooks(tiny) == before

    def boom(a):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        splice(
            tiny,
            ids,
            {"blocks.0.hook_resid_pre": torch.zeros_like, "blocks.1.hook_resid_mid": boom},
            mask,
        )
    assert _n_hooks(tiny) == before
    with pytest.raises(
        HusaiError, match=r"blocks.1.hook_mlp_out gave \(2, 7, 5\), the activation is \(2, 7, 32\)"
    ) as err:
        splice(tiny, ids, {"blocks.1.hook_mlp_out": lambda a: a[..., :5]}, mask)
    assert "\n" not in str(err.value) and _n_hooks(tiny) == before


@pytest.mark.parametrize(
    ("replacements", "match"),
    [
        ({"blocks.3.hook_resid_post": torch.zeros_like}, r"layer 3 out of range \(valid: 0\.\.2\)"),
        ({"blocks.0.hook_resid": torch.zeros_like}, "unknown site 'blocks.0.hook_resid'"),
    ],
)
def test_bad_sites(tiny, batch, replacements, match) -> None:
    before = _n_hooks(tiny)
    with pytest.raises(HusaiError, match=match) as err:
        splice(tiny, batch[0], replacements, batch[1])
    assert "\n" not in str(err.value) and _n_hooks(tiny) == before


def test_bad_shapes(tiny, batch) -> None:
    ids, mask = batch
    with pytest.raises(HusaiError, match=r"token ids must be \[batch, tokens\], got \(7,\)"):
        splice(tiny, ids[0], {})
    with pytest.raises(HusaiError, match=r"positions must be \[batch, tokens\]"):
        splice(tiny, ids, {}, mask, positions=mask[:, :3].bool())
