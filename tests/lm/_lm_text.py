"""A tiny word-level tokenizer built in memory (no files, no download), wrapped like a real
one, with ids below the tiny models' vocabulary (_lm_tiny.VOCAB)."""

from __future__ import annotations

import pytest

WORDS = [f"w{i}" for i in range(40)]


def tiny_tokenizer(bos: str | None = "<bos>"):  # noqa: ANN201 - a transformers tokenizer
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    special = {"unk_token": "<unk>", "eos_token": "<eos>"}
    if bos is not None:
        special["bos_token"] = bos
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def words(start: int, n: int) -> str:
    """n words w{start}, w{start+1}, … (mod 40), space-separated."""
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))
