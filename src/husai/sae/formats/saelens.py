"""SAELens layout (also husai's own): `cfg.json` + `sae_weights.safetensors`.

Tensors: `W_enc` [d_in, d_sae], `W_dec` [d_sae, d_in], `b_dec` [d_in] and, by architecture,
`b_enc` (standard, topk, jumprelu), `threshold` (jumprelu), `b_gate`/`b_mag`/`r_mag` (gated).
cfg.json's `architecture` picks the husai class; TopK's k is top-level `k` (sae-lens ≥ 6)
or `activation_fn_kwargs.k` (sae-lens 5, where TopK was "standard" + activation_fn "topk").
husai's own fields live under cfg.json's "husai" key. `apply_b_dec_to_input: false` is
folded into the encoder biases; `rescale_acts_by_decoder_norm` (TopK) is folded into the
weights; input normalisation other than "none" is refused (it depends on the input).

Transcoders follow sae-lens 6's (`Transcoder`, `JumpReLUTranscoder`): architecture
"transcoder" (ReLU) or "jumprelu_transcoder", top-level `d_out`, `W_dec` [d_sae, d_out],
`b_dec` [d_out] (output bias only), `apply_b_dec_to_input: false` (the input is not
centred). TopK and Gated transcoders, which sae-lens lacks, are written in the same layout
as "topk_transcoder" / "gated_transcoder" (sae-lens refuses them; husai reads them). Skip
transcoders (`W_skip`) are refused. husai's own architectures that SAELens lacks (`OWN`:
routesae, with its router `W_router` [n_layers, layer width]) are written under their husai
name ("routesae", as a transcoder "routesae_transcoder"); only husai reads them. Hook
points, when known, are top-level `hook_name` and `hook_name_out` (sae-lens moves them into
its `metadata`; both places are read).

An architecture's `own_tensors` that SAELens's file has no place for (archetypal's candidates
and free decoder parameters; its `W_dec` is the materialised atoms, so SAELens reads a plain
TopK SAE) are written beside it to `husai_weights.safetensors`, sealed by cfg.json's
`husai.own_weights_sha256`, and required by `load`.

A language-model SAE's `lm_metadata` (model_name, context_size, prepend_bos,
normalize_activations and its norm_scaling_factor, ...; see `formats.lm`) is written as
top-level keys and read back into `sae.lm_metadata`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import Tensor

from husai.errors import HusaiError
from husai.integrity import canonical_sha256
from husai.io import (
    damaged_key,
    dumps_json,
    load_tensors,
    read_json,
    save_tensors,
    sha256_file,
    write_json,
)
from husai.sae.base import SAE
from husai.sae.config import SAEConfig, format_error
from husai.sae.formats.common import Spec, build, check_sizes, check_tensors, fold_centering
from husai.sae.formats.files import CFG_FILE, OWN_WEIGHTS_FILE, WEIGHTS_FILE
from husai.sae.formats.lm import check_lm_metadata, read_lm_metadata
from husai.sae.registry import REGISTRY

FROM_SAELENS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}
#: husai architectures SAELens has no counterpart for: saved under their own name
OWN = {"routesae": "routesae"}
#: SAELens SAE architecture → the name of its transcoder (sae-lens has the first two)
TRANSCODERS = {
    "standard": "transcoder",
    "jumprelu": "jumprelu_transcoder",
    "topk": "topk_transcoder",
    "gated": "gated_transcoder",
    "routesae": "routesae_transcoder",
}
FROM_TRANSCODER = {t: {**FROM_SAELENS, **OWN}[a] for a, t in TRANSCODERS.items()}
SKIP_TRANSCODERS = {"skip_transcoder", "jumprelu_skip_transcoder"}
HOOK_KEYS = ("hook_name", "hook_name_out")
_BASE: Spec = {"W_enc": ("D", "F"), "W_dec": ("F", "D"), "b_dec": ("D",)}
SPECS: dict[str, Spec] = {
    "relu": {**_BASE, "b_enc": ("F",)},
    "topk": {**_BASE, "b_enc": ("F",)},
    "jumprelu": {**_BASE, "b_enc": ("F",), "threshold": ("F",)},
    "gated": {**_BASE, "b_gate": ("F",), "b_mag": ("F",), "r_mag": ("F",)},
    "routesae": {**_BASE, "b_enc": ("F",), "W_router": ("L", "D")},
}


def save(
    sae: SAE,
    directory: Path,
    extra: dict[str, Any] | None = None,
    *,
    hook_name: str | None = None,
    hook_name_out: str | None = None,
    lm_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a one-seed SAE or transcoder (use `ensemble.select(s)` first) to `directory`.

    `hook_name` / `hook_name_out` (a transcoder's target) and `lm_metadata` (see
    `formats.lm`; None for a toy SAE) default to the SAE's attributes.
    """
    if sae.n_seeds != 1:
        raise ValueError("save() takes a one-seed SAE; use sae.select(s)")
    directory = Path(directory)
    lm = lm_metadata if lm_metadata is not None else sae.lm_metadata
    lm = check_lm_metadata(lm) if lm is not None else {}
    hooks = {"hook_name": hook_name or sae.hook_name or lm.get("hook_name")}
    hooks["hook_name_out"] = hook_name_out or sae.hook_name_out
    if lm.get("hook_name") not in (None, hooks["hook_name"]):
        raise HusaiError(
            f"lm_metadata hook_name {lm['hook_name']!r} differs from the SAE's "
            f"{hooks['hook_name']!r}"
        )
    weights = save_tensors(
        directory / WEIGHTS_FILE, sae.saelens_weights(), metadata={"format": "saelens"}
    )
    own: dict[str, str] = {}
    if sae.own_tensors:  # beside SAELens's file, which must hold only what SAELens loads
        own_file = save_tensors(
            directory / OWN_WEIGHTS_FILE, sae.own_weights(), metadata={"format": "husai"}
        )
        own = {"own_weights_sha256": sha256_file(own_file)}
    arch = sae.saelens_architecture
    cfg = {
        "architecture": TRANSCODERS[arch] if sae.transcoder else arch,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        **({"d_out": sae.d_out} if sae.transcoder else {}),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": not sae.transcoder,
        "normalize_activations": "none",
        **{k: v for k, v in hooks.items() if v is not None},
        **{k: v for k, v in lm.items() if k != "hook_name"},
        **sae.extra_cfg(),
        "husai": {
            "architecture": sae.architecture,
            "seed": sae.seeds[0],
            "config": sae.cfg.model_dump(mode="json"),
            **(extra or {}),
            "weights_sha256": sha256_file(weights),
            **own,
        },
    }
    cfg["husai"]["cfg_sha256"] = _cfg_digest(cfg)
    write_json(directory / CFG_FILE, cfg)
    return directory


