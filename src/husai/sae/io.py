"""Save one SAE in the SAELens layout; load one SAE from any supported layout.

`save` writes `cfg.json` + `sae_weights.safetensors` (SAELens names and shapes: `W_enc`
[d_in, d_sae], `W_dec` [d_sae, d_in], `b_enc` [d_sae], `b_dec` [d_in], plus e.g.
`threshold`, or `b_gate`/`b_mag`/`r_mag`); husai's own fields live under cfg.json's
"husai" key, and an architecture's `own_tensors` that SAELens has no place for (archetypal's)
in `husai_weights.safetensors` beside them. Transcoders are written as sae-lens's (top-level
`d_out`, `W_dec` [d_sae, d_out], `hook_name` / `hook_name_out`; see `formats.saelens`). The
weights are written before cfg.json, both atomically, so a directory with a cfg.json always
holds complete weights. `load` reads SAELens/husai, EleutherAI sparsify and
dictionary_learning directories (see `husai.sae.formats`); `find_saes` expands a run
directory into its SAE directories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from husai.sae.base import SAE
from husai.sae.formats import detect, find_saes, read
from husai.sae.formats.files import CFG_FILE, WEIGHTS_FILE
from husai.sae.formats.lm import store_lm_metadata
from husai.sae.formats.saelens import FROM_SAELENS, save

__all__ = [
    "CFG_FILE",
    "FROM_SAELENS",
    "WEIGHTS_FILE",
    "detect",
    "find_saes",
    "load",
    "save",
    "save_seeds",
    "seed_dir",
    "store_lm_metadata",
]
# train_sae's per-seed results recorded in each seed's cfg.json (when present)
SEED_INFO = (
    "final_train_mse",
    "steps",
    "resampled_latents",
    "sparsity_coefficient",
    "consistency_penalty",
    "consistency_mcc",
)


def seed_dir(out_dir: Path, seed: int) -> Path:
    return Path(out_dir) / f"seed_{seed}"


def save_seeds(
    sae: SAE,
    out_dir: Path,
    info: dict[str, list[Any]],
    extra: dict[str, Any] | None = None,
    *,
    lm_metadata: dict[str, Any] | None = None,
) -> list[Path]:
    """Every seed of an ensemble to `out_dir/seed_<n>/` (SAELens layout), with its own
    `train_sae` results (`info`) and `extra` under cfg.json's "husai" key. `lm_metadata`
    (default `sae.lm_metadata`; e.g. `store_lm_metadata(store)` for an SAE trained on an
    activation store): a language-model SAE's SAELens keys (`husai.sae.formats.lm`)."""
    dirs = []
    for s, seed in enumerate(sae.seeds):
        mine = {k: info[k][s] for k in SEED_INFO if k in info}
        extra_s = {**mine, **(extra or {})}
        dirs.append(save(sae.select(s), seed_dir(out_dir, seed), extra_s, lm_metadata=lm_metadata))
    return dirs


def load(path: Path, format: str | None = None) -> SAE:
    """One-seed SAE from `path`. `format`: "husai"/"saelens", "sparsify",
    "dictionary_learning", or None to detect it from the files present."""
    return read(Path(path), format)
