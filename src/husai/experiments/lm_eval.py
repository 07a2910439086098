"""Downstream evaluation of SAEs (or transcoders) on a language model, on held-out contexts:
the LM's next-token cross-entropy clean, with the site zero-ablated and mean-ablated, and
with each seed's SAE spliced in (→ loss recovered vs zero and vs mean; KL to the clean
next-token distribution), plus each seed's reconstruction quality on the same tokens.
Shaped like the toy model's `downstream` block (`baselines`, `per_seed`).

Replaced tokens: every real token (attention mask), except position 0 when
`exclude_first` (the default; the BOS position, whose activation is an outlier in many
models and is usually dropped from SAE training — as SAEBench's core eval with
`exclude_special_tokens_from_reconstruction`). The mean for mean-ablation and the
reconstruction quality are over those same tokens, from one capture pass; cross-entropy
counts every real prediction and KL every real position (husai.metrics.next_token).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from husai.errors import HusaiError
from husai.lm import Adapter, Site, capture, splice
from husai.lm.splice import forward_order
from husai.metrics import (
    loss_recovered,
    masked_mean,
    prediction_mask,
    stream_quality,
    token_correct,
    token_cross_entropy,
    token_kl,
)
from husai.sae.base import SAE


def replaced_positions(attention_mask: Tensor, exclude_first: bool = True) -> Tensor:
    """bool [B, T]: the tokens whose activation is replaced (and measured)."""
    keep = attention_mask.bool().clone()
    if exclude_first:
        keep[:, 0] = False
    return keep


class _Tally:
    """Per-position CE / correct / KL of one condition, gathered over batches."""

    def __init__(self) -> None:
        self.ce: list[Tensor] = []
        self.correct: list[Tensor] = []
        self.kl: list[Tensor] = []

    def add(self, logits: Tensor, clean: Tensor | None, ids: Tensor, mask: Tensor) -> None:
        pred = prediction_mask(ids, mask)
        self.ce.append(token_cross_entropy(logits, ids)[pred])
        self.correct.append(token_correct(logits, ids)[pred])
        if clean is not None:
            self.kl.append(token_kl(clean, logits)[mask.bool().cpu()])

    def result(self) -> dict[str, float]:
        ce, ok = torch.cat(self.ce), torch.cat(self.correct)
        out = {
            "loss": masked_mean(ce, torch.ones_like(ce, dtype=torch.bool)),
            "accuracy": masked_mean(ok, torch.ones_like(ok)),
        }
        if self.kl:
            kl = torch.cat(self.kl)
            out["kl_to_clean"] = masked_mean(kl, torch.ones_like(kl, dtype=torch.bool))
        return out


def _check(model: nn.Module, sae: SAE, site: Site | str, site_out: Site | str | None, ids: Tensor):
    adapter = Adapter(model)
    s = adapter.site(site)
    s_out = None if site_out is None else adapter.site(site_out)
    if ids.dim() != 2 or ids.shape[0] == 0:
        shape = tuple(ids.shape)
        raise HusaiError(f"eval token ids must be [contexts, tokens], ≥ 1 context; got {shape}")
    if ids.shape[1] < 2:
        raise HusaiError(f"eval contexts need ≥ 2 tokens for a next-token loss, got {ids.shape[1]}")
    if sae.transcoder != (s_out is not None):
        what = "a transcoder needs site_out" if sae.transcoder else "site_out is for transcoders"
        raise HusaiError(f"{what} (evaluating at {s.name})")
    if s_out is not None and forward_order(s_out) <= forward_order(s):
        raise HusaiError(f"a transcoder's output site {s_out.name} must come after {s.name}")
    width = adapter.d_model  # every site of the supported families has the residual width
    if sae.d_in != width or sae.d_out != width:
        raise HusaiError(
            f"the SAE maps d_in {sae.d_in} → d_out {sae.d_out}, the site {s.name} has width {width}"
        )
    return s, s_out


def _batches(ids: Tensor, mask: Tensor, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    return [
        (ids[i : i + batch_size], mask[i : i + batch_size]) for i in range(0, len(ids), batch_size)
    ]


def _replaced(
    model: nn.Module,
    names: list[str],
    batches: list[tuple[Tensor, Tensor]],
    positions: list[Tensor],
) -> dict[str, Tensor]:
    """One capture pass: the replaced tokens' activations [n, D] at each site, on CPU."""
    if not any(bool(p.any()) for p in positions):
        raise HusaiError("no eval tokens to replace (every context is empty or one token long)")
    xs: dict[str, list[Tensor]] = {n: [] for n in names}
    for (ids, m), p in zip(batches, positions, strict=True):
        acts = capture(model, ids, names, m)
        for n in names:
            xs[n].append(acts[n][p.to(acts[n].device)].cpu())
    return {n: torch.cat(v) for n, v in xs.items()}


@torch.no_grad()
def eval_activations(
    model: nn.Module,
    site: Site | str,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    batch_size: int = 8,
    exclude_first: bool = True,
) -> Tensor:
    """The activations [n, D] at `site` of exactly the tokens `lm_downstream` replaces."""
    s = Adapter(model).site(site)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    batches = _batches(input_ids, mask, batch_size)
    positions = [replaced_positions(m, exclude_first) for _, m in batches]
    return _replaced(model, [s.name], batches, positions)[s.name]


