"""Corpora and token contexts (husai.lm.corpus): .txt / .jsonl / pre-tokenised ids, the
embedded stdlib corpus and its hash, contexts of the right length in a fixed order with
the BOS policy honoured, the budget, and bad input as one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _lm_text import WORDS, tiny_tokenizer, words

from husai.errors import HusaiError
from husai.io import save_tensors
from husai.lm import (
    Corpus,
    read_corpus,
    stdlib_corpus,
    tokenize_contexts,
    tokenizer_hash,
)

BOS, EOS = 1, 2


def _ids(text: str) -> list[int]:
    return [WORDS.index(w) + 3 for w in text.split()]


def test_txt_documents_split_at_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("w0 w1\nw2\n\n\n  \nw3 w4\n\nw5\n")
    c = read_corpus(p)
    assert c.documents == ("w0 w1\nw2", "w3 w4", "w5")
    q = tmp_path / "b.jsonl"
    q.write_text(json.dumps({"body": "w6 w7", "id": 1}) + "\n\n" + json.dumps({"body": "w8"}))
    both = read_corpus([p, q], text_field="body")
    assert both.documents == c.documents + ("w6 w7", "w8")
    assert both.name == "a.txt+b.jsonl" and both.hash != c.hash
    assert read_corpus([p, q], text_field="body").hash == both.hash


def test_contexts_concatenate_with_separator_then_cut() -> None:
    tok = tiny_tokenizer()
    corpus = Corpus("c", (words(0, 5), words(5, 4), words(9, 12)))
    stream = _ids(words(0, 5)) + [EOS] + _ids(words(5, 4)) + [EOS] + _ids(words(9, 12))
    ctx = tokenize_contexts(corpus, tok, 6, prepend_bos=True)
    assert ctx.ids.shape == (len(stream) // 5, 6) and ctx.ids.dtype == torch.int64
    assert (ctx.ids[:, 0] == BOS).all()
    assert ctx.ids[:, 1:].reshape(-1).tolist() == stream[: ctx.n_contexts * 5]
    no_bos = tokenize_contexts(corpus, tok, 6, prepend_bos=False)
    assert no_bos.ids.reshape(-1).tolist() == stream[: len(stream) // 6 * 6]
    assert BOS not in no_bos.ids.tolist()  # the tokenizer itself adds no BOS
    plain = tokenize_contexts(corpus, tok, 6, prepend_bos=False, separator=None)
    assert EOS not in plain.ids.tolist()
    again = tokenize_contexts(corpus, tok, 6, prepend_bos=True, chunk=1)
    assert torch.equal(again.ids, ctx.ids) and again.metadata() == ctx.metadata()
    meta = ctx.metadata()
    assert meta["prepend_bos"] and meta["bos_token_id"] == BOS and meta["context_size"] == 6
    assert meta["separator_token_id"] == EOS and meta["corpus_hash"] == corpus.hash
    assert meta["tokenizer_hash"] == tokenizer_hash(tok) == tokenizer_hash(tiny_tokenizer())


def test_budget_stops_early_and_keeps_order() -> None:
    tok = tiny_tokenizer()
    corpus = Corpus("c", tuple(words(i, 7) for i in range(50)))
    full = tokenize_contexts(corpus, tok, 8)
    two = tokenize_contexts(corpus, tok, 8, n_contexts=2)
    assert torch.equal(two.ids, full.ids[:2]) and two.n_documents < 5
    assert torch.equal(tokenize_contexts(corpus, tok, 8, max_tokens=8 * 3 + 5).ids, full.ids[:3])
    huge = tokenize_contexts(corpus, tok, 8, n_contexts=10_000)
    assert torch.equal(huge.ids, full.ids) and huge.n_documents == 50


def test_pre_tokenised_ids(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    ids = torch.arange(3, 3 + 30).reshape(3, 10)
    save_tensors(tmp_path / "ids.safetensors", {"input_ids": ids})
    np.save(tmp_path / "ids.npy", ids.numpy().astype(np.int32))
    a, b = read_corpus(tmp_path / "ids.safetensors"), read_corpus(tmp_path / "ids.npy")
    assert torch.equal(a.ids, ids.reshape(-1)) and a.hash == b.hash
    ctx = tokenize_contexts(a, tok, 7, prepend_bos=True)
    assert ctx.ids[:, 1:].reshape(-1).tolist() == list(range(3, 3 + 30))[: 6 * 5]
    assert ctx.ids.shape == (5, 7)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(HusaiError, match="obj.npy: not a readable .npy"):
        read_corpus(tmp_path / "obj.npy")  # pickled objects are never loaded
    np.save(tmp_path / "f.npy", np.zeros(4))
    with pytest.raises(HusaiError, match="token ids must be integers"):
        read_corpus(tmp_path / "f.npy")
    save_tensors(tmp_path / "big.safetensors", {"input_ids": torch.tensor([1, 99])})
    with pytest.raises(HusaiError, match="token id 99 out of the tokenizer's vocabulary"):
        tokenize_contexts(read_corpus(tmp_path / "big.safetensors"), tok, 2)


def test_stdlib_corpus_is_offline_and_stable() -> None:
    c = stdlib_corpus()
    assert len(c.documents) > 50 and sum(map(len, c.documents)) > 100_000
    assert c.hash == stdlib_corpus().hash and len(c.hash) == 64
    from pydoc_data.topics import topics

    assert c.documents[0] == topics[sorted(topics)[0]].strip()
    ctx = tokenize_contexts(c, tiny_tokenizer(), 16, n_contexts=4)
    assert ctx.ids.shape == (4, 16) and ctx.metadata()["corpus"] == "python-stdlib-docs"
    assert sys.version_info >= (3, 11)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("\n\n  \n"), r"empty corpus"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00bad"), r"cannot read the corpus file"),
    ],
)
def test_bad_text_file(tmp_path: Path, make, message: str) -> None:
    p = tmp_path / "c.txt"
    make(p)
    with pytest.raises(HusaiError, match=message):
        read_corpus(p)


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    with pytest.raises(HusaiError, match="missing.txt: corpus file not found"):
        read_corpus(tmp_path / "missing.txt")
    q = tmp_path / "c.jsonl"
    q.write_text(json.dumps({"text": "w1"}) + "\n" + json.dumps({"body": "w2"}) + "\n")
    with pytest.raises(HusaiError, match=r"c.jsonl:2: no 'text' field"):
        read_corpus(q)
    (tmp_path / "c.csv").write_text("a,b")
    with pytest.raises(HusaiError, match="unknown corpus format '.csv'"):
        read_corpus(tmp_path / "c.csv")
    with pytest.raises(HusaiError, match="5 tokens, shorter than one context of 8 tokens"):
        tokenize_contexts(Corpus("short", (words(0, 5),)), tok, 8)
    with pytest.raises(HusaiError, match="empty corpus"):
        tokenize_contexts(Corpus("none", ()), tok, 8)
    with pytest.raises(HusaiError, match="no BOS token"):
        tokenize_contexts(Corpus("c", (words(0, 50),)), tiny_tokenizer(bos=None), 8)
    with pytest.raises(HusaiError, match="holds no context"):
        tokenize_contexts(Corpus("c", (words(0, 50),)), tok, 8, max_tokens=7)


def test_stdlib_docstrings_read_without_importing(tmp_path: Path, monkeypatch) -> None:
    from husai.lm import corpus as corpus_mod

    (tmp_path / "pkg" / "test").mkdir(parents=True)
    (tmp_path / "b.py").write_text('"""Beta."""\nraise SystemExit("imported!")\n')
    (tmp_path / "a.py").write_text(
        '"""Alpha\n\nmore."""\nclass C:\n    """Gamma."""\n    def f(self):\n        """Delta."""\n'
    )
    (tmp_path / "pkg" / "test" / "t.py").write_text('"""A test."""\n')
    (tmp_path / "pkg" / "bad.py").write_text('"""Bad""" def (\n')
    (tmp_path / "pkg" / "none.py").write_text("x = 1\n")
    assert corpus_mod._module_docstrings(tmp_path) == [
        "Alpha\n\nmore.\n\nGamma.\n\nDelta.",
        "Beta.",
    ]
    monkeypatch.setattr(corpus_mod.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    c = stdlib_corpus(docstrings=True)
    assert c.name == "python-stdlib-docs+docstrings"
    assert c.documents[-2:] == ("Alpha\n\nmore.\n\nGamma.\n\nDelta.", "Beta.")
    assert c.hash != stdlib_corpus().hash
