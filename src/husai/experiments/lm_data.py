"""The `lm` data source of `husai run`: a language model's activations in stores.

Data sets whose `lm` fields differ only in layer / site share one extraction: one forward
per batch for all their sites (husai.lm.extract), into the cache
(`<cache>/stores/<key>/`, keyed by the extraction fields, the sites, the model's weights
and the token ids), so a second run on the same model and corpus extracts nothing and a
killed extraction resumes from its finished shards. Each store is then hard-linked (copied
across file systems) into the run directory as `data/<name>/store/`, and the held-out
contexts — the `eval_contexts` after the training ones — are saved beside it as
`data/<name>/eval_contexts.safetensors` (tensor `input_ids`). A set with an `ood` corpus
(the OOD gate's data) gets the first `ood_contexts` contexts of that corpus, cut and
tokenised like the training corpus, as `data/<name>/ood_contexts.safetensors`.

A multi-layer set (`lm.layers`, for RouteSAE) has one store per layer, from the same forward
passes, linked as `data/<name>/stores/<hook>/`; its rows are the stores joined column-wise
(husai.sae.data.ConcatRows, layer-major). Its token policy keeps the same tokens at every
layer (config.py refuses per-layer outlier dropping) and ConcatRows checks the shard rows.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from husai.config import DataConfig, LMDataConfig
from husai.errors import HusaiError
from husai.integrity import note
from husai.io import config_hash, save_tensors, sha256_file, tensor_hash
from husai.store import ActivationStore, TokenPolicy

EVAL_FILE = "eval_contexts.safetensors"
OOD_FILE = "ood_contexts.safetensors"
OOD_CHARS_PER_TOKEN = 8  # characters of the built-in OOD corpus read per token needed
EVAL_KEY = "input_ids"
RANK_ROWS = 65_536  # rows (evenly spaced) the data set's effective rank is computed on


@dataclasses.dataclass
class LMSet:
    """One `lm` data set once extracted: its store, held-out contexts and model."""

    name: str
    stores: list[ActivationStore]  # one per layer (a single-layer set: one)
    eval_path: Path
    eval_hash: str
    model_dir: Path
    model_hash: str
    info: dict[str, Any]  # for metrics.json (deterministic)
    extraction: dict[str, Any]  # for the manifest and the console (timings)
    ood_path: Path | None = None  # the `ood` corpus's contexts (input_ids), if any
    ood_hash: str | None = None

    @property
    def store(self) -> ActivationStore:
        return self.stores[0]

    @property
    def content_hash(self) -> str:
        """The store's content hash; a multi-layer set's: a hash of its stores' hashes."""
        if len(self.stores) == 1:
            return self.store.content_hash
        return config_hash({"stores": [s.content_hash for s in self.stores]})

    def rows(self) -> Any:
        """The training rows: the store, or a multi-layer set's joined stores."""
        from husai.sae.data import ConcatRows

        return self.store if len(self.stores) == 1 else ConcatRows(self.stores)


def policy_of(lm: LMDataConfig) -> TokenPolicy:
    return TokenPolicy(
        drop_first=lm.drop_first,
        drop_bos=lm.drop_bos,
        outlier_factor=lm.outlier_factor,
        outliers=lm.outliers,
        normalize=lm.normalize,
    )


def _contexts(lm: LMDataConfig, tokenizer: Any) -> tuple[Any, Any]:
    """(training contexts, held-out contexts) from the configured corpus."""
    from husai.lm import read_corpus, stdlib_corpus, tokenize_contexts

    corpus = (
        stdlib_corpus(docstrings=True)
        if lm.corpus is None
        else read_corpus(lm.corpus, text_field=lm.text_field)
    )
    want = lm.n_train_contexts + lm.eval_contexts
    ctx = tokenize_contexts(
        corpus, tokenizer, lm.context_size, prepend_bos=lm.prepend_bos, n_contexts=want
    )
    if ctx.n_contexts < want:
        raise HusaiError(
            f"{corpus.name}: holds {ctx.n_contexts} contexts of {lm.context_size} tokens; "
            f"the config needs {lm.n_train_contexts} for training + {lm.eval_contexts} held "
            "out (lower train_tokens or give a larger corpus)"
        )
    n = lm.n_train_contexts
    return dataclasses.replace(ctx, ids=ctx.ids[:n]), ctx.ids[n:]


def ood_contexts(d: DataConfig, tokenizer: Any) -> tuple[torch.Tensor, str]:
    """(the first `ood_contexts` contexts of data set `d`'s `ood` corpus, its name); a corpus
    shorter than one context is one HusaiError line naming the data set."""
    from husai.lm import STDLIB_CODE, read_corpus, stdlib_code_corpus, tokenize_contexts

    lm = d.lm
    assert lm is not None and lm.ood is not None
    try:
        corpus = (
            stdlib_code_corpus(OOD_CHARS_PER_TOKEN * lm.ood_contexts * lm.context_size)
            if lm.ood == STDLIB_CODE
            else read_corpus(lm.ood, text_field=lm.text_field)
        )
        ctx = tokenize_contexts(
            corpus,
            tokenizer,
            lm.context_size,
            prepend_bos=lm.prepend_bos,
            n_contexts=lm.ood_contexts,
        )
    except HusaiError as e:
        raise HusaiError(f"data {d.name}: ood corpus: {e}") from None
    return ctx.ids, corpus.name


