"""dictionary_learning (saprmarks) layout: `ae.pt` (a torch state dict) + `config.json`.

`ae.pt` is loaded ONLY with `torch.load(..., weights_only=True)`: a pickle that would run
code is refused before anything runs. A mid-run backup nests the state dict under "ae".
`config.json`'s `trainer.dict_class` picks the mapping (husai layout: rows = latents):

- AutoEncoder → relu: `bias` is b_dec (subtracted before encoding, added after decoding).
- AutoEncoderTopK → topk (its default forward; the optional `threshold` inference path,
  `use_threshold=True`, is not reproduced).
- BatchTopKSAE, MatryoshkaBatchTopKSAE → jumprelu: their default forward is
  ReLU(pre) · 1[ReLU(pre) > θ] with one global θ, i.e. JumpReLU with every latent's
  threshold max(θ, 0) (θ = −1 before training sets it gives plain ReLU) — exact.
- JumpReluAutoEncoder → jumprelu; it does not centre its input (apply_b_dec_to_input is
  False and not saved), which is folded into b_enc.
- GatedAutoEncoder → gated (gate_bias = b_gate, mag_bias = b_mag, decoder_bias = b_dec).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from husai.errors import HusaiError
from husai.io import read_json
from husai.sae.base import SAE
from husai.sae.formats.common import Spec, build, check_tensors, fold_centering
from husai.sae.formats.files import DL_CONFIG_FILE, DL_WEIGHTS_FILE

Mapping = tuple[str, Spec, Callable[[dict[str, Tensor], dict[str, Any]], dict[str, Tensor]]]


def _linear_topk(t: dict[str, Tensor], _: dict[str, Any]) -> dict[str, Tensor]:
    return {
        "W_enc": t["encoder.weight"],
        "b_enc": t["encoder.bias"],
        "W_dec": t["decoder.weight"].T.contiguous(),
        "b_dec": t["b_dec"],
    }


def _global_threshold(t: dict[str, Tensor], state: dict[str, Any]) -> Tensor:
    theta = state.get("threshold")
    if not isinstance(theta, Tensor) or theta.numel() != 1 or not torch.isfinite(theta).all():
        raise HusaiError("expected a finite scalar 'threshold' buffer")
    return torch.full_like(t["b_dec"].new_empty(t["W_dec"].shape[-2]), max(float(theta), 0.0))


def _batch_topk(t: dict[str, Tensor], state: dict[str, Any]) -> dict[str, Tensor]:
    w = _linear_topk(t, state)
    return {**w, "threshold": _global_threshold(w, state)}


def _matryoshka(t: dict[str, Tensor], state: dict[str, Any]) -> dict[str, Tensor]:
    w = {"W_enc": t["W_enc"].T.contiguous(), "b_enc": t["b_enc"], "W_dec": t["W_dec"]}
    w["b_dec"] = t["b_dec"]
    return {**w, "threshold": _global_threshold(w, state)}


def _jumprelu(t: dict[str, Tensor], _: dict[str, Any]) -> dict[str, Tensor]:
    W_enc = t["W_enc"].T.contiguous()
    b_enc = fold_centering(t["b_enc"], W_enc, t["b_dec"])
    return {
        "W_enc": W_enc,
        "b_enc": b_enc,
        "W_dec": t["W_dec"],
        "b_dec": t["b_dec"],
        "threshold": t["threshold"],
    }


_LINEAR_TOPK: Spec = {
    "encoder.weight": ("F", "D"),
    "encoder.bias": ("F",),
    "decoder.weight": ("D", "F"),
    "b_dec": ("D",),
}
_PARAM: Spec = {"W_enc": ("D", "F"), "b_enc": ("F",), "W_dec": ("F", "D"), "b_dec": ("D",)}

MAPPINGS: dict[str, Mapping] = {
    "AutoEncoder": (
        "relu",
        {
            "encoder.weight": ("F", "D"),
            "encoder.bias": ("F",),
            "decoder.weight": ("D", "F"),
            "bias": ("D",),
        },
        lambda t, _: {
            "W_enc": t["encoder.weight"],
            "b_enc": t["encoder.bias"],
            "W_dec": t["decoder.weight"].T.contiguous(),
            "b_dec": t["bias"],
        },
    ),
    "AutoEncoderTopK": ("topk", _LINEAR_TOPK, _linear_topk),
    "BatchTopKSAE": ("jumprelu", _LINEAR_TOPK, _batch_topk),
    "MatryoshkaBatchTopKSAE": ("jumprelu", _PARAM, _matryoshka),
    "JumpReluAutoEncoder": ("jumprelu", {**_PARAM, "threshold": ("F",)}, _jumprelu),
    "GatedAutoEncoder": (
        "gated",
        {
            "encoder.weight": ("F", "D"),
            "decoder.weight": ("D", "F"),
            "decoder_bias": ("D",),
            "gate_bias": ("F",),
            "mag_bias": ("F",),
            "r_mag": ("F",),
        },
        lambda t, _: {
            "W_enc": t["encoder.weight"],
            "b_enc": t["gate_bias"],
            "W_dec": t["decoder.weight"].T.contiguous(),
            "b_dec": t["decoder_bias"],
            "b_mag": t["mag_bias"],
            "r_mag": t["r_mag"],
        },
    ),
}


def read_state_dict(file: Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)`; a code-running pickle or a corrupt file → HusaiError."""
    if not file.is_file():
        raise HusaiError(f"{file}: file not found")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise HusaiError(
            f"{file}: refusing to unpickle: not a plain tensor checkpoint ({why[:200]})"
        ) from None
    except Exception as e:  # weights_only: nothing ran; any failure is a corrupt file
        raise HusaiError(f"{file}: not a valid torch checkpoint ({type(e).__name__})") from None
    if isinstance(obj, dict) and isinstance(obj.get("ae"), dict):
        obj = obj["ae"]  # mid-run backup: {"ae": state_dict, "optimizer": ..., ...}
    if not isinstance(obj, dict):
        raise HusaiError(f"{file}: expected a state dict, got {type(obj).__name__}")
    return obj


