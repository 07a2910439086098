"""Fixtures: the tiny models of _lm_tiny, one per family, and a padded batch."""

from __future__ import annotations

import pytest
import torch
from _lm_tiny import VOCAB, tiny_model


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request: pytest.FixtureRequest) -> torch.nn.Module:
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [2, 7] and an attention mask with the second row right-padded."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return ids, mask