def _cfg_digest(cfg: dict[str, Any]) -> str:
    """sha256 of a cfg.json's canonical JSON without husai's `cfg_sha256` (its seal)."""
    own = {k: v for k, v in cfg["husai"].items() if k != "cfg_sha256"}
    return canonical_sha256({**cfg, "husai": own})


def _check_sealed(raw: dict[str, Any], cfg_file: Path, weights_file: Path, own_file: Path) -> None:
    """A husai-written SAE: cfg.json matches its seal and the weights their sha256 (a
    third-party SAE has neither and is read as it is)."""
    own = raw.get("husai")
    keys = [(raw, "husai")]
    if isinstance(own, dict):
        keys += [(own, k) for k in ("cfg_sha256", "weights_sha256", "own_weights_sha256")]
    for record, key in keys:
        if key not in record and (bad := damaged_key(record, key)) is not None:
            raise HusaiError(f"{cfg_file}: key {bad!r} is a damaged {key!r} (corrupted?)")
    if not isinstance(own, dict):
        return
    if "cfg_sha256" in own and (
        own["cfg_sha256"] != _cfg_digest(raw) or dumps_json(raw) != cfg_file.read_text()
    ):
        raise HusaiError(f"{cfg_file}: does not match its checksum (corrupted?)")
    for file, key in ((weights_file, "weights_sha256"), (own_file, "own_weights_sha256")):
        digest = own.get(key)
        if digest is not None and sha256_file(file) != digest:
            raise HusaiError(f"{file}: sha256 does not match {cfg_file} (corrupted?)")


def _architecture(cfg: dict[str, Any], file: Path) -> tuple[str, bool]:
    """(husai architecture, is a transcoder) of a cfg.json."""
    name = str(cfg.get("architecture", "standard"))
    if name == "standard" and cfg.get("activation_fn_str", cfg.get("activation_fn")) == "topk":
        name = "topk"  # sae-lens 5
    if name in SKIP_TRANSCODERS:
        raise HusaiError(f"{file}: {name}: skip connections (W_skip) are not supported")
    if name in FROM_TRANSCODER:
        return FROM_TRANSCODER[name], True
    if name in OWN:
        return OWN[name], False
    if name not in FROM_SAELENS:
        known = ", ".join([*FROM_SAELENS, *FROM_TRANSCODER, *OWN])
        raise HusaiError(f"{file}: unsupported SAELens architecture {name!r} (known: {known})")
    return FROM_SAELENS[name], False