def _link_tree(src: Path, dst: Path) -> None:
    """dst ← a copy of directory src (hard links where possible), made atomically; dot
    files (the cache entry's lock, a killed writer's temp files) are left out. The temp
    directory's name is fixed (the run directory has one writer), so a rerun after a kill
    removes the half-made one."""
    from husai import faults

    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.name.startswith("."):
            continue
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
        faults.copied(tmp / f.name)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def _run_store(cached: Path, target: Path) -> ActivationStore:
    """The run directory's copy of a cached store (just checked shard by shard by the
    writer), reused only if each of its files is the cache's (a hard link) or matches the
    cache's sha256; else linked again, with a note if it was there but differed."""
    store = ActivationStore(cached)
    try:
        if ActivationStore(target).content_hash == store.content_hash and _same_files(
            cached, target
        ):
            return ActivationStore(target)
        note(f"{target}: differs from the cached store {cached}; linking it again")
    except HusaiError as e:
        if target.exists():
            note(f"{e}; linking the cached store again")
    _link_tree(cached, target)
    return ActivationStore(target)


def _same_files(cached: Path, target: Path) -> bool:
    """Whether `target` holds exactly the cache's files (same inode, or same bytes)."""
    names = sorted(f.name for f in cached.iterdir() if not f.name.startswith("."))
    if sorted(f.name for f in target.iterdir() if not f.name.startswith(".")) != names:
        return False
    for name in names:
        a, b = cached / name, target / name
        if not (a.samefile(b) or sha256_file(a) == sha256_file(b)):
            return False
    return True


def lm_stage(group: list[DataConfig], run_dir: Path, cache_dir: Path, device: str) -> list[LMSet]:
    """Extract (or reuse) the stores of data sets that share one extraction."""
    from husai.lm import (
        extract_to_stores,
        load_model,
        load_tokenizer,
        model_hash,
        resolve_model_dir,
    )
    from husai.runtime import resolve_device

    lm = group[0].lm
    assert lm is not None
    model_dir = resolve_model_dir(lm.model, cache_dir / "models").resolve()
    t0 = time.perf_counter()
    model = load_model(model_dir, dtype=torch.float32, device=str(resolve_device(device)))
    tokenizer = load_tokenizer(model_dir)
    load_seconds = time.perf_counter() - t0
    train, eval_ids = _contexts(lm, tokenizer)
    oods = {d.name: ood_contexts(d, tokenizer) for d in group if d.lm and d.lm.ood}  # fail early
    n_layers = int(model.config.num_hidden_layers)
    set_hooks = [_hooks(d, n_layers) for d in group]
    if len({tuple(h) for h in set_hooks}) != len(set_hooks):
        raise HusaiError(f"data sets {[d.name for d in group]} extract the same site twice")
    hooks = list(dict.fromkeys(h for hs in set_hooks for h in hs))
    weights = model_hash(model)
    key = config_hash(
        {
            "extract": lm.extraction(),
            "hooks": sorted(hooks),
            "model": weights,
            "contexts": tensor_hash(train.ids),
            "device": device,
        }
    )
    from husai.lock import directory_lock

    with directory_lock(cache_dir / "stores" / key, "run (activation cache)", wait=True):
        result = extract_to_stores(
            model,
            train,
            hooks,
            cache_dir / "stores" / key,
            model_name=lm.model,
            dtype=lm.dtype,
            policy=policy_of(lm),
            batch_size=lm.batch_size,
            contexts_per_shard=lm.contexts_per_shard,
        )
    out = []
    for d, hs in zip(group, set_hooks, strict=True):
        data_dir = run_dir / "data" / d.name
        if len(hs) == 1:
            stores = [_run_store(result.stores[hs[0]], data_dir / "store")]
        else:
            stores = [_run_store(result.stores[h], data_dir / "stores" / h) for h in hs]
        eval_path = save_tensors(
            data_dir / EVAL_FILE, {EVAL_KEY: eval_ids}, {"format": "husai-eval-contexts"}
        )
        info = _info(d, stores[0], eval_ids, run_dir)
        if len(stores) > 1:
            info = _multi_info(info, d, stores, run_dir)
        record = extraction_record(result, load_seconds)
        s = LMSet(
            d.name, stores, eval_path, tensor_hash(eval_ids), model_dir, weights, info, record
        )
        if d.name in oods:
            ids, name = oods[d.name]
            s.ood_path = save_tensors(
                data_dir / OOD_FILE, {EVAL_KEY: ids}, {"format": "husai-ood-contexts"}
            )
            s.ood_hash = tensor_hash(ids)
            info["ood"] = {
                "corpus": name,
                "artifact": str(s.ood_path.relative_to(run_dir)),
                "n_contexts": int(ids.shape[0]),
                "n_tokens": int(ids.numel()),
            }
        out.append(s)
    return out


