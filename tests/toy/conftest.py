"""Shared fixtures: one small model trained until it groks, reused by the toy tests."""

from __future__ import annotations

from typing import Any

import pytest

from husai.config import ToyConfig, ToyModelConfig, ToyTrainConfig
from husai.toy import ToyTransformer, train_toy

# A small config that groks and becomes Fourier-sparse in well under a minute on 2 CPU cores.
GROK_CONFIG = ToyConfig(
    model=ToyModelConfig(p=31, d_model=64, n_heads=4, d_mlp=256),
    train=ToyTrainConfig(train_frac=0.7, max_steps=3000, check_every=50, max_key_freqs=4),
)

# Tiny config for determinism / checkpoint tests (a few seconds).
TINY_CONFIG = ToyConfig(
    model=ToyModelConfig(p=11, d_model=16, n_heads=2, d_mlp=32),
    train=ToyTrainConfig(max_steps=30, check_every=10),
)


@pytest.fixture(scope="session")
def grokked_toy() -> tuple[ToyTransformer, dict[str, Any]]:
    return train_toy(GROK_CONFIG)


@pytest.fixture(scope="session")
def toy_tiny_config() -> ToyConfig:
    return TINY_CONFIG