def _k(cfg: dict[str, Any]) -> int:
    return int(cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k") or 1)


def _to_husai(
    arch: str, t: dict[str, Tensor], cfg: dict[str, Any], transcoder: bool
) -> dict[str, Tensor]:
    """SAELens tensors → husai layout, folding options husai's forward has no switch for."""
    w = {
        "W_enc": t["W_enc"].T.contiguous(),
        "W_dec": t["W_dec"],
        "b_dec": t["b_dec"],
        "b_enc": t["b_gate"] if arch == "gated" else t["b_enc"],
    }
    w.update({n: t[n] for n in ("threshold", "b_mag", "r_mag", "W_router") if n in t})
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        norm_F = w["W_dec"].norm(dim=-1).clamp_min(1e-8)  # as SAELens's fold_W_dec_norm
        w["W_enc"], w["b_enc"] = w["W_enc"] * norm_F[:, None], w["b_enc"] * norm_F
        w["W_dec"] = w["W_dec"] / norm_F[:, None]
    if not transcoder and not cfg.get("apply_b_dec_to_input", True):
        w["b_enc"] = fold_centering(w["b_enc"], w["W_enc"], w["b_dec"])
        if arch == "gated":
            w_mag = w["W_enc"] * w["r_mag"].exp()[:, None]
            w["b_mag"] = fold_centering(w["b_mag"], w_mag, w["b_dec"])
    return w


def _own_tensors(file: Path, names: tuple[str, ...]) -> dict[str, Tensor]:
    """An architecture's `own_tensors` from husai's own file (`build` checks their shapes)."""
    if not file.is_file():
        raise HusaiError(f"{file}: missing (this architecture keeps {', '.join(names)} there)")
    tensors, _ = load_tensors(file)
    out = {}
    for name in names:
        t = tensors.get(name)
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise HusaiError(f"{file}: missing floating-point tensor {name!r}")
        if not t.isfinite().all():
            raise HusaiError(f"{file}: {name} contains NaN/Inf")
        out[name] = t.float()
    return out


def load(path: Path) -> SAE:
    """Read an SAE directory in the SAELens layout into a one-seed husai SAE."""
    path = Path(path)
    cfg_file, weights_file = path / CFG_FILE, path / WEIGHTS_FILE
    raw = read_json(cfg_file)
    if not isinstance(raw, dict):
        raise HusaiError(f"{cfg_file}: expected a JSON object")
    tensors, _ = load_tensors(weights_file)
    own = raw.get("husai")
    saelens_arch, transcoder = _architecture(raw, cfg_file)
    try:
        if isinstance(own, dict) and "config" in own:
            cfg: SAEConfig | None = SAEConfig.from_saved(own["config"])
            arch, seed, fields = cfg.architecture, int(own.get("seed", 0)), {}
        else:
            cfg, arch, seed = None, saelens_arch, 0
            fields = {"k": _k(raw)} if arch in ("topk", "routesae") else {}
            if arch == "routesae" and isinstance(tensors.get("W_router"), Tensor):
                fields["n_layers"] = int(tensors["W_router"].shape[0])
    except ValidationError as e:
        raise HusaiError(f"{cfg_file}: invalid SAE config ({format_error(e, '')})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise HusaiError(f"{cfg_file}: invalid SAE config ({e})") from None
    lm = read_lm_metadata(raw, str(cfg_file))
    if transcoder and raw.get("apply_b_dec_to_input"):
        raise HusaiError(f"{cfg_file}: apply_b_dec_to_input is not supported for transcoders")
    # husai architectures saved as another SAELens one (batchtopk → jumprelu) use its tensors
    spec = SPECS.get(arch) or SPECS[FROM_SAELENS[REGISTRY[arch].saelens_architecture]]
    if transcoder:
        spec = {**spec, "W_dec": ("F", "O"), "b_dec": ("O",)}
    t = check_tensors(tensors, spec, weights_file)
    if transcoder and raw.get("d_out", t["b_dec"].shape[0]) != t["b_dec"].shape[0]:
        raise HusaiError(
            f"{cfg_file}: d_out {raw['d_out']} does not match b_dec {t['b_dec'].shape[0]}"
        )
    w = _to_husai(arch, t, raw, transcoder)
    if REGISTRY[arch].own_tensors:
        w |= _own_tensors(path / OWN_WEIGHTS_FILE, REGISTRY[arch].own_tensors)
    d_sae, d_in = int(w["W_dec"].shape[0]), int(REGISTRY[arch].input_width(w))
    check_sizes(raw, {"d_in": d_in, "d_sae": d_sae}, cfg_file)  # (routesae: all layers' width)
    if cfg is not None:
        check_sizes({"d_sae": cfg.d_sae}, {"d_sae": d_sae}, cfg_file)
    sae = build(arch, w, weights_file, seed=seed, cfg=cfg, transcoder=transcoder, **fields)
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    for key in HOOK_KEYS:
        value = raw.get(key, meta.get(key))
        setattr(sae, key, str(value) if value is not None else None)
    sae.lm_metadata = lm
    # last: the specific errors above come first
    _check_sealed(raw, cfg_file, weights_file, path / OWN_WEIGHTS_FILE)
    return sae
