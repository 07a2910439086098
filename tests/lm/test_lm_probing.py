"""Token-level probing tasks (husai.lm.tasks) and the LM probing block on the tiny Llama."""

from __future__ import annotations

import pytest
import torch
from _lm_text import tiny_tokenizer
from _lm_tiny import D, tiny_model

from husai.config import MetricsConfig, SAEConfig
from husai.experiments.lm_eval import eval_activations
from husai.experiments.probing import lm_probing
from husai.lm.tasks import PROPERTIES, token_labels, token_strings
from husai.sae import build_sae

pytest.importorskip("transformers", reason="transformers not installed (pip install -e '.[lm]')")


def test_token_labels_follow_their_definitions() -> None:
    strings = [" the", "Hello", " 42", ".)", " def", "\n", "x", " the", " the", "x"]
    ids = torch.tensor([7, 8, 9, 10, 11, 12, 13, 7, 7, 13])
    labels = token_labels(ids, strings)
    expect = {
        "whitespace-prefixed": [s[0] in " \n" for s in strings],
        "capitalised": [s == "Hello" for s in strings],
        "digits": [s == " 42" for s in strings],
        "punctuation": [s == ".)" for s in strings],
        "python keyword": [s == " def" for s in strings],
        "newline": [s == "\n" for s in strings],
        # the three most frequent ids: 7 (×3), 13 (×2), then 8 (the lowest of the singles)
        "token = ' the'": [i == 7 for i in ids.tolist()],
        "token = 'x'": [i == 13 for i in ids.tolist()],
        "token = 'Hello'": [i == 8 for i in ids.tolist()],
    }
    assert set(labels) == set(expect) and set(PROPERTIES) <= set(labels)
    for name, want in expect.items():
        assert labels[name].tolist() == want, name


def test_lm_probing_on_the_tiny_llama() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 43, (8, 16), generator=g)
    ids[:, 1::3] = 5  # a frequent token
    ids[:, 2::4] = 9
    x = eval_activations(model, "blocks.1.hook_resid_post", ids)
    sae = build_sae(SAEConfig(architecture="relu", d_sae=2 * D), D, [0, 1])
    init = build_sae(SAEConfig(architecture="relu", d_sae=2 * D), D, [2, 3])
    m = MetricsConfig(n_bootstrap=100, probing_ks=(1, 4), probing_min_positives=10)
    block = lm_probing(sae, init, x, ids, tok, 2.0, m)
    assert block["n_tasks"] == len(PROPERTIES) + 3
    assert "whitespace-prefixed" in block["tasks"] and "skipped" in block["tasks"]["digits"]
    strings = token_strings(tok, ids[:, 1:])
    t = block["tasks"][f"token = {strings[0]!r}"]  # id 5, every third token
    assert "skipped" not in t and t["n_positive"] == int((ids[:, 1:] == 5).sum())
    assert t["raw_full"]["auc"] > 0.9  # token identity is in the residual stream
    assert len(t["trained"]["4"]["auc"]["per_seed"]) == 2
    assert block["n_probed"] == 2  # ids 5 and 9; the third most frequent is a rare word
