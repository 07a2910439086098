"""The `sae` job: train one SAE configuration over its seeds on one activation set (or reload
it if already trained), then measure consistency, quality and downstream / recovery.

It reads its inputs from files (`inputs["activations"]`, `inputs["toy_model"]`) and checks
them against the content hashes in its spec, so any process can run it. Spec:
`version` (SAE_JOB_VERSION: bump it when the result's meaning changes), `sae` (SAEConfig),
`seeds`, `activations` (tensor hash), `truth` (hash of the ground-truth features, synthetic
data), `metrics` (MetricsConfig), `downstream` (toy config, hook and model sha256, or null;
a transcoder's also `hook_out`), and only for a transcoder `transcoder` (`targets`: tensor
hash of the targets in the same file, `hook`, `hook_out`): it is trained x → y and scored
against y.
Result: `{"evaluation": <metrics.json entry>, "trained": bool}`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from husai.activations import load_activation_pair, load_activations, split_rows
from husai.config import MetricsConfig, SAEConfig, ToyConfig
from husai.errors import HusaiError
from husai.experiments.coverage import coverage_block
from husai.experiments.engine import Job, Progress
from husai.experiments.evaluate import (
    consistency,
    decoders,
    downstream,
    protocol_block,
    recovery_block,
    structure_block,
    toy_truths,
)
from husai.integrity import note
from husai.io import config_hash, read_json, sha256_file, tensor_hash, write_json
from husai.metrics import bootstrap_ci, stream_quality
from husai.sae import load as load_sae
from husai.sae import train_sae
from husai.sae.base import SAE
from husai.sae.io import CFG_FILE, save_seeds, seed_dir
from husai.sae.trainer import TRAINER_VERSION, initial_sae
from husai.store import ActivationStore

SAE_JOB_VERSION = 11  # 2: structure etc.; 3: permutations; 4: data-init baseline; 5: arch fields;
# 6: metric variants (PW-MCC, hungarian − pwmcc, P&B shared-rate curve), coverage curve and
# stability by firing frequency; 7: functional correspondence (`functional` block)
# 8: `probing` (SAEBench's sparse probing on the toy model's labelled tasks)
# 9: the consensus block, `metrics.variants`
# 10: faster TopK training (husai.sae.sparse_ops: top-k ties broken by the lower index,
# sparse-product gradients; fused Adam for every architecture): the same SAEs up to float
# rounding
# 11: the `protocol` block (seed independence, at-init criterion, alive-latent Hungarian)


def _stack(saes: list[SAE]) -> SAE:
    """One-seed SAEs (same config) → an ensemble with stacked weights."""
    first = saes[0]
    d_out = first.d_out if first.transcoder else None
    ens = type(first)(first.cfg, first.d_in, [s.seeds[0] for s in saes], d_out)
    ens.hook_name, ens.hook_name_out = first.hook_name, first.hook_name_out
    ens.lm_metadata = first.lm_metadata
    with torch.no_grad():
        for name, p in ens.named_parameters():
            p.copy_(torch.cat([getattr(s, name) for s in saes]))
    return ens


def train_or_load(
    sae_cfg: SAEConfig,
    x: Tensor | ActivationStore,
    x_hash: str,
    seeds: list[int],
    out_dir: Path,
    progress: Callable[[int, int], None] | None,
    target: tuple[Tensor, dict[str, Any]] | None = None,
    *,
    device: str = "cpu",
    hook_name: str | None = None,
    lm_metadata: dict[str, Any] | None = None,
) -> tuple[SAE, bool]:
    """Train all seeds together, or load them if saved for the same config and activations
    (and device). `target`: a transcoder's (targets y, the spec's `transcoder` block).
    `x` may be an activation store (streamed); `hook_name` and `lm_metadata` (an LM SAE's
    SAELens keys: model_name, context_size, …; husai.sae.formats.lm) go into every seed's
    cfg.json."""
    y, tc = target if target is not None else (None, None)
    key_src: dict[str, Any] = {"sae": sae_cfg.model_dump(mode="json"), "activations": x_hash}
    key_src["trainer"] = TRAINER_VERSION
    if device != "cpu":
        key_src["device"] = device
    if lm_metadata:
        key_src["lm_metadata"] = lm_metadata
    key = config_hash(key_src if tc is None else {**key_src, "targets": tc["targets"]})
    dirs = [seed_dir(out_dir, s) for s in seeds]
    reused = _reuse(dirs, key)
    if reused is not None:
        return reused, False
    points: list[dict[str, Any]] = []
    every = sae_cfg.trajectory_every_epochs

    def checkpoint(epoch: int, now: SAE) -> None:
        if every and epoch % every == 0:
            points.append(trajectory_point(epoch, now))

    if sae_cfg.init == "random" and y is None:  # the at-init point
        checkpoint(0, initial_sae(sae_cfg, x, seeds))
    sae, info = train_sae(
        sae_cfg, x, seeds, y_ND=y, progress=progress, on_epoch=checkpoint, device=device
    )
    sae = sae.cpu()
    if every:
        write_json(Path(out_dir) / TRAJECTORY_FILE, points)
    if tc is not None:
        sae.hook_name, sae.hook_name_out = tc["hook"], tc["hook_out"]
    if hook_name is not None:
        sae.hook_name = hook_name
    if lm_metadata:
        sae.lm_metadata = dict(lm_metadata)
    extra = {"job_hash": key, "activations_tensor_sha256": x_hash}
    if tc is not None:
        extra["targets_tensor_sha256"] = tc["targets"]
    save_seeds(sae, out_dir, info, extra)
    return sae, True


TRAJECTORY_FILE = "trajectory.json"


def _reuse(dirs: list[Path], key: str) -> SAE | None:
    """The seeds saved for this key (None if any is missing, for another key, or corrupt:
    noted, then retrained)."""
    if not all((d / CFG_FILE).is_file() for d in dirs):
        return None
    try:
        if not all(read_json(d / CFG_FILE)["husai"].get("job_hash") == key for d in dirs):
            return None
        return _stack([load_sae(d) for d in dirs])
    except (HusaiError, KeyError, TypeError, AttributeError) as e:
        note(f"{e}; retraining the seeds")
        return None


def trajectory_point(epoch: int, sae: SAE) -> dict[str, Any]:
    """Cross-seed PWMCC (max-|cos|, higher = more consistent) of the decoders now."""
    from husai.metrics import pairwise

    vals = pairwise(decoders(sae), thresholds=(), hungarian=False)["pwmcc"]["values"]
    return {"epoch": epoch, "pwmcc": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}


def _downstream(job: Job, sae: SAE, x: Tensor, spec: dict[str, Any]) -> dict[str, Any]:
    """Toy-model loss/accuracy on its test split with each seed's SAE (a transcoder: its
    prediction of the target hook) spliced in; `x`: what it reconstructs (a transcoder's
    targets), whose mean is the mean-ablation baseline."""
    from husai.toy import load_checkpoint, make_dataset

    model_dir = Path(job.inputs["toy_model"])
    if sha256_file(model_dir / "model.safetensors") != spec["model_sha256"]:
        raise HusaiError(f"{model_dir}: toy model differs from the one this job was made for")
    model, _, _ = load_checkpoint(model_dir)
    toy = ToyConfig.model_validate(spec["toy"])
    tokens, labels = make_dataset(toy.model.p, toy.model.op)
    rows = split_rows(toy, "test")
    return downstream(
        model,
        spec["hook"],
        tokens[rows],
        labels[rows],
        sae,
        x.mean(0),
        hook_out=spec.get("hook_out"),
    )


def _structure(job: Job, sae: SAE, spec: dict[str, Any], m: MetricsConfig) -> dict[str, Any]:
    """Recovery of the toy model's known structure at the job's hook (husai.toy.structure)."""
    from husai.toy import load_checkpoint

    model, _, _ = load_checkpoint(Path(job.inputs["toy_model"]))
    model.eval()
    hook = spec.get("hook_out") or spec["hook"]  # a transcoder's decoder lives at its target
    truths = toy_truths(model, ToyConfig.model_validate(spec["toy"]), hook)
    return structure_block(sae, truths, m.baseline_seed)


def _functional(job: Job, sae: SAE, spec: dict[str, Any], m: MetricsConfig) -> dict[str, Any]:
    """Functional correspondence of matched latents on the toy model (experiments.functional)."""
    from husai.experiments.functional import functional_block, toy_probe
    from husai.toy import load_checkpoint

    model, _, _ = load_checkpoint(Path(job.inputs["toy_model"]))
    model.eval()
    toy = ToyConfig.model_validate(spec["toy"])
    probe = toy_probe(model, toy, spec["hook"], spec.get("hook_out"), m)
    return functional_block(sae, probe, m, m.functional_latents)


def _truth(job: Job, spec_hash: str) -> Tensor:
    from husai.synthetic import load_ground_truth

    truth = load_ground_truth(Path(job.inputs["activations"]))
    if tensor_hash(truth) != spec_hash:
        raise HusaiError(f"{job.inputs['activations']}: ground truth differs from the job's")
    return truth


def evaluate(job: Job, sae: SAE, x: Tensor, y: Tensor | None = None) -> dict[str, Any]:
    """Consistency vs baselines, quality per seed (mean and bootstrap CI over seeds), and
    downstream (toy) or recovery (synthetic) metrics; a transcoder's (targets y) quality and
    downstream are against y, its baselines have y's width."""
    spec, seeds = job.spec, job.spec["seeds"]
    m = MetricsConfig.model_validate(spec["metrics"])
    resolved = SAEConfig.model_validate(spec["sae"]).resolve(x.shape[1])
    acc = stream_quality(sae.encode, x, sae.decode, y)  # = evaluate.quality, counts kept
    qual = acc.result()
    init = initial_sae(resolved, x, sae.seeds, y)
    out: dict[str, Any] = {
        "config": resolved.model_dump(mode="json"),
        "consistency": consistency(sae, resolved, m, x, y, init),
    }
    init_counts = stream_quality(init.encode, x, init.decode, y).counts
    out["protocol"] = protocol_block(
        resolved, sae, init, acc.counts, init_counts, out["consistency"], m
    )
    if spec["downstream"] is not None:
        down = _downstream(job, sae, x if y is None else y, spec["downstream"])
        for q, d in zip(qual, down["per_seed"], strict=True):
            q.update({f"downstream_{k}": v for k, v in d.items()})
        out["downstream_baselines"] = down["baselines"]
        out["structure"] = _structure(job, sae, spec["downstream"], m)
        if m.functional:
            out["functional"] = _functional(job, sae, spec["downstream"], m)
    truth = rec = None
    if spec["truth"] is not None:
        truth = _truth(job, spec["truth"])
        rec = recovery_block(sae, truth)
        for q, r in zip(qual, rec, strict=True):
            q.update({f"recovery_{k}": v for k, v in r.items() if isinstance(v, float)})
    traj = job.out_dir / TRAJECTORY_FILE
    if resolved.trajectory_every_epochs and traj.is_file():
        out["trajectory"] = read_json(traj)
    out["quality"] = quality_block(qual, seeds, m)
    out.update(coverage_block(sae, acc.counts, acc.n_rows, m))
    if m.probing and spec["downstream"] is not None:  # SAEBench's sparse probing, toy tasks
        from husai.experiments.probing import toy_probing

        out["probing"] = toy_probing(sae, init, x, spec, Path(job.inputs["activations"]), m)
    if m.consensus and y is None:  # husai consensus takes SAEs, not transcoders
        from husai.experiments.consensus_block import consensus_block

        mean = out["quality"]["mean"]
        kw = {"score_rows": x, "refit_rows": x, "single_mean": mean}
        out["consensus"] = consensus_block(sae, init, m, truth=truth, single_recovery=rec, **kw)
    if spec.get("ood") is not None:  # husai.experiments.gate_data
        from husai.experiments.gate_data import ood_block

        ood = spec["ood"]
        path = Path(job.inputs["ood"])
        out["quality"]["ood"] = ood_block(path, ood["activations"], ood["kind"], sae, qual, m)
    return out


