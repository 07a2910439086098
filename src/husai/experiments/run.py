"""`husai run`: (toy model →) activation sets → SAE jobs (train × seeds, evaluate) →
metrics → report.

The toy model and the data sets are sequential stages; every (data set, SAE config) pair is
one `sae` job run by the experiment engine (inline, process pool or Ray), skipped when its
`job.json` says it is done, so an interrupted run resumes where it stopped. Layout:
`toy_model/`, `data/<set>/activations.safetensors`, `saes/<set>/<sae>/{job.json,seed_<n>/}`,
`metrics.json`, `manifest.json`, `figures/`, `report.md`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from husai.activations import (
    extract_toy,
    extract_toy_pair,
    load_activation_pair,
    load_activations,
    save_activation_pair,
    save_activations,
)
from husai.config import DataConfig, RunConfig, SAEConfig
from husai.errors import HusaiError
from husai.experiments.aggregate import aggregate
from husai.experiments.coupled import coupled_validation
from husai.experiments.engine import Job, Progress, Summary, run_jobs
from husai.experiments.lm_job import LM_JOB_VERSION
from husai.experiments.plan import preflight, require_sweep
from husai.experiments.plan import require_new_or_same as require_new_or_same
from husai.experiments.sae_job import SAE_JOB_VERSION
from husai.integrity import note, seal
from husai.io import config_hash, provenance, sha256_file, tensor_hash, write_json
from husai.runtime import deterministic


def default_cache_dir() -> Path:
    return Path(os.environ.get("HUSAI_CACHE_DIR", Path.home() / ".cache" / "husai"))


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 3)


def toy_model_stage(cfg: RunConfig, run_dir: Path, cache_dir: Path, progress: bool) -> Path:
    """Train the toy model, or reuse the cached one with the same config hash."""
    from husai.lock import directory_lock
    from husai.toy import load_checkpoint, train_checkpoint

    key = config_hash(cfg.toy.model_dump(mode="json"))
    cached = cache_dir / "toy" / key
    with directory_lock(cached, "run (toy-model cache)", wait=True):  # one trainer per entry
        if (cached / "config.json").is_file():
            try:  # validates the cached copy (seal, weights sha256, config) before use
                if load_checkpoint(cached)[1] != cfg.toy:
                    raise HusaiError(f"{cached / 'config.json'}: holds another toy config")
            except HusaiError as e:
                note(f"{e}; retraining the cached toy model")
                for f in cached.iterdir():
                    if f.is_file() and not f.name.startswith("."):
                        f.unlink()
        if not (cached / "config.json").is_file():
            train_checkpoint(cfg.toy, cached, progress)
    load_checkpoint(cached)
    target = run_dir / "toy_model"
    if target.exists():
        shutil.rmtree(target)
    tmp = run_dir / ".toy_model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(cached, tmp, ignore=_dot_files, copy_function=_copy)
    os.replace(tmp, target)
    return target


def _dot_files(_dir: str, names: list[str]) -> list[str]:
    """What a copy of a cache entry leaves out: its lock file and any writer's temp files."""
    return [n for n in names if n.startswith(".")]


def _copy(src: str, dst: str) -> None:
    from husai import faults

    shutil.copy2(src, dst)
    faults.copied(Path(dst))


@dataclass
class Dataset:
    """An activation set saved in the run directory, with what is known about it."""

    name: str
    path: Path
    hash: str  # tensor hash of the activations
    info: dict[str, Any]
    truth_hash: str | None = None  # tensor hash of the ground-truth features (synthetic)
    target_hash: str | None = None  # tensor hash of a transcoder data set's targets
    lm: Any = None  # a language model data set's `husai.experiments.lm_data.LMSet`
    ood_hash: str | None = None  # tensor hash of the OOD rows (`ood`, husai.experiments.gate_data)


