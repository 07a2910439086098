"""Generated broken input files for the CLI: activation files (`husai train-sae`), SAE
directories in each layout (`husai compare`), activation stores (`husai train-sae DIR`) and
toy checkpoints (`husai extract`). Each case is a directory of files plus the command that
reads it. Shared by tests/reliability and benchmarks/fuzz_long.py."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st

WHAT: list[str] = []  # the current case's mutations (for failure messages)


def say(line: str) -> None:
    WHAT.append(line)


MARKER = Path("/tmp/husai_fuzz_unpickled_marker")


class Evil:
    """A pickle whose loading would create MARKER (code execution)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(MARKER)!r}, 'w').close()",))


def evil_pickles() -> dict[str, bytes]:
    """Pickled payloads in the shapes a loader may meet: raw pickle (protocols 0, 2, 5),
    torch.save's zip, a state dict holding the payload."""
    import io

    out = {f"raw{p}": pickle.dumps(Evil(), protocol=p) for p in (0, 2, 5)}
    for name, obj in (("zip", Evil()), ("dict", {"ae": {"W": Evil()}, "x": torch.zeros(2)})):
        buf = io.BytesIO()
        torch.save(obj, buf)
        out[f"torch_{name}"] = buf.getvalue()
    return out


PICKLES = evil_pickles()


def safetensors_bytes(header: Any, data: bytes, header_len: int | None = None) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(h) if header_len is None else header_len
    return struct.pack("<Q", n % 2**64) + h + data


def parse(blob: bytes) -> tuple[dict[str, Any], bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


tensor_names = st.sampled_from(["activations", "W_enc", "W_dec", "b_enc", "b_dec", "x", ""])
DTYPES = ["F32", "F16", "BF16", "F64", "I8", "I32", "I64", "U8", "BOOL", "F8_E4M3", "C64"]
dtype_strings = st.one_of(
    st.sampled_from([*DTYPES, "F33", "", "f32", "float32"]), st.text(max_size=4)
)
json_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=6),
    st.lists(st.integers(-3, 10**13), max_size=4),
)