def _hooks(d: DataConfig, n_layers: int) -> list[str]:
    """A data set's hook names (one per layer), its layers checked against the model's."""
    lm = d.lm
    assert lm is not None
    for layer in lm.block_indices:
        if not 0 <= layer < n_layers:
            raise HusaiError(
                f"data {d.name}: layer {layer} out of range ({lm.model} has "
                f"{n_layers} layers, 0–{n_layers - 1})"
            )
    return [f"blocks.{layer}.{_suffix(lm.site)}" for layer in lm.block_indices]


def _multi_info(
    info: dict[str, Any], d: DataConfig, stores: list[ActivationStore], run_dir: Path
) -> dict[str, Any]:
    """A multi-layer set's info: the joined rows' width, rank and content hash, and per
    layer its hook, store, counts and normalisation."""
    from husai.metrics.spectrum import effective_rank
    from husai.sae.data import ConcatRows

    rows = ConcatRows(stores)
    sample = rows.spaced(RANK_ROWS)
    per_layer = [
        {
            "layer": layer,
            "hook": s.hook_name,
            "artifact": str(s.path.relative_to(run_dir)),
            "store_content_hash": s.content_hash,
            "token_counts": s.counts,
            "normalization": s.index["normalization"],
        }
        for layer, s in zip(d.lm.block_indices, stores, strict=True)  # type: ignore[union-attr]
    ]
    return {
        **info,
        "artifact": str((run_dir / "data" / d.name / "stores").relative_to(run_dir)),
        "hook": "+".join(s.hook_name for s in stores),
        "layer": None,
        "layers": d.lm.block_indices,  # type: ignore[union-attr]
        "d": rows.d,
        "d_layer": stores[0].d,
        "store_content_hash": config_hash({"stores": [s.content_hash for s in stores]}),
        "normalization": {
            "method": info["normalization"]["method"],
            "scale": [float(s.scale) for s in stores],
            "mean_norm": [s.index["normalization"]["mean_norm"] for s in stores],
        },
        "effective_rank": effective_rank(sample),
        "effective_rank_rows": len(sample),
        "per_layer": per_layer,
    }


def _suffix(kind: str) -> str:
    from husai.lm.sites import SUFFIXES

    return SUFFIXES[kind]


def _info(
    d: DataConfig, store: ActivationStore, eval_ids: torch.Tensor, run_dir: Path
) -> dict[str, Any]:
    from husai.metrics.spectrum import effective_rank
    from husai.sae.data import StoreRows

    lm = d.lm
    assert lm is not None
    sample = StoreRows(store).spaced(RANK_ROWS)
    meta = store.metadata
    return {
        "artifact": str(store.path.relative_to(run_dir)),
        "source": "lm",
        "model": lm.model,
        "hook": store.hook_name,
        "layer": lm.layer,
        "site": lm.site,
        "n": store.n_tokens,
        "d": store.d,
        "store_dtype": store.dtype,
        "store_content_hash": store.content_hash,
        "effective_rank": effective_rank(sample),
        "effective_rank_rows": len(sample),
        "corpus": meta["corpus"],
        "corpus_hash": meta["corpus_hash"],
        "context_size": lm.context_size,
        "prepend_bos": lm.prepend_bos,
        "n_contexts": meta["n_contexts"],
        "token_counts": store.counts,
        "normalization": store.index["normalization"],
        "eval": {
            "artifact": str((run_dir / "data" / d.name / EVAL_FILE).relative_to(run_dir)),
            "n_contexts": int(eval_ids.shape[0]),
            "n_tokens": int(eval_ids.numel()),
        },
    }


def extraction_record(result: Any, load_seconds: float) -> dict[str, Any]:
    """What an extraction did and how fast (for the manifest: it varies between runs)."""
    return {
        "tokens_forward": result.tokens_forward,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "seconds": round(result.seconds, 3),
        "model_load_seconds": round(load_seconds, 3),
        "shards_written": result.shards_written,
        "shards_kept": result.shards_kept,
        "tokens_stored": result.tokens_stored,
    }


def lm_groups(data: list[DataConfig]) -> list[list[DataConfig]]:
    """`lm` data sets grouped by the extraction they share (first appearance order)."""
    groups: dict[str, list[DataConfig]] = {}
    for d in data:
        if d.source == "lm":
            groups.setdefault(config_hash(d.lm.extraction()), []).append(d)  # type: ignore[union-attr]
    return list(groups.values())
