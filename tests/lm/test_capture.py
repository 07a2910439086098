"""Hook-and-stop capture on tiny Llama and GPT-2 models: every site against an independent
computation (the model's own hidden_states, hand-registered hooks, the residual identities
of a pre-norm block), the early stop, hook removal, bad input."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from _lm_tiny import N_LAYERS, D

from husai.errors import HusaiError
from husai.lm import KINDS, Adapter, capture, site

pytest.importorskip("transformers", reason="transformers not installed (pip install -e '.[lm]')")

# module paths written out here, independently of husai.lm.adapters
PATHS = {
    "llama": {
        "layers": "model.layers",
        "attn": "self_attn",
        "ln2": "post_attention_layernorm",
        "mlp": "mlp",
        "final_norm": "model.norm",
    },
    "gpt2": {
        "layers": "transformer.h",
        "attn": "attn",
        "ln2": "ln_2",
        "mlp": "mlp",
        "final_norm": "transformer.ln_f",
    },
}
ALL = [site(layer, kind).name for layer in range(N_LAYERS) for kind in KINDS]


def _module(model: torch.nn.Module, layer: int | None, part: str) -> torch.nn.Module:
    p = PATHS[model.config.model_type]
    if layer is None:
        return model.get_submodule(p[part])
    block = model.get_submodule(p["layers"])[layer]
    return block if part == "block" else getattr(block, p[part])


def _hand_outputs(model, ids, mask, parts: list[tuple[int, str]]) -> dict:
    """Outputs of modules by hooks registered here, in one full forward."""
    got, handles = {}, []
    for layer, part in parts:

        def hook(_m, _a, out, key=(layer, part)):  # noqa: B023 - bound by default
            got[key] = out[0] if isinstance(out, tuple) else out

        handles.append(_module(model, layer, part).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return got


def _n_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_residual_stream_equals_hidden_states(tiny, batch) -> None:
    ids, mask = batch
    acts = capture(tiny, ids, ALL, mask)
    with torch.no_grad():
        hs = tiny(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(hs) == N_LAYERS + 1
    for layer in range(N_LAYERS):
        torch.testing.assert_close(acts[f"blocks.{layer}.hook_resid_pre"], hs[layer])
    for layer in range(N_LAYERS - 1):
        torch.testing.assert_close(acts[f"blocks.{layer}.hook_resid_post"], hs[layer + 1])
    # the last hidden_states entry is after the final norm, not the last block's output
    last = acts[f"blocks.{N_LAYERS - 1}.hook_resid_post"]
    assert not torch.allclose(last, hs[-1])
    with torch.no_grad():
        torch.testing.assert_close(_module(tiny, None, "final_norm")(last), hs[-1])


def test_sublayers_equal_module_outputs_and_residual_identities(tiny, batch) -> None:
    ids, mask = batch
    acts = capture(tiny, ids, ALL, mask)
    parts = [(layer, part) for layer in range(N_LAYERS) for part in ("attn", "ln2", "mlp")]
    hand = _hand_outputs(tiny, ids, mask, parts)
    for layer in range(N_LAYERS):
        a = {kind: acts[site(layer, kind).name] for kind in KINDS}
        torch.testing.assert_close(a["attn_out"], hand[layer, "attn"])
        torch.testing.assert_close(a["mlp_out"], hand[layer, "mlp"])
        torch.testing.assert_close(a["ln2_normalized"], hand[layer, "ln2"])
        # pre-norm block: resid_mid = resid_pre + attn_out, resid_post = resid_mid + mlp_out
        torch.testing.assert_close(a["resid_mid"], a["resid_pre"] + a["attn_out"])
        torch.testing.assert_close(a["mlp_in"], a["resid_mid"])  # TransformerLens: before ln2
        torch.testing.assert_close(a["resid_post"], a["resid_mid"] + a["mlp_out"])
        with torch.no_grad():
            ln2 = _module(tiny, layer, "ln2")(a["resid_mid"])
        torch.testing.assert_close(a["ln2_normalized"], ln2)
        assert a["resid_post"].shape == (*ids.shape, D)
        assert a["resid_post"].dtype == torch.float32


def test_stop_equals_full_forward_and_stops(tiny, batch) -> None:
    ids, mask = batch
    sites = ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out", "blocks.1.ln2.hook_normalized"]
    fired: list[str] = []
    probes = {
        "layer 2": _module(tiny, 2, "block"),
        "final norm": _module(tiny, None, "final_norm"),
        "lm_head": tiny.lm_head,
    }
    handles = [
        m.register_forward_pre_hook(lambda *_, n=name: fired.append(n))
        for name, m in probes.items()
    ]
    try:
        stopped = capture(tiny, ids, sites, mask)
        assert fired == []
        full = capture(tiny, ids, sites, mask, stop=False)
        assert fired == list(probes)  # the probes do fire when the forward runs to the end
    finally:
        for h in handles:
            h.remove()
    assert list(stopped) == list(full) == sorted(stopped, key=lambda n: int(n.split(".")[1]))
    for name in sites:
        torch.testing.assert_close(stopped[name], full[name], rtol=0, atol=0)


def test_stop_at_block_input(tiny, batch) -> None:
    """resid_pre of layer 1 stops before layer 1's attention runs."""
    ids, mask = batch
    fired = []
    h = _module(tiny, 1, "attn").register_forward_pre_hook(lambda *_: fired.append(1))
    try:
        acts = capture(tiny, ids, ["blocks.1.hook_resid_pre"], mask)
    finally:
        h.remove()
    assert fired == [] and acts["blocks.1.hook_resid_pre"].shape == (2, 7, D)