def load(path: Path) -> SAE:
    """Read a dictionary_learning save directory (or an `ae*.pt` file whose directory,
    or its parent for `checkpoints/ae_<step>.pt`, holds config.json)."""
    path = Path(path)
    if path.is_file():
        file = path
        cfg_file = next(
            (
                d / DL_CONFIG_FILE
                for d in (path.parent, path.parent.parent)
                if (d / DL_CONFIG_FILE).is_file()
            ),
            path.parent / DL_CONFIG_FILE,
        )
    else:
        file, cfg_file = path / DL_WEIGHTS_FILE, path / DL_CONFIG_FILE
    raw = read_json(cfg_file)
    trainer = raw.get("trainer") if isinstance(raw, dict) else None
    if not isinstance(trainer, dict) or "dict_class" not in trainer:
        raise HusaiError(f"{cfg_file}: missing trainer.dict_class")
    dict_class = str(trainer["dict_class"])
    if dict_class not in MAPPINGS:
        known = ", ".join(MAPPINGS)
        raise HusaiError(f"{cfg_file}: unsupported dict_class {dict_class!r} (known: {known})")
    arch, spec, convert = MAPPINGS[dict_class]
    state = read_state_dict(file)
    t = check_tensors(state, spec, file)
    try:
        w = convert(t, state)
    except HusaiError as e:
        raise HusaiError(f"{file}: {e}") from None
    fields: dict[str, Any] = {}
    if arch == "topk":
        k = state.get("k", trainer.get("k"))
        fields["k"] = int(k.item() if isinstance(k, Tensor) else k or 0)
        if fields["k"] <= 0:
            raise HusaiError(f"{cfg_file}: TopK SAE without a positive k")
    seed = trainer.get("seed")
    return build(arch, w, file, seed=int(seed) if isinstance(seed, int) else 0, **fields)
