"""The sharded activation store: more activations than fit in memory, on disk.

A store is a directory of shards plus an index:

- `shard_00000.safetensors`, …: tensor `activations` [rows, d] in the store's dtype
  (float32, bfloat16 or float16) and one metadata key, `husai_store` (canonical JSON:
  format, hook_name, d, dtype, shard number), so that a shard's bytes are the same
  whichever process wrote it;
- `index.json` (canonical JSON), written last and rewritten after every shard: `format`,
  `version`, `complete`, `d`, `dtype`, `hook_name`, `n_shards`, `metadata` (the caller's:
  model, layer, site, corpus and tokenizer hashes, context_size, prepend_bos, …),
  `token_policy`, per shard `{file, rows, sha256, norm_sum, counts, extra}`, and once
  complete `n_tokens`, `counts` (the token policy's totals), `normalization`
  (`{method, mean_norm, scale}`) and `content_hash`.

Shards are written atomically (husai.io) and hashed (sha256 of the file). A writer opened
on a directory that holds an unfinished store of the same settings keeps every shard whose
file still matches its hash and recomputes the rest, so a killed extraction resumes. The
content hash is a hash of the settings, the shard hashes and the normalisation: two stores
with the same content hash hold the same bytes.

Shards hold the activations as captured (after the token policy's drops and clips); the
normalisation is a scale the reader applies (`normalize=True`, the default) or leaves off
(`normalize=False`, the raw values), so it can always be undone: for
`expected_average_only_in` (as SAELens) scale = √d / mean row norm over the whole store.

This room reads and writes tensors only (torch + safetensors): it knows nothing of language
models. `husai.lm.extract` fills a store through `StoreWriter`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from husai.errors import HusaiError
from husai.integrity import note, read_sealed, seal
from husai.io import dumps_json, sha256_file, write_bytes, write_json

FORMAT = "husai-activation-store"
VERSION = 1
INDEX = "index.json"
KEY = "activations"
SHARD_META_KEY = "husai_store"
MAX_SHARD_HEADER = 16 * 2**20  # a shard's bytes beyond its rows: header and metadata
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
NORMALIZATIONS = ("none", "expected_average_only_in")
COUNT_KEYS = ("seen", "dropped_first", "dropped_bos", "dropped_outlier", "clipped_outlier", "kept")


def shard_name(k: int) -> str:
    return f"shard_{k:05d}.safetensors"


@dataclass(frozen=True)
class TokenPolicy:
    """Which token positions go into a store, and how they are scaled.

    - `drop_first`: drop position 0 of every context (the BOS, or whatever token the model
      uses as its attention sink: SmolLM2's is ~150× the median norm at layer 15);
    - `drop_bos`: drop every token whose id is the BOS id (also inside a context, e.g.
      GPT-2's `<|endoftext|>` between documents);
    - `outlier_factor`: a token whose norm exceeds this factor × the median norm of its
      context's kept tokens is an outlier (None: no outlier check);
    - `outliers`: `drop` them, or `clip` them (rescale the row to factor × median norm);
    - `normalize`: `none`, or `expected_average_only_in` (SAELens's name): the reader
      scales the store so that its mean row norm is √d; the scale is in the index.
    """

    drop_first: bool = True
    drop_bos: bool = True
    outlier_factor: float | None = None
    outliers: Literal["drop", "clip"] = "drop"
    normalize: Literal["none", "expected_average_only_in"] = "none"

    def __post_init__(self) -> None:
        if self.outlier_factor is not None and not self.outlier_factor > 1:
            raise HusaiError(f"token policy: outlier_factor must be > 1, got {self.outlier_factor}")
        if self.outliers not in ("drop", "clip"):
            raise HusaiError(f"token policy: outliers must be drop or clip, got {self.outliers!r}")
        if self.normalize not in NORMALIZATIONS:
            raise HusaiError(
                f"token policy: unknown normalize {self.normalize!r} "
                f"(valid: {', '.join(NORMALIZATIONS)})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def empty_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


def apply_token_policy(
    acts_BTD: Tensor,
    policy: TokenPolicy,
    ids_BT: Tensor | None = None,
    bos_id: int | None = None,
    mask_BT: Tensor | None = None,
) -> tuple[Tensor, dict[str, int]]:
    """Rows [n, D] (float32) of the positions `policy` keeps, in context-major order, and
    the counts: seen, dropped_first, dropped_bos, dropped_outlier, clipped_outlier, kept
    (seen = kept + the three drops; a clipped row is kept). The outlier median is per
    context, over the tokens the first two rules keep, so it does not depend on batching.
    `mask_BT` (an attention mask) leaves out padding before anything is counted."""
    if acts_BTD.dim() != 3:
        raise HusaiError(f"activations must be [batch, tokens, d], got {tuple(acts_BTD.shape)}")
    B, T, _ = acts_BTD.shape
    clip = policy.outlier_factor is not None and policy.outliers == "clip"
    acts = acts_BTD.to(torch.float32, copy=clip)  # clipping never touches the caller's tensor
    valid = torch.ones(B, T, dtype=torch.bool) if mask_BT is None else mask_BT.bool().cpu()
    counts = empty_counts()
    counts["seen"] = int(valid.sum())
    keep = valid.clone()
    if policy.drop_first and T:
        counts["dropped_first"] = int(keep[:, 0].sum())
        keep[:, 0] = False
    if policy.drop_bos and ids_BT is not None and bos_id is not None:
        bos = (ids_BT.cpu() == bos_id) & keep
        counts["dropped_bos"] = int(bos.sum())
        keep &= ~bos
    if policy.outlier_factor is not None:
        norms = acts.norm(dim=-1).cpu()
        for b in range(B):
            kept_norms = norms[b][keep[b]]
            if not len(kept_norms):
                continue
            limit = policy.outlier_factor * float(kept_norms.median())
            out = keep[b] & (norms[b] > limit)
            n_out = int(out.sum())
            if not n_out:
                continue
            if policy.outliers == "drop":
                keep[b] &= ~out
                counts["dropped_outlier"] += n_out
            else:
                idx = out.nonzero().squeeze(-1).to(acts.device)
                factor = (limit / norms[b][out]).to(acts.device, acts.dtype)
                acts[b, idx] = acts[b, idx] * factor[:, None]
                counts["clipped_outlier"] += n_out
    rows = acts[keep.to(acts.device)]
    counts["kept"] = int(rows.shape[0])
    return rows, counts


def _shard_bytes(acts: Tensor, meta: dict[str, Any]) -> bytes:
    """A shard file's bytes: one metadata key, so the header is byte-stable."""
    meta_json = json.dumps(meta, sort_keys=True)
    return st_save({KEY: acts.detach().contiguous().cpu()}, metadata={SHARD_META_KEY: meta_json})


def _settings(index: Mapping[str, Any]) -> dict[str, Any]:
    """The fields two runs must share for one to resume the other's store."""
    keys = ("format", "version", "d", "dtype", "hook_name", "n_shards", "metadata", "token_policy")
    return {k: index.get(k) for k in keys}


def content_hash(index: Mapping[str, Any]) -> str:
    """sha256 of a store's settings, shard hashes and normalisation (not of file times)."""
    payload = {
        **_settings(index),
        "shards": [s["sha256"] for s in index["shards"]],
        "normalization": index.get("normalization"),
    }
    return hashlib.sha256(dumps_json(payload).encode()).hexdigest()


def _mean_norm_scale(method: str, d: int, shards: list[dict[str, Any]]) -> dict[str, Any]:
    rows = sum(s["rows"] for s in shards)
    mean_norm = sum(s["norm_sum"] for s in shards) / rows if rows else 0.0
    if method == "none":
        return {"method": "none", "mean_norm": mean_norm, "scale": 1.0}
    if not mean_norm > 0:
        raise HusaiError("cannot normalise a store whose rows all have norm 0")
    return {"method": method, "mean_norm": mean_norm, "scale": math.sqrt(d) / mean_norm}


class StoreWriter:
    """Writes a store shard by shard, resuming an unfinished one of the same settings.

    `n_shards` is fixed up front (the caller decides what goes in shard k, e.g. contexts
    k·c … (k+1)·c − 1), so a rerun knows which shards are missing: `has(k)`. `write(k, …)`
    writes shard k atomically and rewrites the index; `finish()` checks every shard is in,
    computes the normalisation and the content hash, and marks the store complete.
    """

    def __init__(
        self,
        path: Path,
        *,
        d: int,
        hook_name: str,
        n_shards: int,
        dtype: str = "float32",
        metadata: Mapping[str, Any] | None = None,
        policy: TokenPolicy | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise HusaiError(f"store dtype {dtype!r} (valid: {', '.join(DTYPES)})")
        if n_shards < 1:
            raise HusaiError(f"a store needs at least one shard, got n_shards={n_shards}")
        self.path = Path(path)
        self.policy = policy or TokenPolicy()
        self.index: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "complete": False,
            "d": int(d),
            "dtype": dtype,
            "hook_name": hook_name,
            "n_shards": int(n_shards),
            "metadata": json.loads(dumps_json(dict(metadata or {}))),
            "token_policy": self.policy.to_dict(),
            "shards": [],
        }
        self._done: dict[int, dict[str, Any]] = self._resume()
        if len(self._done) < self.index["n_shards"]:
            self._write_index()  # a complete store that checks out is left as it is

    def _resume(self) -> dict[int, dict[str, Any]]:
        """The shards of an unfinished (or finished) store of the same settings that still
        match their hashes; a directory with anything else in it is refused."""
        index_path = self.path / INDEX
        if not index_path.exists():
            if self.path.exists() and any(not p.name.startswith(".") for p in self.path.iterdir()):
                raise HusaiError(f"{self.path}: not empty and not an activation store")
            return {}
        try:
            old, sealed = read_sealed(index_path)
            if sealed is False:
                raise HusaiError(f"{index_path}: does not match its checksum")
        except HusaiError as e:
            if not self._looks_like_store(index_path):
                raise
            note(f"{e}; recomputing the store's shards")
            return {}
        if not isinstance(old, dict) or old.get("format") != FORMAT:
            raise HusaiError(f"{index_path}: not an activation store index")
        if _settings(old) != _settings(self.index):
            differ = [k for k, v in _settings(self.index).items() if _settings(old).get(k) != v]
            raise HusaiError(
                f"{self.path}: holds a store with other settings (differs in: "
                f"{', '.join(differ)}); remove it or choose another directory"
            )
        done = {}
        for entry in old.get("shards", []):
            f = self.path / entry["file"]
            if f.is_file() and sha256_file(f) == entry["sha256"]:
                done[int(entry["index"])] = entry
            elif f.is_file():
                note(f"{f}: sha256 does not match the index; recomputing it")
        return done

    def _looks_like_store(self, index_path: Path) -> bool:
        """Whether a directory whose index is corrupt held a store (shards, or the format
        name in what is left of the index): only then is it recomputed."""
        return any(self.path.glob("shard_*.safetensors")) or FORMAT.encode() in (
            index_path.read_bytes()
        )

    def has(self, k: int) -> bool:
        """Whether shard k is already written (and matched its hash when resumed)."""
        return k in self._done

    @property
    def kept(self) -> list[int]:
        return sorted(self._done)

    def write(
        self,
        k: int,
        rows: Tensor,
        counts: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write shard k: rows [n, d] (cast to the store's dtype), the token policy's counts
        for it and any JSON-able `extra` (e.g. the contexts it holds). Returns its entry."""
        if not 0 <= k < self.index["n_shards"]:
            raise HusaiError(f"shard {k} out of range (the store has {self.index['n_shards']})")
        d = self.index["d"]
        if rows.dim() != 2 or rows.shape[1] != d:
            raise HusaiError(f"shard {k}: rows must be [n, {d}], got {tuple(rows.shape)}")
        stored = rows.detach().to("cpu", DTYPES[self.index["dtype"]]).contiguous()
        meta = {
            "format": FORMAT,
            "hook_name": self.index["hook_name"],
            "d": d,
            "dtype": self.index["dtype"],
            "shard": k,
        }
        data = _shard_bytes(stored, meta)
        write_bytes(self.path / shard_name(k), data)
        entry = {
            "index": k,
            "file": shard_name(k),
            "rows": int(stored.shape[0]),
            "sha256": hashlib.sha256(data).hexdigest(),
            "norm_sum": float(stored.float().norm(dim=-1).double().sum()),
            "counts": {key: int((counts or {}).get(key, 0)) for key in COUNT_KEYS},
            "extra": json.loads(dumps_json(dict(extra or {}))),
        }
        self._done[k] = entry
        self._write_index()
        return entry

    def _write_index(self) -> None:
        self.index["shards"] = [self._done[k] for k in sorted(self._done)]
        write_json(self.path / INDEX, seal(self.index))

    def finish(self) -> ActivationStore:
        """Mark the store complete (every shard written): totals, normalisation, hash."""
        missing = [k for k in range(self.index["n_shards"]) if k not in self._done]
        if missing:
            raise HusaiError(f"{self.path}: shards {missing[:5]} not written yet")
        shards = [self._done[k] for k in sorted(self._done)]
        self.index["shards"] = shards
        self.index["n_tokens"] = sum(s["rows"] for s in shards)
        self.index["counts"] = {k: sum(s["counts"][k] for s in shards) for k in COUNT_KEYS}
        if not self.index["n_tokens"]:
            raise HusaiError(
                f"{self.path}: no tokens kept (token policy counts: {self.index['counts']})"
            )
        self.index["normalization"] = _mean_norm_scale(
            self.index["token_policy"]["normalize"], self.index["d"], shards
        )
        self.index["content_hash"] = content_hash(self.index)
        self.index["complete"] = True
        write_json(self.path / INDEX, seal(self.index))
        return ActivationStore(self.path)


class ActivationStore:
    """A complete store, read shard by shard; every shard is checked against the index
    (present, sha256, key, shape, dtype, hook) as it is read. Nothing is unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        index_path = self.path / INDEX
        if not index_path.is_file():
            what = "no such directory" if not self.path.exists() else f"no {INDEX}"
            raise HusaiError(f"{self.path}: not an activation store ({what})")
        index, sealed = read_sealed(index_path)
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise HusaiError(f"{index_path}: not an activation store index")
        if index.get("version") != VERSION:
            version = index.get("version")
            raise HusaiError(f"{index_path}: store version {version} (this husai reads {VERSION})")
        if not index.get("complete"):
            done, n = len(index.get("shards", [])), index.get("n_shards")
            raise HusaiError(
                f"{self.path}: unfinished store ({done} of {n} shards); rerun the extraction "
                "to resume it"
            )
        _check_index(index, index_path)
        if [s["index"] for s in index["shards"]] != list(range(index["n_shards"])):
            raise HusaiError(f"{index_path}: shard list does not match n_shards")
        if not isinstance(index.get("dtype"), str) or index["dtype"] not in DTYPES:
            raise HusaiError(f"{index_path}: unknown dtype {index.get('dtype')!r}")
        if content_hash(index) != index.get("content_hash"):
            raise HusaiError(f"{index_path}: content hash does not match its fields (edited?)")
        if sealed is False:
            raise HusaiError(f"{index_path}: does not match its checksum (corrupted?)")
        self.index = index

    d = property(lambda self: int(self.index["d"]))
    dtype = property(lambda self: str(self.index["dtype"]))
    hook_name = property(lambda self: str(self.index["hook_name"]))
    n_tokens = property(lambda self: int(self.index["n_tokens"]))
    n_shards = property(lambda self: int(self.index["n_shards"]))
    metadata = property(lambda self: dict(self.index["metadata"]))
    counts = property(lambda self: dict(self.index["counts"]))
    scale = property(lambda self: float(self.index["normalization"]["scale"]))
    content_hash = property(lambda self: str(self.index["content_hash"]))

    @property
    def shard_rows(self) -> list[int]:
        return [int(s["rows"]) for s in self.index["shards"]]

    def check(self, **expected: Any) -> None:
        """Refuse a store made otherwise than the caller needs: each keyword is a metadata
        key (or `hook_name`, `d`, `dtype`) and its expected value, e.g.
        `check(tokenizer_hash=tokenizer_hash(tok))` for a tokenizer matching the store's."""
        differ = []
        for key, want in expected.items():
            got = self.index[key] if key in ("hook_name", "d", "dtype") else self.metadata.get(key)
            if got != want:
                differ.append(f"{key} {got!r}, expected {want!r}")
        if differ:
            raise HusaiError(f"{self.path}: store does not match ({'; '.join(differ)})")

    def read_shard(self, k: int, *, normalize: bool = True) -> Tensor:
        """Shard k as float32 [rows, d], scaled by the store's normalisation unless
        `normalize=False` (then the stored values, as captured)."""
        entry = self.index["shards"][k]
        f = self.path / entry["file"]
        if not f.is_file():
            raise HusaiError(f"{f}: missing shard (rerun the extraction to recompute it)")
        limit = entry["rows"] * self.d * DTYPES[self.dtype].itemsize + MAX_SHARD_HEADER
        if f.stat().st_size > limit:
            raise HusaiError(f"{f}: larger than {entry['rows']} rows of {self.dtype} (corrupt)")
        data = f.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise HusaiError(
                f"{f}: sha256 does not match the index (truncated or modified; delete it and "
                "rerun the extraction)"
            )
        try:
            tensors = st_load(data)
        except (SafetensorError, ValueError) as e:
            raise HusaiError(f"{f}: not a valid safetensors file ({e})") from None
        t = tensors.get(KEY)
        want = (entry["rows"], self.d)
        if t is None or tuple(t.shape) != want:
            got = None if t is None else tuple(t.shape)
            raise HusaiError(f"{f}: '{KEY}' must be {list(want)}, got {got}")
        if t.dtype != DTYPES[self.dtype]:
            raise HusaiError(f"{f}: dtype {t.dtype} but the store is {self.dtype}")
        hook = _shard_meta(data, f).get("hook_name")
        if hook != self.hook_name:
            raise HusaiError(
                f"{f}: holds hook {hook!r} but the store {self.hook_name!r} (mixed hooks)"
            )
        t = t.float()
        return t * self.scale if normalize and self.scale != 1.0 else t

    def iter_shards(self, *, normalize: bool = True) -> Iterator[Tensor]:
        """Shards in order, one in memory at a time."""
        for k in range(self.n_shards):
            yield self.read_shard(k, normalize=normalize)

    def load_all(self, *, normalize: bool = True) -> Tensor:
        """Every row [n_tokens, d] float32 in one tensor (for stores that fit in memory)."""
        return torch.cat(list(self.iter_shards(normalize=normalize)))

    def verify(self) -> None:
        """Read every shard once (a HusaiError on the first bad one)."""
        for _ in self.iter_shards(normalize=False):
            pass


def _is(x: Any, kind: type | tuple[type, ...], low: float | None = None) -> bool:
    ok = isinstance(x, kind) and not isinstance(x, bool)
    return ok and (low is None or math.isfinite(x) and x >= low)


def _check_index(index: dict[str, Any], where: Path) -> None:
    """The fields a complete index must have, of the right types (an edited or foreign
    index is one HusaiError, not a KeyError later); shard files are plain names in the
    store directory."""
    fields = {"d": (int, 1), "n_shards": (int, 1), "n_tokens": (int, 0), "hook_name": (str, None)}
    fields |= {"metadata": (dict, None), "counts": (dict, None), "shards": (list, None)}
    fields |= {"normalization": (dict, None), "content_hash": (str, None)}
    for key, (kind, low) in fields.items():
        if not _is(index.get(key), kind, low):
            raise HusaiError(
                f"{where}: {key} must be a {kind.__name__}, got {index.get(key)!r:.40}"
            )
    if not _is(index["normalization"].get("scale"), (int, float), 0.0):
        raise HusaiError(f"{where}: normalization.scale must be a finite number ≥ 0")
    for i, s in enumerate(index["shards"]):
        ok = isinstance(s, dict) and _is(s.get("index"), int) and _is(s.get("rows"), int, 0)
        ok = ok and isinstance(s.get("sha256"), str) and isinstance(s.get("file"), str)
        if not ok or s["file"] in ("", ".", "..") or any(c in s["file"] for c in "/\\\0"):
            raise HusaiError(f"{where}: shard entry {i} is malformed")


def _shard_meta(data: bytes, f: Path) -> dict[str, Any]:
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        return json.loads(header.get("__metadata__", {}).get(SHARD_META_KEY, "{}"))
    except (ValueError, AttributeError):
        raise HusaiError(f"{f}: unreadable shard metadata") from None


def check_same_hook(stores: list[ActivationStore]) -> str:
    """The one hook name of several stores (e.g. to train on them together), or an error."""
    hooks = sorted({s.hook_name for s in stores})
    if len(hooks) != 1:
        raise HusaiError(f"stores hold different hooks ({', '.join(hooks)}); mixed hooks")
    return hooks[0]
