"""The `lm_sae` job: train one SAE configuration over its seeds from a language model's
activation store (streamed through the shuffle buffer), then evaluate it on the held-out
contexts.

Spec: `version` (LM_JOB_VERSION), `sae`, `seeds`, `store` (its content hash), `metrics`,
`device`, `lm`: `model_hash` (sha256 over the weights), `hook`, `eval` (tensor hash of the
held-out token ids), `scale` (the store's normalisation, applied when the SAE reads the
model), `batch_size`, and `cfg` (the SAEs' LM metadata for cfg.json: `husai.sae.store_lm_metadata`).
Inputs: `store`, `model` (a model directory), `eval` (the held-out contexts file), and
with an OOD corpus (spec `lm.ood`: `corpus` name, `ids` tensor hash) `ood` (its contexts).

Evaluation, on the held-out tokens (every position but the first, as the SAEs' training
tokens): the consistency summary (trained vs random vs at-init decoders), per seed the
reconstruction quality and the LM's next-token loss / KL with the SAE spliced in (vs clean,
zero- and mean-ablated), and `lm_consistency`: Paulo & Belrose's shared-latent rate,
subspace similarity, activation MCC and firing, as `husai compare` computes them;
`functional` (husai.experiments.functional, on the first `functional_lm_contexts` held-out
contexts) when `metrics.functional`; with
`lm.ood`, quality.ood: EV on the OOD corpus's tokens (same site, × the store's scale) and
the drop from the held-out tokens' EV; the consensus block (husai.experiments.
consensus_block), its dictionary refit on evenly spaced store rows and scored on the
held-out tokens.
Result: `{"evaluation": <metrics.json entry>, "trained": bool}`.

A multi-layer set (RouteSAE; spec `lm.hooks`, `lm.scales`, inputs `store_<i>`): trained on
the stores joined column-wise; quality is scored against `reconstruction_target` on the
held-out tokens captured at every hook (each × its store's scale, layer-major), `routing`
gives each seed's layer distribution there, and the splice metrics are skipped
(`downstream: null` and `downstream_reason`): the SAE reconstructs a different layer per
token, so there is no one site to splice its output into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from husai.config import MetricsConfig, SAEConfig
from husai.errors import HusaiError
from husai.experiments.coverage import coverage_block
from husai.experiments.engine import Job, Progress
from husai.experiments.evaluate import consistency, protocol_block
from husai.experiments.sae_job import quality_block, train_or_load
from husai.io import load_tensors, tensor_hash
from husai.metrics import stream_quality
from husai.sae.trainer import initial_sae
from husai.store import ActivationStore

LM_JOB_VERSION = 7  # 2: metric variants, coverage curve and stability by firing frequency;
# 3: functional correspondence (`functional` block); 4: `probing` (SAEBench's sparse probing
# on the held-out tokens' properties); 5: the consensus block, `metrics.variants`, EV on the
# `lm.ood` corpus (quality.ood)
# 6: faster TopK training (as SAE_JOB_VERSION 10), the same SAEs up to float rounding
# 7: the `protocol` block (as SAE_JOB_VERSION 11)
DOWNSTREAM = ("loss", "accuracy", "kl_to_clean", "loss_recovered_vs_zero", "loss_recovered_vs_mean")
COMPARE_BLOCKS = ("shared_latent_rate", "subspace_similarity", "activation_mcc", "firing")


NO_SPLICE = (
    "not defined for a RouteSAE over several layers: its router picks a layer per token, so "
    "its reconstruction has no one site to replace"
)


def _inputs(job: Job) -> tuple[Any, torch.Tensor]:
    """(the training rows: a store, or a multi-layer set's ConcatRows; held-out ids)."""
    from husai.io import config_hash
    from husai.sae.data import ConcatRows

    spec = job.spec
    n = len(spec["lm"].get("hooks") or [None])
    if n == 1:
        store = ActivationStore(Path(job.inputs["store"]))
        got = store.content_hash
    else:
        stores = [ActivationStore(Path(job.inputs[f"store_{i}"])) for i in range(n)]
        store, got = ConcatRows(stores), config_hash({"stores": [s.content_hash for s in stores]})
    if got != spec["store"]:
        raise HusaiError(f"{job.inputs['store']}: store differs from the one this job was made for")
    tensors, _ = load_tensors(Path(job.inputs["eval"]))
    ids = tensors.get("input_ids")
    if ids is None or tensor_hash(ids) != spec["lm"]["eval"]:
        raise HusaiError(f"{job.inputs['eval']}: held-out contexts differ from the job's")
    return store, ids


def _model(job: Job, device: str) -> Any:
    from husai.lm import load_model, model_hash

    model = load_model(Path(job.inputs["model"]), dtype=torch.float32, device=device)
    if model_hash(model) != job.spec["lm"]["model_hash"]:
        raise HusaiError(f"{job.inputs['model']}: model differs from the one this job was made for")
    return model


def evaluate_lm(job: Job, sae: Any, store: ActivationStore, ids: torch.Tensor) -> dict[str, Any]:
    """metrics.json's entry for one SAE configuration on one LM data set."""
    from husai.experiments.compare import compare
    from husai.experiments.lm_eval import eval_activations, lm_downstream
    from husai.runtime import resolve_device
    from husai.sae.io import seed_dir

    spec, seeds = job.spec, job.spec["seeds"]
    lm = spec["lm"]
    m = MetricsConfig.model_validate(spec["metrics"])
    resolved = SAEConfig.model_validate(spec["sae"]).resolve(store.d)
    device = str(resolve_device(spec["device"]))
    model = _model(job, device)
    if spec["lm"].get("hooks"):
        return _evaluate_routed(job, sae, store, ids, model, device, resolved, m)
    sae = sae.to(device)
    x_eval = eval_activations(model, lm["hook"], ids.to(device), batch_size=lm["batch_size"])
    down = lm_downstream(
        model, sae, lm["hook"], ids.to(device), batch_size=lm["batch_size"], scale=lm["scale"]
    )
    x_ood = None
    if lm.get("ood") is not None:
        x_ood = eval_activations(
            model, lm["hook"], _ood_ids(job).to(device), batch_size=lm["batch_size"]
        )
    sae = sae.cpu()
    functional = {}
    if m.functional:
        from husai.experiments.functional import LMProbe, functional_block

        probe_ids = ids[: m.functional_lm_contexts].to(device)
        probe = LMProbe(model, lm["hook"], probe_ids, m.functional_top_k, lm["batch_size"])
        functional["functional"] = functional_block(
            sae, probe, m, m.functional_lm_latents, lm["scale"]
        )
    counts = down.pop("firing_counts")
    qual = [
        {(f"downstream_{k}" if k in DOWNSTREAM else k): v for k, v in d.items()}
        for d in down.pop("per_seed")
    ]
    cmp = compare(
        [seed_dir(job.out_dir, s) for s in seeds], m, activations=x_eval * lm["scale"]
    ).summary
    for entry, seed in zip(cmp["firing"]["per_sae"], seeds, strict=True):
        entry["sae"] = f"seed_{seed}"  # not the absolute path: metrics.json is path-free
    init = initial_sae(resolved, store, sae.seeds)
    out = {
        "config": resolved.model_dump(mode="json"),
        "consistency": consistency(sae, resolved, m, store, init=init),
        "lm_consistency": {k: cmp[k] for k in COMPARE_BLOCKS if k in cmp},
        "downstream_baselines": down.pop("baselines"),
        "lm_eval": down,
        "quality": quality_block(qual, seeds, m),
        **coverage_block(sae, counts, down["n_replaced_tokens"], m),
        **functional,
    }
    x_scaled = x_eval.cpu() * lm["scale"]
    init_counts = stream_quality(init.encode, x_scaled, init.decode).counts
    out["protocol"] = protocol_block(
        resolved, sae, init, counts, init_counts, out["consistency"], m
    )
    if x_ood is not None:  # husai.experiments.gate_data
        from husai.experiments.gate_data import ood_quality

        x = x_ood.cpu() * lm["scale"]
        kind, ref = lm["ood"]["corpus"], "the held-out tokens"
        out["quality"]["ood"] = ood_quality(x, kind, sae, qual, m, reference=ref)
    if m.consensus:
        from husai.experiments.consensus_block import REFIT_ROWS, consensus_block
        from husai.sae.data import as_rows

        kw = {"score_rows": x_eval.cpu() * lm["scale"], "single_mean": out["quality"]["mean"]}
        refit_rows = as_rows(store).spaced(REFIT_ROWS)
        out["consensus"] = consensus_block(sae, init, m, refit_rows=refit_rows, **kw)
    if m.probing:  # SAEBench's sparse probing on the held-out tokens' properties
        out["probing"] = _probing(job, sae, init, x_eval, ids, m)
    return out


def _ood_ids(job: Job) -> torch.Tensor:
    """The OOD corpus's contexts (input `ood`), checked against the spec's hash."""
    tensors, _ = load_tensors(Path(job.inputs["ood"]))
    ids = tensors.get("input_ids")
    if ids is None or tensor_hash(ids) != job.spec["lm"]["ood"]["ids"]:
        raise HusaiError(f"{job.inputs['ood']}: OOD contexts differ from the job's")
    return ids


def _probing(
    job: Job, sae: Any, init: Any, x: torch.Tensor, ids: torch.Tensor, m: Any
) -> dict[str, Any]:
    """husai.experiments.probing's LM block, with the at-init SAEs training started from."""
    from husai.experiments.probing import lm_probing
    from husai.lm import load_tokenizer

    tokenizer = load_tokenizer(job.inputs["model"])
    return lm_probing(sae, init, x, ids, tokenizer, job.spec["lm"]["scale"], m)


def _evaluate_routed(
    job: Job,
    sae: Any,
    rows: Any,
    ids: torch.Tensor,
    model: Any,
    device: str,
    resolved: SAEConfig,
    m: MetricsConfig,
) -> dict[str, Any]:
    """A multi-layer set's entry: consistency, quality against the routed targets, routing."""
    from husai.experiments.lm_eval import eval_layers
    from husai.metrics import QualityAccumulator

    seeds, lm = job.spec["seeds"], job.spec["lm"]
    x = eval_layers(model, lm["hooks"], ids.to(device), lm["scales"], batch_size=lm["batch_size"])
    acc = QualityAccumulator()
    with torch.no_grad():
        for start in range(0, len(x), 4096):
            chunk = x[start : start + 4096]
            codes = sae.encode(chunk)
            acc.update(codes, sae.reconstruction_target(chunk), sae.decode(codes))
    dist = sae.layer_distribution(x)
    routing = {
        "layers": lm["hooks"],
        "eval_tokens": len(x),
        "per_seed": {str(s): dist[i].tolist() for i, s in enumerate(seeds)},
        "mean": dist.mean(0).tolist(),
    }
    return {
        "config": resolved.model_dump(mode="json"),
        "consistency": consistency(sae, resolved, m, rows),
        "routing": routing,
        "downstream": None,
        "downstream_reason": NO_SPLICE,
        "quality": quality_block(acc.result(), seeds, m),
        **coverage_block(sae.cpu(), acc.counts.cpu(), acc.n_rows, m),
    }


def lm_sae_job(job: Job, progress: Progress | None = None) -> dict[str, Any]:
    """Train (or reload) and evaluate one SAE configuration over its seeds on an LM store."""
    spec = job.spec
    store, ids = _inputs(job)
    sae_cfg = SAEConfig.model_validate(spec["sae"])
    cb = (lambda i, n: progress(job.name, i, n)) if progress else None
    sae, trained = train_or_load(
        sae_cfg,
        store,
        spec["store"],
        spec["seeds"],
        job.out_dir,
        cb,
        device=spec["device"],
        hook_name=spec["lm"]["hook"],
        lm_metadata=spec["lm"]["cfg"],
    )
    return {"evaluation": evaluate_lm(job, sae, store, ids), "trained": trained}