def dataset_stage(data: DataConfig, cfg: RunConfig, run_dir: Path, toy: Any) -> Dataset:
    """Produce (toy / synthetic) or read (file) one activation set and store it (a
    transcoder data set, `target_hook` set: inputs and targets in one file)."""
    path = run_dir / "data" / data.name / "activations.safetensors"
    truth = y = None
    if data.source == "synthetic":
        from husai.synthetic import SyntheticConfig, load_ground_truth, write_synthetic

        write_synthetic(SyntheticConfig.model_validate(data.synthetic or {}), path)
        truth = load_ground_truth(path)
    else:
        if data.source == "toy":
            model, model_hash = toy
            if data.control is not None:  # a random-model control: untrained weights
                from husai.experiments.gate_data import control_model

                model, seed = control_model(cfg.toy, data)
                model_hash = f"{data.control}:{seed}"
            meta = {"source": "husai-toy", **cfg.activations.model_dump(), "model_hash": model_hash}
            if data.target_hook is not None:
                x, y = extract_toy_pair(model, cfg.toy, cfg.activations, data.target_hook)
                meta["target_hook"] = data.target_hook
            else:
                x = extract_toy(model, cfg.toy, cfg.activations)
        else:
            x, meta = load_activations(Path(data.path))  # type: ignore[arg-type]
        meta = {k: str(v) for k, v in meta.items()}
        if y is not None:
            save_activation_pair(path, x, y, meta)
        else:
            save_activations(path, x, meta)
        if data.ood is not None:
            from husai.experiments.gate_data import ood_rows

            ood = ood_rows(model, cfg.toy, cfg.activations, data.ood)
            save_activations(path.with_name("ood.safetensors"), ood, {**meta, "ood": data.ood})
    if data.target_hook is not None:
        x, y, meta = load_activation_pair(path)
    else:
        x, meta = load_activations(path)
    from husai.metrics.spectrum import effective_rank

    info = {
        "artifact": str(path.relative_to(run_dir)),
        "source": data.source,
        "n": int(x.shape[0]),
        "d": int(x.shape[1]),
        "effective_rank": effective_rank(x),
        **({k: meta[k] for k in ("hook", "position", "split")} if data.source == "toy" else {}),
    }
    if truth is not None:
        info["n_true_features"] = int(truth.shape[0])
    if y is not None:
        info.update(
            target_hook=meta["target_hook"],
            d_out=int(y.shape[1]),
            target_effective_rank=effective_rank(y),
        )
    if data.control is not None:
        info.update(control=data.control, control_seed=int(meta["model_hash"].split(":")[1]))
    ood_hash = None
    if data.ood is not None:
        ood_x, _ = load_activations(path.with_name("ood.safetensors"))
        info.update(ood=data.ood, ood_n=int(ood_x.shape[0]))
        ood_hash = tensor_hash(ood_x)
    truth_hash = tensor_hash(truth) if truth is not None else None
    y_hash = tensor_hash(y) if y is not None else None
    return Dataset(data.name, path, tensor_hash(x), info, truth_hash, y_hash, ood_hash=ood_hash)


def _lm_datasets(cfg: RunConfig, run_dir: Path, cache_dir: Path, timer: Timer) -> dict:
    """The `lm` data sets by name, extracted (or reused) group by group."""
    from husai.experiments.lm_data import lm_groups, lm_stage

    out = {}
    for group in lm_groups(list(cfg.data)):
        with timer.stage("lm_extract:" + "+".join(d.name for d in group)):
            for s in lm_stage(group, run_dir, cache_dir, cfg.device):
                out[s.name] = Dataset(s.name, s.store.path, s.content_hash, s.info, lm=s)
    return out


def make_lm_job(cfg: RunConfig, sae_cfg: SAEConfig, data: Dataset, run_dir: Path) -> Job:
    """The job that trains one SAE config on an LM store and evaluates it on the model."""
    from husai.sae import store_lm_metadata

    s = data.lm
    lm_cfg = next(d.lm for d in cfg.data if d.name == data.name)
    spec = {
        "version": LM_JOB_VERSION,
        "sae": sae_cfg.model_dump(mode="json"),
        "seeds": list(cfg.seeds),
        "store": data.hash,
        "metrics": cfg.metrics.model_dump(mode="json"),
        "device": cfg.device,
        "lm": {
            "model_hash": s.model_hash,
            "hook": s.store.hook_name,
            "eval": s.eval_hash,
            "scale": s.store.scale,
            "batch_size": lm_cfg.batch_size,
            "cfg": store_lm_metadata(s.store),
        },
    }
    inputs = {
        "store": str(s.store.path.resolve()),
        "model": str(s.model_dir),
        "eval": str(s.eval_path.resolve()),
    }
    if s.ood_path is not None:  # the OOD gate's contexts (absent otherwise)
        spec["lm"]["ood"] = {"corpus": s.info["ood"]["corpus"], "ids": s.ood_hash}
        inputs["ood"] = str(s.ood_path.resolve())
    if len(s.stores) > 1:  # a multi-layer set (RouteSAE): every layer's hook, scale, store
        spec["lm"].update(
            hook="+".join(st.hook_name for st in s.stores),
            hooks=[st.hook_name for st in s.stores],
            scales=[st.scale for st in s.stores],
            cfg=None,  # no SAELens LM metadata: the SAE reads several hooks
        )
        inputs.update({f"store_{i}": str(st.path.resolve()) for i, st in enumerate(s.stores)})
    out_dir = run_dir.resolve() / "saes" / data.name / sae_cfg.label
    return Job("lm_sae", spec, out_dir, inputs, name=f"{data.name}/{sae_cfg.label}")