def quality_block(qual: list[dict[str, float]], seeds: list[int], m: MetricsConfig) -> dict:
    """Per-seed quality numbers, their mean and bootstrap CI over seeds."""
    boot = {"level": m.ci_level, "n_resamples": m.n_bootstrap, "seed": m.baseline_seed}
    return {
        "per_seed": {str(s): q for s, q in zip(seeds, qual, strict=True)},
        "mean": {k: sum(q[k] for q in qual) / len(qual) for k in qual[0]},
        "ci": {k: bootstrap_ci([q[k] for q in qual], **boot) for k in qual[0]},
    }


def sae_job(job: Job, progress: Progress | None = None) -> dict[str, Any]:
    """Train (or reload) and evaluate one SAE configuration over its seeds."""
    spec = job.spec
    path = Path(job.inputs["activations"])
    x, _ = load_activations(path)
    if tensor_hash(x) != spec["activations"]:
        raise HusaiError(f"{path}: activations differ from the ones this job was made for")
    tc, y = spec.get("transcoder"), None
    if tc is not None:
        _, y, _ = load_activation_pair(path)
        if tensor_hash(y) != tc["targets"]:
            raise HusaiError(f"{path}: targets differ from the ones this job was made for")
    sae_cfg = SAEConfig.model_validate(spec["sae"])
    cb = (lambda i, n: progress(job.name, i, n)) if progress else None
    target = (y, tc) if y is not None else None
    sae, trained = train_or_load(
        sae_cfg, x, spec["activations"], spec["seeds"], job.out_dir, cb, target
    )
    return {"evaluation": evaluate(job, sae, x, y), "trained": trained}
