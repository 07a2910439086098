"""Extraction into stores (husai.lm.extract) on tiny Llama and GPT-2 models: the stored rows
equal capturing the same contexts directly, one store per site from one pass, resume after
a killed extraction keeps the finished shards and ends identical to an uninterrupted run,
the token policy's counts, bf16 storage, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _lm_text import tiny_tokenizer, words
from _lm_tiny import D

from husai.errors import HusaiError
from husai.io import read_json
from husai.lm import Corpus, capture, extract_to_stores, tokenize_contexts, tokenizer_hash
from husai.store import INDEX, ActivationStore, TokenPolicy, shard_name

pytest.importorskip("transformers", reason="transformers not installed (pip install -e '.[lm]')")

SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]


@pytest.fixture(scope="module")
def contexts():
    corpus = Corpus("c", tuple(words(3 * i, 9 + i % 5) for i in range(40)))
    return tokenize_contexts(corpus, tiny_tokenizer(), 8, prepend_bos=True, n_contexts=22)


def _extract(model, contexts, out: Path, **kw):
    kw = {"model_name": "tiny", "batch_size": 3, "contexts_per_shard": 5, **kw}
    return extract_to_stores(model, contexts, SITES, out, **kw)


def test_extraction_equals_direct_capture(tiny, contexts, tmp_path: Path) -> None:
    res = _extract(tiny, contexts, tmp_path / "s")
    assert res.stores == {h: tmp_path / "s" / h for h in SITES}
    assert (res.n_contexts, res.shards_written, res.shards_kept) == (22, 5, 0)
    assert res.tokens_forward == 22 * 8 and res.tokens_per_s > 0
    direct = capture(tiny, contexts.ids, SITES)
    for h in SITES:
        store = ActivationStore(res.stores[h])
        want = direct[h][:, 1:].reshape(-1, D)  # position 0 (the BOS) dropped
        torch.testing.assert_close(store.load_all(), want, rtol=1e-5, atol=1e-6)
        assert store.n_tokens == res.tokens_stored[h] == 22 * 7
        assert store.shard_rows == [35, 35, 35, 35, 14]
        assert store.counts == res.counts[h]
        assert store.counts["seen"] == 22 * 8 and store.counts["dropped_first"] == 22
        meta = store.metadata
        assert meta["hook_name"] == h == store.hook_name and meta["model_name"] == "tiny"
        assert meta["layer"] == int(h.split(".")[1]) and meta["site"] in h
        assert meta["context_size"] == 8 and meta["prepend_bos"] is True
        assert meta["corpus_hash"] == contexts.corpus_hash
        assert meta["tokenizer_hash"] == contexts.tokenizer_hash
        assert read_json(res.stores[h] / INDEX)["shards"][1]["extra"] == {"contexts": [5, 10]}


def test_single_site_store_and_bf16(tiny, contexts, tmp_path: Path) -> None:
    res = extract_to_stores(
        tiny, contexts, SITES[:1], tmp_path / "one", model_name="tiny", dtype="bfloat16"
    )
    store = ActivationStore(tmp_path / "one")
    assert res.stores == {SITES[0]: tmp_path / "one"} and store.dtype == "bfloat16"
    want = capture(tiny, contexts.ids, SITES[:1])[SITES[0]][:, 1:].reshape(-1, D)
    assert torch.equal(store.load_all(), want.to(torch.bfloat16).float())


class _Killed(Exception):
    pass


def _kill_after(n: int):
    def on_shard(k: int) -> None:
        if k + 1 == n:
            raise _Killed

    return on_shard


def test_resume_after_kill_keeps_shards_and_matches(tiny, contexts, tmp_path: Path) -> None:
    whole = _extract(tiny, contexts, tmp_path / "whole")
    out = tmp_path / "s"
    with pytest.raises(_Killed):
        _extract(tiny, contexts, out, on_shard=_kill_after(2))
    with pytest.raises(HusaiError, match="unfinished store"):
        ActivationStore(out / SITES[0])
    stamps = {(h, k): (out / h / shard_name(k)).stat().st_mtime_ns for h in SITES for k in (0, 1)}
    before = {h: read_json(out / h / INDEX)["shards"] for h in SITES}
    # the second store also loses its last shard and the index entry for it (killed between)
    (out / SITES[1] / shard_name(1)).unlink()
    res = _extract(tiny, contexts, out)
    assert (res.shards_written, res.shards_kept) == (4, 1)
    assert res.tokens_forward == (22 - 5) * 8
    for h in SITES:
        for k in (0, 1):
            if (h, k) == (SITES[1], 1):
                continue
            assert (out / h / shard_name(k)).stat().st_mtime_ns == stamps[h, k]
        after = read_json(out / h / INDEX)["shards"]
        assert after[0] == before[h][0]
        a, b = ActivationStore(out / h), ActivationStore(whole.stores[h])
        assert a.content_hash == b.content_hash
        for k in range(a.n_shards):
            assert (out / h / shard_name(k)).read_bytes() == (
                whole.stores[h] / shard_name(k)
            ).read_bytes()
    again = _extract(tiny, contexts, out)  # complete: nothing recomputed
    assert (again.shards_written, again.shards_kept, again.tokens_forward) == (0, 5, 0)


def test_truncated_shard_is_recomputed(tiny, contexts, tmp_path: Path) -> None:
    res = _extract(tiny, contexts, tmp_path / "s")
    h = SITES[0]
    f = res.stores[h] / shard_name(4)
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])
    with pytest.raises(HusaiError, match="sha256 does not match"):
        ActivationStore(res.stores[h]).verify()
    again = _extract(tiny, contexts, tmp_path / "s")
    assert (again.shards_written, again.tokens_forward) == (1, 2 * 8)
    assert f.read_bytes() == good


def test_policy_counts_and_normalisation(tiny, contexts, tmp_path: Path) -> None:
    factor = 1.1
    policy = TokenPolicy(outlier_factor=factor, normalize="expected_average_only_in")
    res = _extract(tiny, contexts, tmp_path / "s", policy=policy)
    # the outliers, found here independently: per context, norm > factor × median norm
    acts = capture(tiny, contexts.ids, SITES[:1])[SITES[0]][:, 1:]
    norms = acts.norm(dim=-1)
    out = norms > factor * norms.median(dim=1, keepdim=True).values
    assert out.any()
    c = res.counts[SITES[0]]
    assert c["seen"] == 22 * 8 and c["dropped_first"] == 22 and c["dropped_bos"] == 0
    assert c["dropped_outlier"] == int(out.sum())
    assert c["kept"] == c["seen"] - c["dropped_first"] - c["dropped_outlier"]
    store = ActivationStore(res.stores[SITES[0]])
    assert store.n_tokens == c["kept"]
    torch.testing.assert_close(store.load_all(normalize=False), acts[~out], rtol=1e-5, atol=1e-6)
    assert float(store.load_all().norm(dim=-1).mean()) == pytest.approx(D**0.5, rel=1e-5)
    assert store.index["token_policy"]["outlier_factor"] == factor


def test_bad_input(tiny, contexts, tmp_path: Path) -> None:
    res = _extract(tiny, contexts, tmp_path / "s")
    store = ActivationStore(res.stores[SITES[0]])
    store.check(tokenizer_hash=tokenizer_hash(tiny_tokenizer()))
    with pytest.raises(HusaiError, match="store does not match \\(tokenizer_hash"):
        store.check(tokenizer_hash=tokenizer_hash(tiny_tokenizer(bos=None)))
    other = tokenize_contexts(Corpus("d", (words(1, 200),)), tiny_tokenizer(), 8, n_contexts=22)
    with pytest.raises(HusaiError, match=r"other settings \(differs in: metadata\)"):
        _extract(tiny, other, tmp_path / "s")
    with pytest.raises(HusaiError, match="layer 9 out of range"):
        extract_to_stores(
            tiny, contexts, ["blocks.9.hook_resid_post"], tmp_path / "t", model_name="m"
        )
    big = type(contexts)(**{**contexts.__dict__, "ids": contexts.ids + 1000})
    with pytest.raises(HusaiError, match="out of the model's vocabulary"):
        _extract(tiny, big, tmp_path / "u")
    with pytest.raises(HusaiError, match="store dtype 'int8'"):
        _extract(tiny, contexts, tmp_path / "v", dtype="int8")