def make_sae_job(
    cfg: RunConfig, sae_cfg: SAEConfig, data: Dataset, run_dir: Path, model_hash: str | None
) -> Job:
    """The job that trains and evaluates one SAE config on one data set."""
    if data.lm is not None:
        return make_lm_job(cfg, sae_cfg, data, run_dir)
    run_dir = run_dir.resolve()  # absolute paths: workers may run in another directory
    down = None
    inputs = {"activations": str(data.path.resolve())}
    if model_hash is not None and data.info["source"] == "toy" and "control" not in data.info:
        down = {
            "toy": cfg.toy.model_dump(mode="json"),
            "hook": cfg.activations.hook,
            "model_sha256": model_hash,
        }
        inputs["toy_model"] = str(run_dir / "toy_model")
        if data.target_hash is not None:
            down["hook_out"] = data.info["target_hook"]
    spec = {
        "version": SAE_JOB_VERSION,
        "sae": sae_cfg.model_dump(mode="json"),
        "seeds": list(cfg.seeds),
        "activations": data.hash,
        "truth": data.truth_hash,
        "metrics": cfg.metrics.model_dump(mode="json"),
        "downstream": down,
    }
    if data.target_hash is not None:  # a transcoder (absent for an SAE: its key is unchanged)
        spec["transcoder"] = {
            "targets": data.target_hash,
            "hook": data.info["hook"],
            "hook_out": data.info["target_hook"],
        }
    if data.ood_hash is not None:  # EV on OOD rows (absent otherwise: the key is unchanged)
        spec["ood"] = {"kind": data.info["ood"], "activations": data.ood_hash}
        inputs["ood"] = str(data.path.with_name("ood.safetensors").resolve())
    out_dir = run_dir / "saes" / data.name / sae_cfg.label
    return Job("sae", spec, out_dir, inputs, name=f"{data.name}/{sae_cfg.label}")


