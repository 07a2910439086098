"""Functional correspondence of matched latents across seeds (metrics.json's `functional`
block): for sampled latents of consecutive seed pairs (A, B), do a latent of A and its
Hungarian |cos| partner in B do the same thing in the model, more than A's latent and a
random latent of B?

- ablation fingerprint: the change of the model's outputs over a fixed probe set when the
  latent is zeroed in the spliced SAE (recon − a_i·d_i replaces the hooked activation);
  toy: Δ log-probs of every answer class on every probe input; LM: Δ next-token loss at
  every predicted position. Score: Pearson r of the partners' fingerprints;
- steering: α·d̂_i added to the clean hooked activation (α = `functional_steer` × the mean
  activation norm there); effect = Δ log-probs vs the clean model (toy: per probe input,
  scored by whether the same class rises most and by r; LM: averaged over positions, scored
  by the overlap of the top-k raised tokens and by r);
- substitution: A's latent i replaced by B's partner (encoder row, decoder row and every
  other per-latent parameter; b_enc shifted so that its pre-activation is the one it has in
  B, whose input bias b_dec differs): Δ reconstruction MSE and Δ model loss on the probe set,
  vs the same with a random B latent.

Latents are sampled (`sample_latents`): those of A that fire on the probe set (a latent that
never fires there has no ablation effect), pooled over the seed pairs and evenly spaced in
matched-|cos| rank. Random partners are drawn uniformly (seeded) among B's latents that fire
on the probe set. The model runs are batched over latents: a probe runs [L, N, O]
replacements at once. A toy probe (`ToyProbe`) or an LM probe (`LMProbe`) gives the model side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as fn
from torch import Tensor

from husai.config import MetricsConfig
from husai.metrics import assignment, mse
from husai.metrics.functional import (
    ablated,
    by_cos,
    compare_pairs,
    random_partners,
    row_correlations,
    sample_latents,
    steered,
    top_k_overlap,
)
from husai.sae.base import SAE

VARIANT = (
    "latents of consecutive seed pairs (A, B) vs their Hungarian |cos| partner in B "
    "(matched) and a uniform random B latent firing on the probe set (random); each score's "
    "difference is oriented so that > 0 = matched partners behave more alike"
)
SAMPLING = (
    "latents of A firing on ≥ 1 probe row, pooled over the seed pairs, evenly spaced in the "
    "rank of their matched |cos| (so every |cos| level is drawn); latents that never fire on "
    "the probe set (no ablation effect) are not sampled"
)
# matched pairs split by the sign of their decoder cosine: a |cos| matching also pairs a
# latent with one writing the opposite direction (signed cos < 0), which steers the other way
SIGN_EDGES = (-1.0, 0.0, 1.0)


@dataclass
class Outputs:
    """What a probe keeps of L model runs: `fp` [L, M] (its change is the ablation
    fingerprint), `steer` [L, …, V] (its change vs clean is the steering effect), `loss` [L]."""

    fp: Tensor
    steer: Tensor
    loss: Tensor


class ToyProbe:
    """The toy model on probe inputs; the SAE's output replaces `hook_out`'s answer-position
    activation (`hook` for an SAE; a transcoder reads `hook`)."""

    top_k = 1  # which answer class rises most

    def __init__(self, model: Any, tokens: Tensor, labels: Tensor, hook: str, hook_out: str):
        self.model, self.tokens, self.labels, self.hook_out = model, tokens, labels, hook_out
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, list(dict.fromkeys([hook, hook_out])))
        self.x_in, self.x_out = cache[hook], cache[hook_out]
        self.describe = {
            "kind": "toy model test-split inputs (seeded sample), answer position",
            "n_inputs": len(tokens),
            "fingerprint": "Δ log-probs of every answer class on every probe input",
            "steering_top_k": "1 (the answer class whose log-prob rises most, per input)",
        }

    @torch.no_grad()
    def run(self, rep_LNO: Tensor) -> Outputs:
        L, P = rep_LNO.shape[:2]
        step = max(1, 16384 // P)
        logps = []
        for s in range(0, L, step):
            rep = rep_LNO[s : s + step].reshape(-1, rep_LNO.shape[-1])
            toks = self.tokens.repeat(len(rep) // P, 1)
            logits = self.model(toks, hooks={self.hook_out: lambda a, r=rep: r})
            logps.append(logits.double().log_softmax(-1).view(-1, P, logits.shape[-1]))
        logp = torch.cat(logps)
        loss = -logp.gather(-1, self.labels.view(1, -1, 1).expand(L, -1, 1)).squeeze(-1).mean(1)
        return Outputs(logp.reshape(L, -1), logp, loss)


class LMProbe:
    """A language model on probe contexts; the SAE's output replaces `site`'s activation at
    every position but the first (as `lm_downstream`)."""

    def __init__(self, model: Any, site: str, ids: Tensor, top_k: int, batch_size: int = 8):
        from husai.experiments.lm_eval import replaced_positions
        from husai.lm import Adapter, capture
        from husai.metrics import prediction_mask

        self.model, self.ids, self.top_k, self.batch_size = model, ids, top_k, batch_size
        self.site = Adapter(model).site(site)
        self.positions = replaced_positions(torch.ones_like(ids))
        self.pred = prediction_mask(ids)
        with torch.no_grad():
            self.acts = capture(model, ids, [self.site.name])[self.site.name].float().cpu()
        self.x_in = self.x_out = self.acts[self.positions]
        self.describe = {
            "kind": "held-out contexts (the first of the lm_eval ones), every position but "
            "the first",
            "n_contexts": len(ids),
            "n_tokens": int(self.positions.sum()),
            "fingerprint": "Δ next-token loss at every predicted position",
            "steering_top_k": f"{top_k} (tokens whose mean log-prob over positions rises most)",
        }

    @torch.no_grad()
    def run(self, rep_LNO: Tensor) -> Outputs:
        from husai.lm import splice
        from husai.metrics import token_cross_entropy

        C = len(self.ids)
        step = max(1, self.batch_size // C)
        fps, steers = [], []
        device = next(self.model.parameters()).device
        for s in range(0, len(rep_LNO), step):
            rep = rep_LNO[s : s + step]
            full = self.acts.repeat(len(rep), 1, 1)
            full[self.positions.repeat(len(rep), 1)] = rep.reshape(-1, rep.shape[-1])
            full = full.to(device)
            ids = self.ids.repeat(len(rep), 1).to(device)
            logits = splice(self.model, ids, {self.site: lambda a, f=full: f})
            ce = token_cross_entropy(logits, ids).view(len(rep), C, -1)
            fps.append(ce[:, self.pred])
            logp = logits.float().log_softmax(-1).cpu().view(len(rep), C, *logits.shape[1:])
            steers.append(logp[:, self.positions].double().mean(1))
        fp = torch.cat(fps)
        return Outputs(fp, torch.cat(steers), fp.mean(1))


def substituted(a: SAE, b: SAE, pairs: list[tuple[int, int]]) -> SAE:
    """An ensemble of len(pairs) copies of the one-seed SAE a, copy k with latent i replaced
    by b's latent j (every per-latent parameter: W_enc, W_dec, b_enc, thresholds, …), b_enc
    shifted by W_enc_b[j]·(bias_a − bias_b) so that its pre-activation equals b's."""
    F = a.d_sae
    ens = type(a)(a.cfg, a.d_in, a.seeds * len(pairs), a.d_out if a.transcoder else None)
    shift = b.W_enc[0] @ (a.input_bias()[0] - b.input_bias()[0])  # [F]
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    with torch.no_grad():
        for name, p in ens.named_parameters():
            p.copy_(pa[name].expand_as(p))
            per_latent = name in ("W_enc", "W_dec") or (
                p.dim() == 2 and p.shape[1] == F and name != "b_dec"
            )
            if not per_latent:
                continue
            for k, (i, j) in enumerate(pairs):
                p[k, i] = pb[name][0, j] + (shift[j] if name == "b_enc" else 0)
    return ens


