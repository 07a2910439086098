"""Functional correspondence on a tiny Llama: the LM probe with a planted copy (seed B = seed
A with its latents permuted): matched partners' fingerprints and steering agree exactly,
substitution changes nothing, random partners score lower."""

from __future__ import annotations

import pytest
import torch
from _functional import check_planted, copy_permuted
from _lm_tiny import D, tiny_model

from husai.config import MetricsConfig, SAEConfig
from husai.experiments.functional import LMProbe, functional_block
from husai.sae import build_sae

pytest.importorskip("transformers", reason="transformers not installed (pip install -e '.[lm]')")


def test_planted_copy_on_a_tiny_llama() -> None:
    model = tiny_model("llama")
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    one = build_sae(SAEConfig(architecture="relu", d_sae=2 * D), D, [0])
    probe = LMProbe(model, "blocks.1.hook_resid_post", ids, top_k=5, batch_size=32)
    assert probe.describe["n_tokens"] == 2 * 11
    m = MetricsConfig(n_bootstrap=200)
    block = functional_block(copy_permuted(one), probe, m, 6, scale=2.0)
    check_planted(block)
    assert block["steering"]["top_agreement"]["k"] == 5