def run(cfg: RunConfig, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
    """Execute the whole pipeline (deterministic kernels); returns the metrics dict
    (also written to metrics.json). Refuses (HusaiError) a run directory that holds a run
    of another config, or bad executor options, before doing any work."""
    from husai.lock import directory_lock

    engine = {k: kwargs.get(k) for k in ("workers", "address")}
    preflight(cfg, Path(run_dir), kwargs.get("executor", "inline"), **engine)  # before the lock
    with directory_lock(Path(run_dir), "run"), deterministic():
        return _run(cfg, run_dir, **kwargs)


def sweep(cfg: RunConfig, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
    """`run` for a config with a `sweep` block (HusaiError without one)."""
    require_sweep(cfg)
    return run(cfg, run_dir, **kwargs)


def _run(
    cfg: RunConfig,
    run_dir: Path,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    toy_progress: bool = False,
    executor: str = "inline",
    workers: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    preflight(cfg, run_dir, executor, workers, address)  # again, now under the lock
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    timer = Timer()
    started = provenance()  # the code that runs: read before anything can change it
    metrics: dict[str, Any] = {
        "seeds": list(cfg.seeds),
        "metrics_config": cfg.metrics.model_dump(mode="json"),
        "dataset_order": [d.name for d in cfg.data],
        "sae_order": [s.label for s in cfg.saes],
        "quality_eval_set": "all rows of the data set (the SAEs' training set)"
        + (
            "; a language model's: its held-out contexts"
            if any(d.source == "lm" for d in cfg.data)
            else ""
        ),
        "datasets": {},
    }
    if cfg.sweep is not None:
        metrics["sweep"] = cfg.sweep.summary()
    toy = _toy(cfg, run_dir, cache_dir, toy_progress, timer, metrics) if cfg.uses_toy else None

    lm_sets = _lm_datasets(cfg, run_dir, cache_dir, timer)
    datasets = []
    for data_cfg in cfg.data:
        if data_cfg.name in lm_sets:
            datasets.append(lm_sets[data_cfg.name])
            continue
        with timer.stage(f"data:{data_cfg.name}"):
            datasets.append(dataset_stage(data_cfg, cfg, run_dir, toy))
    model_hash = toy[1] if toy else None
    sets = [(d, cfg.saes_for(dc)) for d, dc in zip(datasets, cfg.data, strict=True)]
    jobs = [make_sae_job(cfg, s, d, run_dir, model_hash) for d, saes in sets for s in saes]
    with timer.stage("jobs"):
        summary = run_jobs(jobs, executor, workers, address, progress)
    results = iter(summary.results)
    for data, saes in sets:
        archs = {}
        for sae_cfg in saes:
            seeds = {str(s): f"saes/{data.name}/{sae_cfg.label}/seed_{s}" for s in cfg.seeds}
            archs[sae_cfg.label] = {**next(results)["evaluation"], "saes": seeds}
        metrics["datasets"][data.name] = {**data.info, "architectures": archs}
        validation = coupled_validation(archs, run_dir, cfg.metrics)
        if validation:
            metrics["datasets"][data.name]["coupled_validation"] = validation
    metrics.update(aggregate(metrics, cfg.metrics))
    write_json(run_dir / "metrics.json", metrics)
    from husai.gates import DEFAULT_POLICY, gate_run

    gate_run(run_dir, DEFAULT_POLICY)  # gate.json: the report's release-gate section

    manifest = _manifest(cfg, timer, jobs, summary, started)
    extraction = {d.name: d.lm.extraction for d in datasets if d.lm is not None}
    if extraction:
        manifest["lm_extraction"] = extraction
    write_json(run_dir / "manifest.json", seal(manifest))  # the report reads provenance from it
    with timer.stage("report"):
        from husai.report import render

        render(run_dir)
    manifest["timings_seconds"].append({"stage": "report", "seconds": timer.seconds["report"]})
    manifest["artifacts"] = artifact_hashes(run_dir)
    write_json(run_dir / "manifest.json", seal(manifest))
    return metrics


def _toy(
    cfg: RunConfig,
    run_dir: Path,
    cache_dir: Path,
    progress: bool,
    timer: Timer,
    metrics: dict[str, Any],
) -> tuple[Any, str]:
    """The toy model stage and its structure: (model, sha256 of its weights); fills
    metrics' `toy_model` block."""
    from husai.toy import load_checkpoint
    from husai.toy.structure import structure_summary

    with timer.stage("toy_model"):
        model_dir = toy_model_stage(cfg, run_dir, cache_dir, progress)
        model, _, toy_summary = load_checkpoint(model_dir)
        model.eval()
    with timer.stage("toy_structure"):
        structure = structure_summary(model, cfg.toy)
    metrics["toy_model"] = {
        "artifact": "toy_model/config.json",
        "config": cfg.toy.model_dump(mode="json"),
        **toy_summary,
        "structure": structure,
    }
    metrics["downstream_eval_split"] = "toy model test split (pairs never trained on)"
    return model, sha256_file(model_dir / "model.safetensors")


def _manifest(
    cfg: RunConfig, timer: Timer, jobs: list[Job], summary: Summary, started: dict[str, Any]
) -> dict[str, Any]:
    """manifest.json (its `artifacts` are filled in last); `started`: the provenance read when
    the run began (a commit made while it runs is not the code that ran)."""
    return {
        "config": cfg.model_dump(mode="json"),
        "config_hash": config_hash(cfg.model_dump(mode="json")),
        "seeds": list(cfg.seeds),
        "toy_model_seed": cfg.toy.train.seed if cfg.uses_toy else None,
        "provenance": started,
        "timings_seconds": [{"stage": k, "seconds": v} for k, v in timer.seconds.items()]
        + [{"stage": f"job:{k}", "seconds": v} for k, v in summary.seconds.items()],
        "jobs": _jobs_record(jobs, summary),
        "trained_this_run": [
            j.name
            for j, r in zip(jobs, summary.results, strict=True)
            if j.name in summary.ran and r["trained"]
        ],
        "artifacts": {},
    }


def _jobs_record(jobs: list[Job], summary: Summary) -> dict[str, Any]:
    """The manifest's account of the engine: which jobs ran where, which were reused."""
    return {
        "executor": summary.executor,
        "workers": summary.workers,
        "total": len(jobs),
        "ran": summary.ran,
        "skipped": summary.skipped,
        "keys": {j.name: j.key for j in jobs},
    }


def artifact_hashes(run_dir: Path) -> dict[str, str]:
    """sha256 of every file in the run directory except the manifest itself."""
    files = sorted(
        p
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
    )
    return {str(p.relative_to(run_dir)): sha256_file(p) for p in files}
