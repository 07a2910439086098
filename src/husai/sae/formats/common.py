"""Shared by the format readers: shape/finiteness checks and building a husai SAE.

Every reader maps its tensors to husai's layout: W_enc [F, D] (encoder rows), b_enc [F],
W_dec [F, O], b_dec [O] (added after decoding; for an SAE, O = D and b_dec is also
subtracted before encoding; a transcoder's input is not centred), plus the architecture's
extra parameters (threshold; b_mag, r_mag: [F]; routesae's router W_router [L, D]) and its
`own_tensors` (archetypal's, read from husai's own file beside the SAELens one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor

from husai.errors import HusaiError
from husai.sae.base import SAE
from husai.sae.config import SAEConfig, format_error
from husai.sae.registry import REGISTRY

Spec = dict[str, tuple[str, ...]]  # tensor name → axis names ("D" d_in, "O" d_out, "F" d_sae)


def check_tensors(tensors: dict[str, Any], spec: Spec, file: Path) -> dict[str, Tensor]:
    """The tensors named in `spec`, as float32, after checking presence, shapes and NaN/Inf."""
    dims: dict[str, int] = {}
    out: dict[str, Tensor] = {}
    for name, axes in spec.items():
        t = tensors.get(name)
        if not isinstance(t, Tensor):
            raise HusaiError(f"{file}: missing tensor {name!r}")
        shape = tuple(t.shape)
        ok = len(shape) == len(axes) and all(
            dims.setdefault(a, n) == n for a, n in zip(axes, shape, strict=True)
        )
        if not ok:
            want = tuple(dims.get(a, a) for a in axes)
            raise HusaiError(f"{file}: {name} has shape {shape}, expected {want}")
        if not t.is_floating_point():
            raise HusaiError(f"{file}: {name} must be floating point, got {t.dtype}")
        if not torch.isfinite(t).all():
            raise HusaiError(f"{file}: {name} contains NaN/Inf")
        out[name] = t.detach().float()
    return out


def check_sizes(cfg: dict[str, Any], sizes: dict[str, int], file: Path) -> None:
    """A config's declared sizes (e.g. d_in, d_sae) must be the tensors' (absent or null:
    not checked)."""
    for key, n in sizes.items():
        declared = cfg.get(key)
        if declared is not None and declared != n:
            raise HusaiError(f"{file}: {key} {declared!r} does not match the tensors ({n})")


def fold_centering(b_enc: Tensor, W_enc: Tensor, b_dec: Tensor) -> Tensor:
    """Encoder bias for inputs centred by b_dec when the source does not centre them:
    x W + b = (x − b_dec) W + (b + b_dec W)."""
    return (b_enc.double() + W_enc.double() @ b_dec.double()).float()


def build(
    architecture: str,
    weights: dict[str, Tensor],
    file: Path,
    *,
    seed: int = 0,
    cfg: SAEConfig | None = None,
    transcoder: bool = False,
    **cfg_fields: Any,
) -> SAE:
    """A one-seed husai SAE (or transcoder) holding `weights` (husai layout, one row per
    latent)."""
    d_sae, d_out = weights["W_dec"].shape
    d_in = REGISTRY[architecture].input_width(weights)
    try:
        cfg = (cfg or SAEConfig(architecture=architecture, **cfg_fields)).with_fields(d_sae=d_sae)
    except ValidationError as e:
        raise HusaiError(f"{file}: invalid SAE config ({format_error(e, '')})") from None
    sae = REGISTRY[architecture](cfg, int(d_in), [seed], int(d_out) if transcoder else None)
    with torch.no_grad():
        targets = dict(sae.named_parameters()) | {n: getattr(sae, n) for n in sae.own_tensors}
        for name, p in targets.items():
            if name not in weights:
                raise HusaiError(f"{file}: missing tensor for {name!r}")
            if weights[name].shape != p.shape[1:]:
                raise HusaiError(
                    f"{file}: {name} has shape {tuple(weights[name].shape)}, expected "
                    f"{tuple(p.shape[1:])}"
                )
            p[0] = weights[name].to(p.dtype)
    return sae