def test_hooks_removed_also_after_an_error(tiny, batch) -> None:
    ids, mask = batch
    before = _n_hooks(tiny)
    capture(tiny, ids, ALL, mask)
    capture(tiny, ids, ["blocks.2.hook_resid_post"], mask, stop=False)
    assert _n_hooks(tiny) == before

    def boom(*_):
        raise RuntimeError("boom")

    h = _module(tiny, 1, "mlp").register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            capture(tiny, ids, ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_post"], mask)
        assert _n_hooks(tiny) == before + 1
    finally:
        h.remove()
    assert _n_hooks(tiny) == before


def test_dtype_is_the_models_unless_float32(tiny, batch) -> None:
    ids, mask = batch
    half = copy.deepcopy(tiny).to(torch.bfloat16)
    name = "blocks.1.hook_resid_post"
    assert capture(half, ids, [name], mask)[name].dtype == torch.float32
    kept = capture(half, ids, [name], mask, dtype=None)[name]
    assert kept.dtype == torch.bfloat16
    torch.testing.assert_close(
        kept.float(), capture(tiny, ids, [name], mask)[name], rtol=0.05, atol=0.05
    )


def test_adapter_on_the_base_model(tiny, batch) -> None:
    ids, mask = batch
    base = tiny.base_model
    adapter = Adapter(base)
    assert (adapter.n_layers, adapter.d_model) == (N_LAYERS, D)
    name = "blocks.2.hook_attn_out"
    torch.testing.assert_close(
        capture(base, ids, [name], mask)[name], capture(tiny, ids, [name], mask)[name]
    )


@pytest.mark.parametrize(
    ("sites", "match"),
    [
        (["blocks.3.hook_resid_post"], r"layer 3 out of range \(valid: 0\.\.2\)"),
        (["blocks.0.hook_resid"], "unknown site 'blocks.0.hook_resid'"),
        ([], "no sites to capture"),
    ],
)
def test_bad_sites(tiny, batch, sites, match) -> None:
    before = _n_hooks(tiny)
    with pytest.raises(HusaiError, match=match) as err:
        capture(tiny, batch[0], sites, batch[1])
    assert "\n" not in str(err.value) and _n_hooks(tiny) == before


def test_bad_token_shape(tiny) -> None:
    with pytest.raises(HusaiError, match=r"token ids must be \[batch, tokens\], got \(7,\)"):
        capture(tiny, torch.zeros(7, dtype=torch.long), ["blocks.0.hook_resid_post"])


def test_unsupported_model_type() -> None:
    model = torch.nn.Linear(2, 2)
    model.config = types.SimpleNamespace(model_type="bert")
    with pytest.raises(
        HusaiError,
        match=r"unsupported model type 'bert' \(Linear; supported: "
        r"gpt2, llama\)",
    ):
        capture(model, torch.zeros(1, 2, dtype=torch.long), ["blocks.0.hook_resid_post"])
    with pytest.raises(HusaiError, match="unsupported model type None"):
        Adapter(torch.nn.Linear(2, 2))
