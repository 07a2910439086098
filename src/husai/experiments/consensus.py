"""`husai consensus`: a consensus dictionary of N seeds' SAEs, exported as one SAE.

Grouping: ``husai.metrics.consensus.consensus_groups`` on the decoder rows (reference-free;
see there). The groups found in >= ``min_seeds`` of the N seeds become the latents of one SAE
of the sources' architecture (the TopK family: k capped at the consensus width), in order of
stability:

- decoder rows: the groups' centroids (sign-aligned mean of the members' unit decoder rows);
  b_dec: the mean of the seeds' b_dec;
- encoder "averaged": the members' encoder rows (flipped with their decoder row's sign) and
  per-latent parameters (b_enc, thresholds, ...) averaged. Needs no data, but each seed's
  encoder was fitted alongside latents the consensus drops (TopK: a different competition
  for the k slots), so it is only a starting point;
- encoder "refit" (given activations): from the averaged encoder, the encoder-side
  parameters are retrained with the architecture's own loss on the activations, the decoder
  (W_dec, b_dec) frozen. This is the exported one when activations are given, as it is the
  best encoder for the consensus decoder; both are measured (EV, L0, dead fraction).

Written to ``out``: cfg.json + sae_weights.safetensors (SAELens layout), ``consensus.json``
(every group, the quality of both encoders and of every single seed, truth recovery on
synthetic data) and ``consensus_latents.csv`` (the exported latents' stability table).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor

from husai.config import format_error
from husai.errors import HusaiError
from husai.io import write_json, write_text
from husai.metrics import recovery, stream_quality
from husai.metrics.consensus import STABILITY_VARIANT, Group, consensus_groups
from husai.sae import SAE, load
from husai.sae.formats import find_saes, layout_of
from husai.sae.formats.saelens import save
from husai.sae.trainer import build_sae

DEFAULT_THRESHOLD = 0.7
DEFAULT_REFIT_EPOCHS = 5
SUMMARY_FILE, TABLE_FILE = "consensus.json", "consensus_latents.csv"
DECODER = ("W_dec", "b_dec")
QUALITY_VARIANT = (
    "explained_variance = 1 − SSE/SST on the activations (higher = better); l0 = mean number "
    "of active latents per token; dead_fraction = fraction of latents that never fire on them "
    "(lower = better)"
)


@dataclass
class Consensus:
    """Result of `consensus`: JSON summary, the exported SAE, its stability table rows."""

    summary: dict[str, Any]
    sae: SAE
    table: list[dict[str, Any]]


def resolve_sae_dirs(paths: list[Path]) -> list[Path]:
    """SAE directories from the arguments: SAE directories, or one folder holding them (one
    SAE config of a run, e.g. RUN/saes/<set>/<sae>, or a whole run with one config)."""
    if not paths:
        raise HusaiError("consensus needs SAE directories or a run directory")
    if len(paths) == 1 and layout_of(Path(paths[0])) is None:
        found = find_saes(Path(paths[0]))
        parents = sorted({str(p.parent) for p in found})
        if len(parents) > 1:
            raise HusaiError(
                f"{paths[0]} holds SAEs of {len(parents)} configs ({', '.join(parents)}); "
                "pass one of those folders"
            )
        paths = found
    if len(paths) < 2:
        raise HusaiError(f"consensus needs at least two SAEs, got {len(paths)}")
    return [Path(p) for p in paths]


def run_activations(dirs: list[Path]) -> Path | None:
    """The activation file a `husai run` trained these seeds on
    (RUN/data/<set>/activations.safetensors for RUN/saes/<set>/<sae>/seed_<n>), if any."""
    config = dirs[0].resolve().parent
    if config.parent.parent.name != "saes":
        return None
    path = config.parent.parent.parent / "data" / config.parent.name / "activations.safetensors"
    return path if path.is_file() else None


def _load(dirs: list[Path]) -> list[SAE]:
    saes = [load(p) for p in dirs]
    for what, get in (
        ("d_in", lambda s: s.d_in),
        ("hook", lambda s: s.hook_name),
        ("architecture", lambda s: s.architecture),
    ):
        vals = [get(s) for s in saes]
        if len(set(vals)) > 1:
            detail = ", ".join(f"{p}: {v}" for p, v in zip(dirs, vals, strict=True))
            raise HusaiError(f"SAEs have different {what} ({detail}); no consensus across them")
    if any(s.transcoder for s in saes):
        raise HusaiError("consensus of transcoders is not supported (SAEs only)")
    return saes


def _per_latent(sae: SAE, name: str) -> bool:
    return name not in DECODER and getattr(sae, name).shape[1] == sae.d_sae


@torch.no_grad()
def build_consensus_sae(saes: list[SAE], groups: list[Group]) -> SAE:
    """One SAE whose latents are `groups` (decoder: centroids; encoder: averaged members)."""
    src = saes[0]
    width = len(groups)
    fields: dict[str, Any] = {"d_sae": width, "expansion_factor": None}
    if src.uses_k:
        fields["k"] = min(min(int(s.params.k) for s in saes), width)  # type: ignore[attr-defined]
    try:
        cfg = src.cfg.with_fields(**fields)
    except ValidationError as e:
        raise HusaiError(format_error(e, f"consensus {src.architecture} SAE")) from None
    out = build_sae(cfg, src.d_in, [0])
    out.hook_name, out.lm_metadata = src.hook_name, src.lm_metadata
    for name, p in out.named_parameters():
        if name == "W_dec":
            p[0] = torch.as_tensor(np.stack([g.centroid for g in groups]), dtype=p.dtype)
        elif _per_latent(src, name):
            for f, g in enumerate(groups):
                vals = [
                    getattr(saes[s], name)[0, lat] * (sign if name == "W_enc" else 1)
                    for (s, lat), sign in zip(g.members, g.signs, strict=True)
                ]
                p[0, f] = torch.stack(vals).mean(0)
        else:
            p[0] = torch.stack([getattr(s, name)[0] for s in saes]).mean(0)
    return out


def refit_encoder(sae: SAE, x_ND: Tensor, epochs: int, seed: int = 0) -> SAE:
    """A copy of `sae` whose encoder-side parameters are retrained on x (decoder frozen)."""
    import copy

    sae = copy.deepcopy(sae)
    params = [p for n, p in sae.named_parameters() if n not in DECODER and p.requires_grad]
    for n in DECODER:
        getattr(sae, n).requires_grad_(False)
    opt = torch.optim.Adam(params, lr=sae.cfg.lr)
    g = torch.Generator().manual_seed(seed)
    bs = sae.cfg.batch_size
    sae.start_training(len(x_ND))
    for _ in range(epochs):
        order = torch.randperm(len(x_ND), generator=g)
        for start in range(0, len(x_ND), bs):
            xb = x_ND[order[start : start + bs]].unsqueeze(0)
            loss, parts = sae.loss(xb)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            sae.after_step(parts, len(xb[0]))
    sae.finish_training(x_ND)
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae


def _quality(sae: SAE, x_ND: Tensor) -> dict[str, float]:
    return stream_quality(sae.encode, x_ND, sae.decode).result()[0]


def _x_and_truth(activations: Path | Tensor | None, d_in: int) -> tuple[Tensor | None, Any]:
    if activations is None:
        return None, None
    truth = None
    if isinstance(activations, Tensor):
        x = activations.float()
    else:
        from husai.activations import load_activations
        from husai.io import load_tensors
        from husai.synthetic import FEATURES_KEY, load_ground_truth

        x, _ = load_activations(Path(activations))
        if FEATURES_KEY in load_tensors(Path(activations))[0]:
            truth = load_ground_truth(Path(activations))
    if x.ndim != 2 or x.shape[1] != d_in:
        raise HusaiError(f"activations have shape {tuple(x.shape)} but the SAEs have d_in {d_in}")
    return x, truth


def _group_json(g: Group, exported: int | None) -> dict[str, Any]:
    return {
        "n_seeds": g.n_seeds,
        "stability": round(g.stability, 6),
        "mean_abs_cos": None if g.mean_abs_cos is None else round(g.mean_abs_cos, 6),
        "members": [list(m) for m in g.members],
        "sign_flipped": sum(s < 0 for s in g.signs),
        "exported_latent": exported,
    }


def consensus(
    paths: list[Path],
    min_seeds: int | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    activations: Path | Tensor | None = None,
    truth: Tensor | None = None,
    refit_epochs: int = DEFAULT_REFIT_EPOCHS,
) -> Consensus:
    """The consensus SAE of `paths` (SAE dirs, or one folder of them; see the module
    docstring). `min_seeds` default max(2, ceil(N/2)): a consensus latent is found in
    at least two seeds. `activations`: a tensor or activation file
    (default: the run's, when the SAEs come from a `husai run`); `truth` [n, d]: true features
    (default: those stored in a synthetic activation file)."""
    dirs = resolve_sae_dirs(paths)
    saes = _load(dirs)
    n = len(saes)
    m = max(2, math.ceil(n / 2)) if min_seeds is None else int(min_seeds)
    if not 1 <= m <= n:
        raise HusaiError(f"--min-seeds must lie in 1..{n} (the number of SAEs), got {m}")
    if refit_epochs < 1:
        raise HusaiError(f"refit epochs must be a positive integer, got {refit_epochs}")
    if activations is None:
        activations = run_activations(dirs)
    x_ND, file_truth = _x_and_truth(activations, saes[0].d_in)
    truth = file_truth if truth is None else truth
    groups = consensus_groups([s.W_dec[0].detach() for s in saes], threshold)
    kept = [g for g in groups if g.n_seeds >= m]
    if not kept:
        raise HusaiError(
            f"no latent is found in >= {m} of {n} SAEs at |cos| >= {threshold:g}; nothing to export"
        )
    averaged = build_consensus_sae(saes, kept)
    exported, encoder = averaged, "averaged"
    out: dict[str, Any] = {
        "saes": [str(p) for p in dirs],
        "n_saes": n,
        "d_in": saes[0].d_in,
        "architecture": saes[0].architecture,
        "hook_name": saes[0].hook_name,
        "rows_grouped": "decoder",
        "threshold": threshold,
        "min_seeds": m,
        "grouping": "pairwise one-to-one matchings of unit decoder rows by |cos| (Hungarian); "
        "matched pairs >= threshold merged in decreasing |cos|, never two latents of one seed "
        "in a group (husai.metrics.consensus)",
        "stability_variant": STABILITY_VARIANT,
        "n_groups": len(groups),
        "groups_by_n_seeds": {str(k): sum(g.n_seeds == k for g in groups) for k in range(n, 0, -1)},
        "width": len(kept),
        "single_widths": [s.d_sae for s in saes],
        **({"k": int(averaged.params.k)} if averaged.uses_k else {}),  # type: ignore[attr-defined]
    }
    if x_ND is not None:
        refit = refit_encoder(averaged, x_ND, refit_epochs)
        exported, encoder = refit, "refit"
        out["quality"] = {
            "n_tokens": len(x_ND),
            "variant": QUALITY_VARIANT,
            "single_seeds": [_quality(s, x_ND) for s in saes],
            "consensus_averaged": _quality(averaged, x_ND),
            "consensus_refit": _quality(refit, x_ND),
            "refit_epochs": refit_epochs,
        }
    out["encoder"] = encoder
    out["encoder_note"] = (
        "refit: encoder-side parameters retrained on the activations with the decoder frozen "
        "(from the averaged encoder)"
        if encoder == "refit"
        else "averaged: the members' sign-aligned encoder rows and biases averaged (no "
        "activations given to refit them)"
    )
    if truth is not None:
        out["recovery"] = {
            "variant": "recovery of the true features by decoder rows (husai.metrics.recovery; "
            "hungarian_mcc = one-to-one |cos| summed / n_true); higher = better",
            "single_seeds": [recovery(truth, s.W_dec[0].detach()) for s in saes],
            "consensus": recovery(truth, exported.W_dec[0].detach()),
        }
    index = {id(g): f for f, g in enumerate(kept)}
    out["groups"] = [_group_json(g, index.get(id(g))) for g in groups]
    table = [
        {
            "latent": f,
            "n_seeds": g.n_seeds,
            "stability": round(g.stability, 6),
            "mean_abs_cos": "" if g.mean_abs_cos is None else round(g.mean_abs_cos, 6),
            "sign_flipped": sum(s < 0 for s in g.signs),
            "members": " ".join(f"{s}:{lat}" for s, lat in g.members),
        }
        for f, g in enumerate(kept)
    ]
    return Consensus(out, exported, table)


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output folder that holds anything but an earlier consensus (e.g. a source)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise HusaiError(f"--out {out_dir} is a file, not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / SUMMARY_FILE).is_file():
        raise HusaiError(f"--out {out_dir} is not empty and holds no earlier consensus; refusing")


def write_consensus(c: Consensus, out_dir: Path) -> list[Path]:
    """The SAE (SAELens layout), then consensus_latents.csv and consensus.json, atomically
    (an earlier consensus in `out_dir` is replaced)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    s = c.summary
    extra = {
        "consensus": {
            k: s[k] for k in ("saes", "threshold", "min_seeds", "encoder", "stability_variant")
        }
    }
    written = [save(c.sae, out_dir, extra)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(c.table[0]))
    w.writeheader()
    w.writerows(c.table)
    written.append(write_text(out_dir / TABLE_FILE, buf.getvalue()))
    written.append(write_json(out_dir / SUMMARY_FILE, s))
    return written
