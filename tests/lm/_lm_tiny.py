"""Tiny randomly initialised Llama and GPT-2 models (d_model 32, 3 layers), built from configs."""

from __future__ import annotations

import pytest
import torch

N_LAYERS, D, VOCAB = 3, 32, 64


def tiny_model(family: str) -> torch.nn.Module:
    transformers = pytest.importorskip(
        "transformers", reason="transformers not installed (pip install -e '.[lm]')"
    )
    torch.manual_seed(0)
    if family == "llama":
        config = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=D,
            intermediate_size=64,
            num_hidden_layers=N_LAYERS,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=None,
        )
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.GPT2Config(
            vocab_size=VOCAB,
            n_embd=D,
            n_layer=N_LAYERS,
            n_head=4,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = transformers.GPT2LMHeadModel(config)
    return model.eval()
