"""Save/load one SAE in the SAELens on-disk layout.

`cfg.json` + `sae_weights.safetensors` with `W_enc` [d_in, d_sae], `W_dec` [d_sae, d_in],
`b_enc` [d_sae], `b_dec` [d_in]. husai's own fields live under cfg.json's "husai" key.
The weights are written before cfg.json, both atomically, so a directory with a cfg.json
always holds complete weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.io import load_tensors, read_json, save_tensors, write_json
from husai.sae.base import SAE
from husai.sae.registry import REGISTRY

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FROM_SAELENS = {"standard": "relu", "topk": "topk"}


def save(sae: SAE, directory: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a one-seed SAE (use `ensemble.select(s)` first) to `directory`."""
    if sae.n_seeds != 1:
        raise ValueError("save() takes a one-seed SAE; use sae.select(s)")
    directory = Path(directory)
    weights = {
        "W_enc": sae.W_enc[0].T,
        "W_dec": sae.W_dec[0],
        "b_enc": sae.b_enc[0],
        "b_dec": sae.b_dec[0],
    }
    save_tensors(directory / WEIGHTS_FILE, weights, metadata={"format": "saelens"})
    cfg = {
        "architecture": sae.saelens_architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        **sae.extra_cfg(),
        "husai": {
            "architecture": sae.architecture,
            "seed": sae.seeds[0],
            "config": sae.cfg.model_dump(mode="json"),
            **(extra or {}),
        },
    }
    write_json(directory / CFG_FILE, cfg)
    return directory


def _config_from(cfg: dict[str, Any], path: Path) -> tuple[SAEConfig, int]:
    own = cfg.get("husai")
    if isinstance(own, dict) and "config" in own:
        return SAEConfig.model_validate(own["config"]), int(own.get("seed", 0))
    arch = FROM_SAELENS.get(str(cfg.get("architecture", "standard")))
    if arch is None:
        raise HusaiError(f"{path}: unsupported SAELens architecture {cfg.get('architecture')!r}")
    k = int(cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k") or 1)
    return SAEConfig(architecture=arch, d_sae=int(cfg["d_sae"]), k=k), 0


def load(path: Path) -> SAE:
    """Read an SAE directory in the SAELens layout back into a one-seed husai SAE."""
    path = Path(path)
    if not path.is_dir():
        raise HusaiError(f"{path}: not an SAE directory")
    raw = read_json(path / CFG_FILE)
    tensors, _ = load_tensors(path / WEIGHTS_FILE)
    missing = {"W_enc", "W_dec", "b_enc", "b_dec"} - tensors.keys()
    if missing:
        raise HusaiError(f"{path / WEIGHTS_FILE}: missing tensors {sorted(missing)}")
    try:
        cfg, seed = _config_from(raw, path)
    except (KeyError, ValueError) as e:
        raise HusaiError(f"{path / CFG_FILE}: invalid SAE config ({e})") from None
    d_in, d_sae = tensors["W_dec"].shape[1], tensors["W_dec"].shape[0]
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "b_dec": (d_in,)}
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise HusaiError(
                f"{path / WEIGHTS_FILE}: {name} has shape {tuple(tensors[name].shape)}, "
                f"expected {shape} from W_dec {tuple(tensors['W_dec'].shape)}"
            )
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            raise HusaiError(f"{path / WEIGHTS_FILE}: {name} contains NaN/Inf")
    sae = REGISTRY[cfg.architecture](cfg.model_copy(update={"d_sae": d_sae}), d_in, [seed])
    with torch.no_grad():
        sae.W_enc[0] = tensors["W_enc"].T.float()
        sae.W_dec[0] = tensors["W_dec"].float()
        sae.b_enc[0] = tensors["b_enc"].float()
        sae.b_dec[0] = tensors["b_dec"].float()
    return sae