@st.composite
def broken_safetensors(draw: st.DrawFn, valid: bytes) -> tuple[bytes, bool]:
    """(bytes, must be refused) from a valid safetensors file."""
    header, data = parse(valid)
    names = [k for k in header if k != "__metadata__"]
    kind = draw(
        st.sampled_from(
            [
                "random",
                "truncate",
                "header_len",
                "not_json",
                "json_kind",
                "huge_shape",
                "offsets_beyond",
                "overlap",
                "dtype",
                "shape",
                "entry_junk",
                "nan",
                "pickle",
                "metadata",
                "int_dtype",
            ]
        )
    )
    name = draw(st.sampled_from(names))
    say(f"safetensors mutation: {kind} of {name!r}")
    entry = header[name]
    if kind == "random":
        return draw(st.binary(max_size=300)), True
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))], True
    if kind == "header_len":
        n = len(json.dumps(header).encode())
        bad = draw(st.sampled_from([0, 1, n + 1, n + 10**6, len(valid) * 2, 2**63, 2**64 - 1]))
        return safetensors_bytes(header, data, bad), True
    if kind == "not_json":
        junk = draw(st.sampled_from([b"{", b"\xff\xfe", b"{'a': 1}", b"[" * 5000, b"\x00" * 8]))
        return safetensors_bytes(junk, data), True
    if kind == "json_kind":
        return safetensors_bytes(draw(st.sampled_from([[], 1, "x", None, [1, 2]])), data), True
    if kind == "huge_shape":  # a declared 10^12-element tensor, the offsets lying to match
        entry.update(shape=[10**6, 10**6], data_offsets=[0, 4 * 10**12])
        return safetensors_bytes(header, data), True
    if kind == "offsets_beyond":
        entry["data_offsets"] = [entry["data_offsets"][0], len(data) + draw(st.integers(1, 10**9))]
        return safetensors_bytes(header, data), True
    if kind == "overlap":
        if len(names) > 1:
            header[names[1]]["data_offsets"] = list(header[names[0]]["data_offsets"])
            header[names[1]]["shape"] = list(header[names[0]]["shape"])
            header[names[1]]["dtype"] = header[names[0]]["dtype"]
            return safetensors_bytes(header, data), True
        entry["data_offsets"] = [0, entry["data_offsets"][1] // 2]
        return safetensors_bytes(header, data), True
    if kind == "dtype":
        entry["dtype"] = draw(dtype_strings.filter(lambda s: s != entry["dtype"]))
        return safetensors_bytes(header, data), True
    if kind == "int_dtype":  # same byte size, not floating point: refused, not reinterpreted
        entry["dtype"] = "I32"
        return safetensors_bytes(header, data), True
    if kind == "shape":
        shape = draw(st.lists(st.integers(-2, 40), max_size=3))
        if shape == entry["shape"]:
            shape = [*shape, 0]
        entry["shape"] = shape
        return safetensors_bytes(header, data), True
    if kind == "entry_junk":
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))
        entry[field] = draw(json_junk)
        return safetensors_bytes(header, data), field != "extra"
    if kind == "nan":
        a, b = entry["data_offsets"]
        value = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        fill = torch.tensor(value, dtype=torch.float32).numpy().tobytes()
        at = a + 4 * draw(st.integers(0, (b - a) // 4 - 1))
        return safetensors_bytes(header, data[:at] + fill + data[at + 4 :]), True
    if kind == "metadata":
        header["__metadata__"] = draw(
            st.one_of(json_junk, st.dictionaries(st.text(max_size=4), json_junk, max_size=2))
        )
        return safetensors_bytes(header, data), False
    return PICKLES[draw(st.sampled_from(sorted(PICKLES)))], True  # by name: torch.save's bytes vary


@dataclass
class Bases:
    """Valid inputs that the cases are made from."""

    root: Path
    acts: Path  # activation file
    sae: Path  # SAELens-layout SAE directory (husai's own)
    sparsify: Path
    store: Path
    toy: Path


def make_bases(root: Path) -> Bases:
    from husai.activations import save_activations
    from husai.config import SAEConfig, ToyConfig
    from husai.io import save_tensors, write_json
    from husai.sae.formats import saelens
    from husai.sae.registry import REGISTRY
    from husai.store import StoreWriter
    from husai.toy.model import ToyTransformer
    from husai.toy.train import save_checkpoint

    g = torch.Generator().manual_seed(0)
    acts = save_activations(root / "acts.safetensors", torch.randn(32, 8, generator=g), {})
    cfg = SAEConfig(architecture="topk", d_sae=16, k=2)
    saelens.save(REGISTRY["topk"](cfg, 8, [0]), root / "sae")
    sp = root / "sparsify"
    w = {
        "encoder.weight": torch.randn(16, 8, generator=g),
        "encoder.bias": torch.zeros(16),
        "W_dec": torch.randn(16, 8, generator=g),
        "b_dec": torch.zeros(8),
    }
    save_tensors(sp / "sae.safetensors", w)
    write_json(sp / "cfg.json", {"k": 2, "d_in": 8, "activation": "topk"})
    writer = StoreWriter(root / "store", d=8, hook_name="blocks.0.hook", n_shards=2, metadata={})
    for k in range(2):
        writer.write(k, torch.randn(16, 8, generator=g))
    writer.finish()
    toy_cfg = ToyConfig.model_validate({"model": {"p": 5, "d_model": 8, "n_heads": 2, "d_mlp": 16}})
    save_checkpoint(ToyTransformer(toy_cfg.model, seed=0), toy_cfg, {}, root / "toy")
    return Bases(root, acts, root / "sae", sp, root / "store", root / "toy")


TRAIN = ["--epochs", "1", "--d-sae", "8", "--k", "2", "--seeds", "1,2", "--batch-size", "8"]


@dataclass
class Case:
    kind: str
    args: list[str]  # the husai command line
    names: str  # what the error line must name (a path)
    must_fail: bool


def _json_mutations(draw: st.DrawFn, obj: Any) -> tuple[bytes, bool]:
    """cfg.json / config.json / index.json: (bytes, must be refused)."""
    kind = draw(st.sampled_from(["bytes", "truncate", "not_object", "drop", "junk", "deep"]))
    text = json.dumps(obj).encode()
    say(f"JSON mutation: {kind}")
    if kind == "bytes":
        return draw(st.binary(max_size=100)), True
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text) - 1))], True
    if kind == "not_object":
        return json.dumps(draw(st.sampled_from([[], 1, "x", None, [obj]]))).encode(), True
    if kind == "deep":
        return b"[" * 100_000 + b"]" * 100_000, True
    paths = _json_paths(obj)
    path = draw(st.sampled_from(paths))
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    if kind == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_junk)
    say(f"at {path}")
    return json.dumps(obj).encode(), False


