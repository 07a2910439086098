"""The sharded activation store (husai.store): round trip of bytes and metadata in each
dtype, resume of an unfinished store, every kind of damage detected on read, the token
policy's counts, the normalisation scale recorded and undoable. No language model here
(tests/lm/test_extract.py fills stores from one)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from husai.errors import HusaiError
from husai.integrity import seal
from husai.io import read_json, write_json
from husai.store import (
    INDEX,
    ActivationStore,
    StoreWriter,
    TokenPolicy,
    apply_token_policy,
    check_same_hook,
    shard_name,
)

D, HOOK = 6, "blocks.1.hook_resid_post"
META = {"model_name": "tiny", "corpus_hash": "abc", "context_size": 4}


def _rows(k: int, n: int = 5) -> torch.Tensor:
    return torch.randn(n + k, D, generator=torch.Generator().manual_seed(k)) * (k + 1)


def _write(path: Path, n_shards: int = 3, dtype: str = "float32", **kw) -> ActivationStore:
    w = StoreWriter(path, d=D, hook_name=HOOK, n_shards=n_shards, dtype=dtype, metadata=META, **kw)
    for k in range(n_shards):
        w.write(k, _rows(k), {"seen": 9 + k, "kept": 5 + k}, extra={"contexts": [k, k + 1]})
    return w.finish()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_round_trip_bytes_and_metadata(tmp_path: Path, dtype: str) -> None:
    store = _write(tmp_path / "s", dtype=dtype)
    t = getattr(torch, dtype)
    want = [_rows(k).to(t).float() for k in range(3)]
    for got, w in zip(store.iter_shards(), want, strict=True):
        assert torch.equal(got, w)
    assert torch.equal(store.load_all(), torch.cat(want))
    assert (store.d, store.dtype, store.hook_name, store.n_shards) == (D, dtype, HOOK, 3)
    assert store.n_tokens == 5 + 6 + 7 and store.shard_rows == [5, 6, 7]
    assert store.metadata == META
    assert store.counts["seen"] == 9 + 10 + 11 and store.counts["kept"] == 18
    index = read_json(tmp_path / "s" / INDEX)
    assert index["complete"] and index["normalization"]["scale"] == 1.0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [INDEX] + [
        shard_name(k) for k in range(3)
    ]
    for entry in index["shards"]:
        data = (tmp_path / "s" / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    # the same content written again gives the same bytes and the same content hash
    again = _write(tmp_path / "t", dtype=dtype)
    assert again.content_hash == store.content_hash
    for k in range(3):
        a, b = (tmp_path / "s" / shard_name(k)), (tmp_path / "t" / shard_name(k))
        assert a.read_bytes() == b.read_bytes()


def test_content_hash_tracks_content_and_settings(tmp_path: Path) -> None:
    a = _write(tmp_path / "a")
    b = _write(tmp_path / "b", dtype="bfloat16")
    w = StoreWriter(tmp_path / "c", d=D, hook_name=HOOK, n_shards=3, metadata=META)
    for k in range(3):
        w.write(k, _rows(k) + (k == 2))
    c = w.finish()
    assert len({a.content_hash, b.content_hash, c.content_hash}) == 3


def test_resume_keeps_finished_shards(tmp_path: Path) -> None:
    path = tmp_path / "s"
    w = StoreWriter(path, d=D, hook_name=HOOK, n_shards=3, metadata=META)
    w.write(0, _rows(0))
    w.write(1, _rows(1))
    index = read_json(path / INDEX)
    assert not index["complete"] and len(index["shards"]) == 2
    with pytest.raises(HusaiError, match=r"unfinished store \(2 of 3 shards\)"):
        ActivationStore(path)
    mtime = (path / shard_name(0)).stat().st_mtime_ns
    (path / shard_name(1)).write_bytes(b"truncated")  # killed mid-way: shard 1 is bad
    w2 = StoreWriter(path, d=D, hook_name=HOOK, n_shards=3, metadata=META)
    assert w2.kept == [0] and not w2.has(1)
    assert (path / shard_name(0)).stat().st_mtime_ns == mtime
    w2.write(1, _rows(1))
    w2.write(2, _rows(2))
    assert w2.finish().content_hash == _write(tmp_path / "t").content_hash


def test_resume_refuses_other_settings_or_foreign_directory(tmp_path: Path) -> None:
    _write(tmp_path / "s")
    with pytest.raises(HusaiError, match=r"other settings \(differs in: dtype, metadata\)"):
        StoreWriter(tmp_path / "s", d=D, hook_name=HOOK, n_shards=3, dtype="float16", metadata={})
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(HusaiError, match="not empty and not an activation store"):
        StoreWriter(tmp_path / "x", d=D, hook_name=HOOK, n_shards=1)
    assert (tmp_path / "x" / "notes.txt").read_text() == "mine"


def _damage(path: Path, what: str) -> None:
    shard = path / shard_name(1)
    if what == "missing":
        shard.unlink()
    elif what == "truncated":
        shard.write_bytes(shard.read_bytes()[:-7])
    else:  # a valid shard of another width, or of another hook, with the index patched
        from husai import store as st

        hook = HOOK if what == "width" else "blocks.0.hook_resid_post"
        width = D + 1 if what == "width" else D
        data = st._shard_bytes(torch.zeros(6, width), {"hook_name": hook})
        shard.write_bytes(data)
        index = read_json(path / INDEX)
        index["shards"][1]["sha256"] = hashlib.sha256(data).hexdigest()
        index["content_hash"] = st.content_hash(index)
        write_json(path / INDEX, seal(index))  # a consistent index, only the shard is bad


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("missing", r"shard_00001\.safetensors: missing shard"),
        ("truncated", r"shard_00001\.safetensors: sha256 does not match the index"),
        ("width", r"'activations' must be \[6, 6\], got \(6, 7\)"),
        ("hook", r"holds hook 'blocks\.0\.hook_resid_post' .*\(mixed hooks\)"),
    ],
)
def test_damaged_shard_is_one_line(tmp_path: Path, what: str, message: str) -> None:
    store = _write(tmp_path / "s")
    _damage(tmp_path / "s", what)
    store = ActivationStore(tmp_path / "s")
    assert torch.equal(store.read_shard(0), _rows(0))  # the others still read
    with pytest.raises(HusaiError, match=message) as e:
        store.verify()
    assert "\n" not in str(e.value)


def test_bad_index_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(HusaiError, match="not an activation store"):
        ActivationStore(tmp_path / "nothing")
    _write(tmp_path / "s")
    index = read_json(tmp_path / "s" / INDEX)
    index["metadata"]["model_name"] = "other"
    write_json(tmp_path / "s" / INDEX, index)
    with pytest.raises(HusaiError, match="content hash does not match"):
        ActivationStore(tmp_path / "s")
    (tmp_path / "s" / INDEX).write_text(json.dumps({"format": "x"}))
    with pytest.raises(HusaiError, match="not an activation store index"):
        ActivationStore(tmp_path / "s")


def test_check_names_what_does_not_match(tmp_path: Path) -> None:
    store = _write(tmp_path / "s")
    store.check(hook_name=HOOK, d=D, corpus_hash="abc")
    with pytest.raises(HusaiError, match=r"does not match \(corpus_hash 'abc', expected 'x'\)"):
        store.check(corpus_hash="x", d=D)


def test_a_store_of_no_rows_is_refused(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path / "s", d=D, hook_name=HOOK, n_shards=1)
    w.write(0, torch.zeros(0, D), {"seen": 4, "dropped_first": 4})
    with pytest.raises(HusaiError, match=r"no tokens kept \(token policy counts: .*'seen': 4"):
        w.finish()


def test_mixed_hooks_across_stores(tmp_path: Path) -> None:
    a = _write(tmp_path / "a")
    w = StoreWriter(tmp_path / "b", d=D, hook_name="blocks.0.hook_mlp_out", n_shards=1)
    w.write(0, _rows(0))
    b = w.finish()
    assert check_same_hook([a, a]) == HOOK
    with pytest.raises(HusaiError, match="different hooks .*mixed hooks"):
        check_same_hook([a, b])


def test_normalisation_scale_recorded_and_undoable(tmp_path: Path) -> None:
    policy = TokenPolicy(normalize="expected_average_only_in")
    store = _write(tmp_path / "s", policy=policy)
    raw = store.load_all(normalize=False)
    assert torch.equal(raw, torch.cat([_rows(k) for k in range(3)]))
    mean_norm = float(raw.norm(dim=-1).double().mean())
    index = read_json(tmp_path / "s" / INDEX)
    assert index["normalization"]["method"] == "expected_average_only_in"
    assert index["normalization"]["mean_norm"] == pytest.approx(mean_norm, rel=1e-9)
    assert store.scale == pytest.approx(math.sqrt(D) / mean_norm, rel=1e-9)
    scaled = store.load_all()
    assert float(scaled.norm(dim=-1).mean()) == pytest.approx(math.sqrt(D), rel=1e-5)
    torch.testing.assert_close(scaled / store.scale, raw)


def test_token_policy_counts() -> None:
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(2, 6, D, generator=g)
    acts[0, 0] *= 1000  # position 0: an attention-sink outlier
    acts[1, 3] *= 1000  # an outlier inside a context
    ids = torch.tensor([[7, 1, 2, 3, 7, 4], [7, 5, 6, 1, 2, 3]])
    rows, c = apply_token_policy(acts, TokenPolicy(drop_bos=False), ids, bos_id=7)
    assert c == {
        "seen": 12, "dropped_first": 2, "dropped_bos": 0, "dropped_outlier": 0,
        "clipped_outlier": 0, "kept": 10,
    }  # fmt: skip
    assert torch.equal(rows, torch.cat([acts[0, 1:], acts[1, 1:]]))
    policy = TokenPolicy(outlier_factor=10.0)
    rows, c = apply_token_policy(acts, policy, ids, bos_id=7)
    assert (c["dropped_first"], c["dropped_bos"], c["dropped_outlier"], c["kept"]) == (2, 1, 1, 8)
    assert c["seen"] == c["kept"] + c["dropped_first"] + c["dropped_bos"] + c["dropped_outlier"]
    keep = [acts[0, 1], acts[0, 2], acts[0, 3], acts[0, 5], *acts[1, [1, 2, 4, 5]]]
    assert torch.equal(rows, torch.stack(keep))
    clip = TokenPolicy(drop_bos=False, outlier_factor=10.0, outliers="clip")
    before = acts.clone()
    rows, c = apply_token_policy(acts, clip, ids, bos_id=7)
    assert torch.equal(acts, before)
    assert (c["clipped_outlier"], c["dropped_outlier"], c["kept"]) == (1, 0, 10)
    median = float(acts[1, 1:].norm(dim=-1).median())
    assert float(rows[5 + 2].norm()) == pytest.approx(10 * median, rel=1e-5)
    assert torch.allclose(rows[7] / rows[7].norm(), acts[1, 3] / acts[1, 3].norm())
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    _, c = apply_token_policy(acts, TokenPolicy(), ids, bos_id=7, mask_BT=mask)
    assert (c["seen"], c["kept"]) == (10, 7)
    with pytest.raises(HusaiError, match="outlier_factor must be > 1"):
        TokenPolicy(outlier_factor=0.5)
    with pytest.raises(HusaiError, match="unknown normalize"):
        TokenPolicy(normalize="layer_norm")


def test_same_bytes_from_another_process(tmp_path: Path) -> None:
    """Shard files carry one metadata key, so their bytes (and the content hash) do not
    depend on the process that wrote them (safetensors orders several keys at random)."""
    import subprocess
    import sys

    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[2]); import test_store as t; "
        "from pathlib import Path; print(t._write(Path(sys.argv[1])).content_hash)"
    )
    here = str(Path(__file__).parent)
    hashes = {
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"p{i}"), here],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        for i in range(2)
    }  # fmt: skip
    assert hashes == {_write(tmp_path / "here").content_hash}
    for k in range(3):
        assert (tmp_path / "p0" / shard_name(k)).read_bytes() == (
            tmp_path / "p1" / shard_name(k)
        ).read_bytes()
