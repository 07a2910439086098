"""Language-model metadata of an SAE, as SAELens's top-level cfg.json keys.

An SAE trained on a language model's activations carries `model_name`, `hook_name`
(TransformerLens style), `context_size`, `prepend_bos` and `normalize_activations`
("none" or "expected_average_only_in"); optionally `seqpos_slice` (the context positions
trained on: [1, None] when the first token was dropped) and `dataset_path` (the corpus).
sae-lens ≥ 6 reads these top-level keys of a cfg.json without `sae_lens_version` into its
`cfg.metadata` (`handle_pre_6_0_config`), the layout its 5.x versions wrote.

For "expected_average_only_in" the SAE's weights work on scaled inputs (x · scale, the
store's √d / mean row norm) and `norm_scaling_factor` records the scale (the name of
SAELens's `pretrained_saes.yaml` field). sae-lens's `load_from_disk` does not apply it
(its runtime normalisation for this setting is the identity); a user undoes it with
`sae.fold_activation_norm_scaling_factor(cfg["norm_scaling_factor"])`, which gives the
same SAE on raw activations (what sae-lens's `from_pretrained` and trainer do).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from husai.errors import HusaiError
from husai.store import ActivationStore

NORMALIZATIONS = ("none", "expected_average_only_in")
SCALE_KEY = "norm_scaling_factor"
REQUIRED = ("model_name", "context_size", "prepend_bos", "normalize_activations")
OPTIONAL = ("hook_name", SCALE_KEY, "seqpos_slice", "dataset_path")
LM_KEYS = (*REQUIRED, *OPTIONAL)


def check_lm_metadata(meta: Mapping[str, Any], where: str = "lm_metadata") -> dict[str, Any]:
    """A validated, JSON-able copy of LM metadata (the keys of `LM_KEYS`)."""
    unknown = sorted(set(meta) - set(LM_KEYS))
    missing = [k for k in REQUIRED if k not in meta]
    if unknown or missing:
        what = [f"unknown {', '.join(unknown)}"] if unknown else []
        what += [f"missing {', '.join(missing)}"] if missing else []
        raise HusaiError(f"{where}: {'; '.join(what)} (keys: {', '.join(LM_KEYS)})")
    out: dict[str, Any] = {
        "model_name": str(meta["model_name"]),
        "context_size": int(meta["context_size"]),
        "prepend_bos": bool(meta["prepend_bos"]),
        "normalize_activations": str(meta["normalize_activations"]),
    }
    if out["normalize_activations"] not in NORMALIZATIONS:
        raise HusaiError(
            f"{where}: normalize_activations {out['normalize_activations']!r} "
            f"(valid: {', '.join(NORMALIZATIONS)})"
        )
    scale = meta.get(SCALE_KEY)
    if out["normalize_activations"] != "none":
        if scale is None or not math.isfinite(float(scale)) or float(scale) <= 0:
            method = out["normalize_activations"]
            raise HusaiError(f"{where}: {method} needs a positive {SCALE_KEY}")
        out[SCALE_KEY] = float(scale)
    for key in ("hook_name", "dataset_path"):
        if meta.get(key) is not None:
            out[key] = str(meta[key])
    if meta.get("seqpos_slice") is not None:
        out["seqpos_slice"] = [None if v is None else int(v) for v in meta["seqpos_slice"]]
    return out


def store_lm_metadata(store: ActivationStore) -> dict[str, Any]:
    """The LM metadata of SAEs trained on `store` as its reader gives it (`normalize=True`):
    model, hook, context size, BOS, the normalisation and its scale, the corpus, and
    `seqpos_slice` [1, None] when the token policy dropped position 0."""
    meta, norm = store.metadata, store.index.get("normalization") or {}
    missing = [k for k in ("model_name", "context_size", "prepend_bos") if k not in meta]
    if missing:
        raise HusaiError(f"{store.path}: not a language-model store (no {', '.join(missing)})")
    method = str(norm.get("method", "none"))
    out = {
        "model_name": meta["model_name"],
        "hook_name": store.hook_name,
        "context_size": meta["context_size"],
        "prepend_bos": meta["prepend_bos"],
        "normalize_activations": method,
        **({SCALE_KEY: store.scale} if method != "none" else {}),
        **({"dataset_path": meta["corpus"]} if meta.get("corpus") else {}),
    }
    if (store.index.get("token_policy") or {}).get("drop_first"):
        out["seqpos_slice"] = [1, None]
    return check_lm_metadata(out, str(store.path))


def read_lm_metadata(cfg: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """The LM metadata of a cfg.json (top-level keys, else sae-lens 6's `metadata`), or
    None when it has none (a toy SAE). Refuses a normalisation without its scale."""
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), Mapping) else {}
    found = {k: cfg.get(k, meta.get(k)) for k in LM_KEYS}
    found = {k: v for k, v in found.items() if v is not None}
    norm = found.setdefault("normalize_activations", "none")
    if norm not in NORMALIZATIONS:
        raise HusaiError(f"{where}: normalize_activations={norm!r} is not supported")
    if norm != "none" and SCALE_KEY not in found:
        raise HusaiError(
            f"{where}: normalize_activations={norm!r} without {SCALE_KEY} is not supported "
            "(the scale it needs is unknown)"
        )
    if not all(k in found for k in REQUIRED):
        if norm != "none":
            raise HusaiError(f"{where}: a normalised SAE needs {', '.join(REQUIRED)}")
        return None
    return check_lm_metadata(found, where)