def _pair_matching(sae: SAE, a: int, b: int, m: MetricsConfig) -> tuple[np.ndarray, np.ndarray]:
    """(partner in b, partner |cos|) per latent of a: the Hungarian |cos| matching."""
    W = sae.W_dec.detach()
    match = assignment(W[a], W[b], method="auto", block_size=m.block_size)
    cos = np.zeros(sae.d_sae)
    cos[match.rows] = match.scores
    return match.partner_of_rows(sae.d_sae), cos


@torch.no_grad()
def functional_block(
    sae: SAE, probe: ToyProbe | LMProbe, m: MetricsConfig, n: int, scale: float = 1.0
) -> dict[str, Any]:
    """metrics.json's `functional` block for one SAE configuration's seeds (`n` latents
    sampled; `scale`: the SAE reads activations × scale, its output / scale replaces them)."""
    S = sae.n_seeds
    ones = [sae.select(s) for s in range(S)]
    x, y = probe.x_in * scale, probe.x_out * scale
    codes = [o.encode(x)[0] for o in ones]
    recon = [o.decode(c.unsqueeze(0))[0] for c, o in zip(codes, ones, strict=True)]
    alive = [(c != 0).any(0).numpy() for c in codes]
    pairs = [(s, s + 1) for s in range(S - 1)]
    matched = [_pair_matching(sae, a, b, m) for a, b in pairs]
    picks = sample_latents([c for _, c in matched], [alive[a] for a, _ in pairs], n)
    gen = torch.Generator().manual_seed(m.baseline_seed)
    rows = []  # (pair k, i, matched j, random r, cos)
    for k, i in picks:
        j = int(matched[k][0][i])
        (r,) = random_partners([j], np.flatnonzero(alive[pairs[k][1]]), gen)
        if j >= 0 and r is not None:
            rows.append((k, i, j, r, float(matched[k][1][i])))
    needs: dict[int, set[int]] = {s: set() for s in range(S)}
    for k, i, j, r, _ in rows:
        needs[pairs[k][0]].add(i)
        needs[pairs[k][1]].update((j, r))
    clean = probe.run(probe.x_out.unsqueeze(0))
    alpha = float(m.functional_steer * probe.x_out.norm(dim=-1).mean())
    fp: dict[tuple[int, int], Tensor] = {}
    st: dict[tuple[int, int], Tensor] = {}
    base_loss, base_mse = [], []
    for s in range(S):
        base = probe.run((recon[s] / scale).unsqueeze(0))
        base_loss.append(float(base.loss[0]))
        base_mse.append(mse(y, recon[s]))
        lat = torch.tensor(sorted(needs[s]), dtype=torch.long)
        if not len(lat):
            continue
        W = ones[s].W_dec[0]
        abl = probe.run(ablated(recon[s], codes[s], W, lat) / scale)
        ste = probe.run(steered(probe.x_out, W, lat, alpha))
        for t, i in enumerate(lat.tolist()):
            fp[s, i] = abl.fp[t] - base.fp[0]
            st[s, i] = ste.steer[t] - clean.steer[0]
    sub = _substitution(ones, rows, pairs, probe, x, y, scale, base_loss, base_mse)

    def scores(eff: dict, partner: int, score: Any) -> np.ndarray:
        if not rows:
            return np.zeros(0)
        ea = torch.stack([eff[pairs[row[0]][0], row[1]] for row in rows])
        eb = torch.stack([eff[pairs[row[0]][1], row[partner]] for row in rows])
        return score(ea, eb)

    boot = {"level": m.ci_level, "n_resamples": m.n_bootstrap, "seed": m.baseline_seed}
    cos = [row[4] for row in rows]
    signed = [
        float(
            fn.cosine_similarity(
                ones[pairs[k][0]].W_dec[0, i], ones[pairs[k][1]].W_dec[0, j], dim=0
            )
        )
        for k, i, j, _, _ in rows
    ]
    abl_m, abl_r = scores(fp, 2, row_correlations), scores(fp, 3, row_correlations)
    st_m, st_r = scores(st, 2, row_correlations), scores(st, 3, row_correlations)

    def top(ea: Tensor, eb: Tensor) -> np.ndarray:
        return top_k_overlap(ea, eb, probe.top_k)

    top_m, top_r = scores(st, 2, top), scores(st, 3, top)
    return {
        "variant": VARIANT,
        "probe": probe.describe,
        "seed_pairs": [[sae.seeds[a], sae.seeds[b]] for a, b in pairs],
        "n_requested": n,
        "n_sampled": len(rows),
        "sampling": SAMPLING,
        "firing_on_probe": [int(a.sum()) for a in alive],
        "d_sae": sae.d_sae,
        "steer": {"scale": m.functional_steer, "alpha": alpha},
        "ablation": {
            "score": "Pearson r of the partners' ablation fingerprints (higher = more alike); "
            "undefined (left out, counted) where a partner never fires on the probe set",
            **compare_pairs(abl_m, abl_r, **boot),
            "by_cos": by_cos(cos, abl_m, **boot),
            "by_sign": by_cos(signed, abl_m, SIGN_EDGES, **boot),
        },
        "steering": {
            "correlation": {
                "score": "Pearson r of the partners' steering effects (higher = more alike)",
                **compare_pairs(st_m, st_r, **boot),
                "by_sign": by_cos(signed, st_m, SIGN_EDGES, **boot),
            },
            "top_agreement": {
                "score": f"share of the top-{probe.top_k} raised outputs in common (higher = "
                "more alike)",
                "k": probe.top_k,
                **compare_pairs(top_m, top_r, **boot),
            },
        },
        "substitution": {
            key: {
                "score": f"Δ {what} when A's latent is replaced by B's (lower = a better "
                "substitute)",
                **compare_pairs(sub[key][0], sub[key][1], higher_is_alike=False, **boot),
            }
            for key, what in (("recon_mse", "reconstruction MSE"), ("model_loss", "model loss"))
        },
        "samples": [
            {
                "seeds": [sae.seeds[pairs[k][0]], sae.seeds[pairs[k][1]]],
                "latent": i,
                "matched": j,
                "random": r,
                "cos": c,
                "cos_signed": signed[t],
                "ablation_r": [_num(abl_m[t]), _num(abl_r[t])],
                "steering_r": [_num(st_m[t]), _num(st_r[t])],
            }
            for t, (k, i, j, r, c) in enumerate(rows)
        ],
    }


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _substitution(
    ones: list[SAE],
    rows: list[tuple],
    pairs: list[tuple[int, int]],
    probe: ToyProbe | LMProbe,
    x: Tensor,
    y: Tensor,
    scale: float,
    base_loss: list[float],
    base_mse: list[float],
    chunk: int = 16,
) -> dict[str, tuple[list[float], list[float]]]:
    """Per sampled latent: (matched, random) Δ reconstruction MSE and Δ model loss when
    A's latent is replaced by B's partner, vs A unchanged."""
    out: dict[str, tuple[list[float], list[float]]] = {
        "recon_mse": ([], []),
        "model_loss": ([], []),
    }
    for g, col in ((0, 2), (1, 3)):
        for s in range(0, len(rows), chunk):
            part = rows[s : s + chunk]
            by_pair: dict[int, list[int]] = {}
            for t, row in enumerate(part):
                by_pair.setdefault(row[0], []).append(t)
            d_mse, d_loss = [0.0] * len(part), [0.0] * len(part)
            for k, ts in by_pair.items():
                a, b = pairs[k]
                ens = substituted(ones[a], ones[b], [(part[t][1], part[t][col]) for t in ts])
                hats = ens.decode(ens.encode(x))
                losses = probe.run(hats / scale).loss
                for q, t in enumerate(ts):
                    d_mse[t] = mse(y, hats[q]) - base_mse[a]
                    d_loss[t] = float(losses[q]) - base_loss[a]
            out["recon_mse"][g].extend(d_mse)
            out["model_loss"][g].extend(d_loss)
    return out


def toy_probe(model: Any, toy: Any, hook: str, hook_out: str | None, m: MetricsConfig) -> ToyProbe:
    """`functional_probes` inputs of the toy model's test split (seeded sample)."""
    from husai.activations import split_rows
    from husai.toy import make_dataset

    tokens, labels = make_dataset(toy.model.p, toy.model.op)
    rows = split_rows(toy, "test")
    gen = torch.Generator().manual_seed(m.baseline_seed)
    pick = rows[torch.randperm(len(rows), generator=gen)[: m.functional_probes]].sort().values
    return ToyProbe(model, tokens[pick], labels[pick], hook, hook_out or hook)