def _json_paths(x: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(x, dict):
        for k, v in x.items():
            out += [(*prefix, k), *_json_paths(v, (*prefix, k))]
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out += [(*prefix, i), *_json_paths(v, (*prefix, i))]
    return out


@st.composite
def cases(draw: st.DrawFn, bases: Bases, where: Path) -> Case:
    """One broken input written under `where` (a fresh directory), with its command."""
    WHAT.clear()
    kind = draw(st.sampled_from(["acts", "sae", "sparsify", "dl", "store", "toy"]))
    if kind == "acts":
        suffix = draw(st.sampled_from([".safetensors", ".pt", ".pkl", ".bin"]))
        blob, fail = draw(broken_safetensors(bases.acts.read_bytes()))
        f = where / f"acts{suffix}"
        f.write_bytes(blob)
        return Case(kind, ["train-sae", str(f), "--out", str(where / "out"), *TRAIN], str(f), fail)
    if kind in ("sae", "sparsify"):
        src = bases.sae if kind == "sae" else bases.sparsify
        shutil.copytree(src, where / kind)
        d = where / kind
        weights = "sae_weights.safetensors" if kind == "sae" else "sae.safetensors"
        target = draw(st.sampled_from(["cfg", "weights", "contradict"]))
        say(f"{kind}: {target}")
        if target == "weights":
            blob, fail = draw(broken_safetensors((d / weights).read_bytes()))
            (d / weights).write_bytes(blob)
        elif target == "cfg":
            blob, fail = _json_mutations(draw, json.loads((d / "cfg.json").read_text()))
            (d / "cfg.json").write_bytes(blob)
        else:  # cfg.json's sizes contradict the tensors
            cfg = json.loads((d / "cfg.json").read_text())
            field = draw(st.sampled_from(["d_in", "d_sae", "k"]))
            say(f"cfg.json {field} contradicts the tensors")
            value = draw(st.sampled_from([1, 7, 9, 17, 10**9, -1, "8", 8.5]))
            key = "num_latents" if kind == "sparsify" and field == "d_sae" else field
            cfg[key] = value
            if kind == "sae" and field != "d_in" and draw(st.booleans()):
                cfg["husai"]["config"][field] = value  # husai's own config agrees with it
            (d / "cfg.json").write_text(json.dumps(cfg))
            fail = not (field == "k" and value in (1, 7, 9)) and not (
                kind == "sae" and field == "k"  # husai's config, not SAELens's k, is used
            )
        return Case(kind, ["compare", str(d), str(bases.sae)], str(d), fail)
    if kind == "dl":
        d = where / "dl"
        d.mkdir()
        cfg = {"trainer": {"dict_class": "AutoEncoderTopK", "k": 2}}
        (d / "config.json").write_text(json.dumps(cfg))
        payload = draw(st.sampled_from(sorted(PICKLES)))
        blob = PICKLES[payload] if draw(st.booleans()) else draw(st.binary(max_size=200))
        (d / "ae.pt").write_bytes(blob)
        return Case(kind, ["compare", str(d), str(bases.sae)], str(d), True)
    if kind == "store":
        shutil.copytree(bases.store, where / "store")
        d = where / "store"
        args = ["train-sae", str(d), "--out", str(where / "out"), *TRAIN]
        shards = sorted(p.name for p in d.glob("*.safetensors"))
        target = draw(st.sampled_from(["index", "index_rehashed", "shard", "shard_rehashed"]))
        if target.startswith("index"):
            index = json.loads((d / "index.json").read_text())
            blob, fail = _json_mutations(draw, index)
            if target == "index_rehashed":
                blob, fail = _rehash(blob), False
            (d / "index.json").write_bytes(blob)
        else:
            f = d / draw(st.sampled_from(shards))
            blob, fail = draw(broken_safetensors(f.read_bytes()))
            f.write_bytes(blob)
            if target == "shard_rehashed":  # the index made to agree with the broken shard
                _rehash_shard(d, f.name, blob)
            else:
                fail = True  # its sha256 no longer matches the index
        return Case(kind, args, str(d), fail)
    shutil.copytree(bases.toy, where / "toy")
    d = where / "toy"
    args = ["extract", str(d), "--out", str(where / "x.safetensors")]
    if draw(st.booleans()):
        blob, fail = draw(broken_safetensors((d / "model.safetensors").read_bytes()))
        (d / "model.safetensors").write_bytes(blob)
        if draw(st.booleans()):  # config.json's sha256 made to agree
            _rehash_toy(d)
    else:
        blob, fail = _json_mutations(draw, json.loads((d / "config.json").read_text()))
        (d / "config.json").write_bytes(blob)
    return Case(kind, args, str(d), fail)


def _rehash(blob: bytes) -> bytes:
    """An edited index.json with its content hash recomputed (so deeper checks run)."""
    from husai.store import content_hash

    try:
        index = json.loads(blob)
        index["content_hash"] = content_hash(index)
        return json.dumps(index).encode()
    except Exception:  # not an index any more: leave it
        return blob


def _rehash_shard(d: Path, name: str, blob: bytes) -> None:
    import hashlib

    from husai.store import content_hash

    index = json.loads((d / "index.json").read_text())
    for s in index["shards"]:
        if s["file"] == name:
            s["sha256"] = hashlib.sha256(blob).hexdigest()
    index["content_hash"] = content_hash(index)
    (d / "index.json").write_text(json.dumps(index))


def _rehash_toy(d: Path) -> None:
    from husai.io import sha256_file

    cfg = json.loads((d / "config.json").read_text())
    cfg["model_sha256"] = sha256_file(d / "model.safetensors")
    (d / "config.json").write_text(json.dumps(cfg))