@torch.no_grad()
def eval_layers(
    model: nn.Module,
    sites: list[str],
    input_ids: Tensor,
    scales: list[float],
    *,
    batch_size: int = 8,
    exclude_first: bool = True,
) -> Tensor:
    """[n, L·D]: the `eval_activations` tokens' activations at each of L sites (one capture
    pass), each × its scale, concatenated layer-major (a RouteSAE's rows)."""
    names = [Adapter(model).site(s).name for s in sites]
    mask = torch.ones_like(input_ids)
    batches = _batches(input_ids, mask, batch_size)
    positions = [replaced_positions(m, exclude_first) for _, m in batches]
    xs = _replaced(model, names, batches, positions)
    return torch.cat([xs[n] * float(c) for n, c in zip(names, scales, strict=True)], dim=1)


@torch.no_grad()
def lm_downstream(
    model: nn.Module,
    sae: SAE,
    site: Site | str,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    site_out: Site | str | None = None,
    batch_size: int = 8,
    exclude_first: bool = True,
    chunk: int = 4096,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Baselines (clean / zero-ablated / mean-ablated loss, accuracy, KL to clean) and, per
    seed, the spliced loss, accuracy, KL to clean, loss recovered vs zero and vs mean, and
    MSE / explained variance / L0 / dead and dense fractions (SAEBench's firing on > 10% of
    tokens) on the replaced tokens' activations, and per seed their log10 firing-frequency
    histogram
    (a transcoder: input at `site`, predicting and replacing `site_out`).

    `scale`: the SAE was trained on activations × scale (a store's normalisation): it
    reads a × scale and its output is divided by scale before it replaces the activation;
    quality is measured in the SAE's (scaled) units."""
    s, s_out = _check(model, sae, site, site_out, input_ids)
    out_site = s_out or s
    if not scale > 0:
        raise HusaiError(f"scale must be > 0, got {scale}")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    batches = _batches(input_ids, mask, batch_size)
    positions = [replaced_positions(m, exclude_first) for _, m in batches]
    names = [s.name] if s_out is None else [s.name, s_out.name]
    xs = _replaced(model, names, batches, positions)
    x = xs[s.name]
    y = None if s_out is None else xs[s_out.name]
    mean_D = (x if y is None else y).double().mean(0).float()
    acc = stream_quality(sae.encode, x * scale, sae.decode, None if y is None else y * scale, chunk)
    quality = [
        {**q, "dense_fraction": d} for q, d in zip(acc.result(), acc.dense_fraction(), strict=True)
    ]

    conditions: dict[str, Callable[[int], dict]] = {
        "zero_ablated": lambda _: {out_site: torch.zeros_like},
        "mean_ablated": lambda _: {out_site: lambda a: mean_D.to(a).expand_as(a)},
    }
    seeds = [sae.select(i) for i in range(sae.n_seeds)]
    tallies = {k: _Tally() for k in ["clean", *conditions, *range(len(seeds))]}
    for (ids, m), p in zip(batches, positions, strict=True):
        clean = splice(model, ids, {}, m)
        tallies["clean"].add(clean, None, ids, m)
        for key, make in conditions.items():
            tallies[key].add(splice(model, ids, make(0), m, positions=p), clean, ids, m)
        for i, one in enumerate(seeds):
            hooks = _sae_hooks(one, s, s_out, scale)
            tallies[i].add(splice(model, ids, hooks, m, positions=p), clean, ids, m)

    base = {k: tallies[k].result() for k in ["clean", *conditions]}
    per_seed = []
    for i in range(len(seeds)):
        r = tallies[i].result()
        for ablation in ("zero", "mean"):
            r[f"loss_recovered_vs_{ablation}"] = loss_recovered(
                base["clean"]["loss"], r["loss"], base[f"{ablation}_ablated"]["loss"]
            )
        per_seed.append({**r, **quality[i]})
    return {
        "baselines": base,
        "per_seed": per_seed,
        "firing_histograms": acc.histogram(),  # per seed, on the replaced tokens
        "firing_counts": acc.counts.cpu(),  # [S, F] on the same tokens (not for metrics.json)
        "site": s.name,
        "site_out": None if s_out is None else s_out.name,
        "exclude_first": exclude_first,
        "n_contexts": len(input_ids),
        "n_replaced_tokens": len(x),
        "n_predictions": sum(len(c) for c in tallies["clean"].ce),
    }


def _flat(one: SAE, scale: float = 1.0) -> Callable[[Tensor], Tensor]:
    """[B, T, D] → the one-seed SAE's output [B, T, O], in the SAE's dtype and back (input
    × scale, output / scale)."""

    def fn(a: Tensor) -> Tensor:
        w = one.W_dec
        a_in = a.reshape(-1, a.shape[-1]).to(device=w.device, dtype=w.dtype)
        r = one(a_in * scale if scale != 1.0 else a_in)[0]
        r = r / scale if scale != 1.0 else r
        return r.reshape(*a.shape[:-1], -1).to(a)

    return fn


def _sae_hooks(one: SAE, s: Site, s_out: Site | None, scale: float = 1.0) -> dict[Site, Callable]:
    """{site: reconstruction}, or a transcoder's: read `s`, replace `s_out` by the
    prediction from it (later in the same forward)."""
    if s_out is None:
        return {s: _flat(one, scale)}
    seen: dict[str, Tensor] = {}
    predict = _flat(one, scale)

    def read(a: Tensor) -> Tensor:
        seen["x"] = a
        return a

    return {s: read, s_out: lambda a: predict(seen.pop("x"))}
