"""Fixtures: the tiny models of _lm_tiny, one per family, a padded batch, and a tiny Llama
saved with its tokenizer (`model_dir`) beside a word corpus (`corpus`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _lm_text import tiny_tokenizer, words
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


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama and its tokenizer, saved (a local model directory)."""
    d = tmp_path_factory.mktemp("tiny_llama")
    tiny_model("llama").save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .txt corpus of 30 documents of 60 words."""
    f = tmp_path_factory.mktemp("corpus") / "text.txt"
    f.write_text("\n\n".join(words(i * 7, 60) for i in range(30)))
    return f
