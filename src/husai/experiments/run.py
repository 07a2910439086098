"""`husai run`: (toy model →) activation sets → SAEs × seeds → metrics → report.

Each stage writes its artifacts atomically and is skipped when a valid artifact for the
same resolved config already exists, so an interrupted run resumes where it stopped.
Layout: `toy_model/`, `data/<set>/activations.safetensors`, `saes/<set>/<sae>/seed_<n>/`,
`metrics.json`, `manifest.json`, `figures/`, `report.md`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from husai.activations import extract_toy, load_activations, save_activations, split_rows
from husai.config import DataConfig, RunConfig, SAEConfig
from husai.errors import HusaiError
from husai.experiments.evaluate import consistency, downstream, quality, recovery_block
from husai.io import config_hash, provenance, read_json, sha256_file, tensor_hash, write_json
from husai.runtime import deterministic
from husai.sae import load as load_sae
from husai.sae import save as save_sae
from husai.sae import train_sae
from husai.sae.base import SAE
from husai.sae.io import CFG_FILE

Progress = Callable[[str, int, int], None]


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
    from husai.toy import load_checkpoint, save_checkpoint, train_toy

    key = config_hash(cfg.toy.model_dump(mode="json"))
    cached = cache_dir / "toy" / key
    if not (cached / "config.json").is_file():
        model, summary = train_toy(cfg.toy, progress=progress)
        summary.pop("wall_seconds", None)
        save_checkpoint(model, cfg.toy, summary, cached)
    load_checkpoint(cached)  # validates the cached copy before use
    target = run_dir / "toy_model"
    if target.exists():
        shutil.rmtree(target)
    tmp = run_dir / ".toy_model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(cached, tmp)
    os.replace(tmp, target)
    return target


def sae_dir(run_dir: Path, dataset: str, label: str, seed: int) -> Path:
    return run_dir / "saes" / dataset / label / f"seed_{seed}"


def _stack(saes: list[SAE]) -> SAE:
    """One-seed SAEs (same config) → an ensemble with stacked weights."""
    first = saes[0]
    ens = type(first)(first.cfg, first.d_in, [s.seeds[0] for s in saes])
    with torch.no_grad():
        for name, p in ens.named_parameters():
            p.copy_(torch.cat([getattr(s, name) for s in saes]))
    return ens


def sae_stage(
    cfg: RunConfig,
    sae_cfg: SAEConfig,
    data: Dataset,
    run_dir: Path,
    progress: Progress | None,
) -> tuple[SAE, bool]:
    """Train all seeds of one SAE config together, or load them if already trained."""
    key = config_hash({"sae": sae_cfg.model_dump(mode="json"), "activations": data.hash})
    dirs = [sae_dir(run_dir, data.name, sae_cfg.label, s) for s in cfg.seeds]
    if all((d / CFG_FILE).is_file() for d in dirs):
        if all(read_json(d / CFG_FILE)["husai"].get("job_hash") == key for d in dirs):
            return _stack([load_sae(d) for d in dirs]), False
    tag = f"{data.name}/{sae_cfg.label}"
    cb = (lambda i, n: progress(tag, i, n)) if progress else None
    sae, info = train_sae(sae_cfg, data.x, cfg.seeds, progress=cb)
    for s, d in enumerate(dirs):
        extra = {
            "job_hash": key,
            "final_train_mse": info["final_train_mse"][s],
            "steps": info["steps"][s],
            **{k: info[k][s] for k in ("resampled_latents", "sparsity_coefficient") if k in info},
            "activations_tensor_sha256": data.hash,
        }
        save_sae(sae.select(s), d, extra=extra)
    return sae, True


@dataclass
class Dataset:
    """An activation set, saved in the run directory, with what is known about it."""

    name: str
    x: Tensor
    hash: str
    info: dict[str, Any]
    truth: Tensor | None = None  # ground-truth feature directions (synthetic data)


def dataset_stage(data: DataConfig, cfg: RunConfig, run_dir: Path, toy: Any) -> Dataset:
    """Produce (toy / synthetic) or read (file) one activation set and store it."""
    path = run_dir / "data" / data.name / "activations.safetensors"
    truth = None
    if data.source == "synthetic":
        from husai.synthetic import SyntheticConfig, load_ground_truth, write_synthetic

        write_synthetic(SyntheticConfig.model_validate(data.synthetic or {}), path)
        truth = load_ground_truth(path)
    else:
        if data.source == "toy":
            model, model_hash = toy
            x = extract_toy(model, cfg.toy, cfg.activations)
            meta = {"source": "husai-toy", **cfg.activations.model_dump(), "model_hash": model_hash}
        else:
            x, meta = load_activations(Path(data.path))  # type: ignore[arg-type]
        save_activations(path, x, {k: str(v) for k, v in meta.items()})
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
    return Dataset(data.name, x, tensor_hash(x), info, truth)


def evaluate_sae(
    cfg: RunConfig, sae_cfg: SAEConfig, sae: SAE, data: Dataset, toy: Any
) -> dict[str, Any]:
    """Consistency, quality, and downstream (toy) or recovery (synthetic) for one config."""
    resolved = sae_cfg.resolve(data.x.shape[1])
    qual = quality(sae, data.x)
    out: dict[str, Any] = {
        "config": resolved.model_dump(mode="json"),
        "saes": {str(s): f"saes/{data.name}/{sae_cfg.label}/seed_{s}" for s in cfg.seeds},
        "consistency": consistency(sae, resolved, cfg.metrics),
    }
    if toy is not None and data.info["source"] == "toy":
        from husai.toy import make_dataset

        model, _ = toy
        tokens, labels = make_dataset(cfg.toy.model.p, cfg.toy.model.op)
        rows = split_rows(cfg.toy, "test")
        down = downstream(
            model, cfg.activations.hook, tokens[rows], labels[rows], sae, data.x.mean(0)
        )
        for q, d in zip(qual, down["per_seed"], strict=True):
            q.update({f"downstream_{k}": v for k, v in d.items()})
        out["downstream_baselines"] = down["baselines"]
    if data.truth is not None:
        for q, r in zip(qual, recovery_block(sae, data.truth), strict=True):
            q.update({f"recovery_{k}": v for k, v in r.items() if isinstance(v, float)})
    out["quality"] = {
        "per_seed": {str(s): q for s, q in zip(cfg.seeds, qual, strict=True)},
        "mean": {k: sum(q[k] for q in qual) / len(qual) for k in qual[0]},
    }
    return out


def run(cfg: RunConfig, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
    """Execute the whole pipeline (deterministic kernels); returns the metrics dict
    (also written to metrics.json)."""
    with deterministic():
        return _run(cfg, run_dir, **kwargs)


def _run(
    cfg: RunConfig,
    run_dir: Path,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    toy_progress: bool = False,
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    timer = Timer()
    metrics: dict[str, Any] = {
        "seeds": list(cfg.seeds),
        "dataset_order": [d.name for d in cfg.data],
        "sae_order": [s.label for s in cfg.saes],
        "quality_eval_set": "all rows of the data set (the SAEs' training set)",
        "datasets": {},
    }
    toy = None
    if cfg.uses_toy:
        from husai.toy import load_checkpoint

        with timer.stage("toy_model"):
            model_dir = toy_model_stage(cfg, run_dir, cache_dir, toy_progress)
            model, _, toy_summary = load_checkpoint(model_dir)
            model.eval()
            toy = (model, sha256_file(model_dir / "model.safetensors"))
        metrics["toy_model"] = {
            "artifact": "toy_model/config.json",
            "config": cfg.toy.model_dump(mode="json"),
            **toy_summary,
        }
        metrics["downstream_eval_split"] = "toy model test split (pairs never trained on)"

    trained_now: list[str] = []
    for data_cfg in cfg.data:
        with timer.stage(f"data:{data_cfg.name}"):
            data = dataset_stage(data_cfg, cfg, run_dir, toy)
        archs: dict[str, Any] = {}
        for sae_cfg in cfg.saes_for(data_cfg):
            tag = f"{data.name}/{sae_cfg.label}"
            with timer.stage(f"train:{tag}"):
                sae, fresh = sae_stage(cfg, sae_cfg, data, run_dir, progress)
            if fresh:
                trained_now.append(tag)
            with timer.stage(f"metrics:{tag}"):
                archs[sae_cfg.label] = evaluate_sae(cfg, sae_cfg, sae, data, toy)
        metrics["datasets"][data.name] = {**data.info, "architectures": archs}
    write_json(run_dir / "metrics.json", metrics)

    manifest = {
        "config": cfg.model_dump(mode="json"),
        "config_hash": config_hash(cfg.model_dump(mode="json")),
        "seeds": list(cfg.seeds),
        "toy_model_seed": cfg.toy.train.seed if cfg.uses_toy else None,
        "provenance": provenance(),
        "timings_seconds": [{"stage": k, "seconds": v} for k, v in timer.seconds.items()],
        "trained_this_run": trained_now,
        "artifacts": {},
    }
    write_json(run_dir / "manifest.json", manifest)  # the report reads provenance from it
    with timer.stage("report"):
        from husai.report import render

        render(run_dir)
    manifest["timings_seconds"].append({"stage": "report", "seconds": timer.seconds["report"]})
    manifest["artifacts"] = artifact_hashes(run_dir)
    write_json(run_dir / "manifest.json", manifest)
    return metrics


def artifact_hashes(run_dir: Path) -> dict[str, str]:
    """sha256 of every file in the run directory except the manifest itself."""
    files = sorted(
        p
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
    )
    return {str(p.relative_to(run_dir)): sha256_file(p) for p in files}


def require_new_or_same(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse to mix a different config into an existing run directory."""
    manifest = Path(run_dir) / "manifest.json"
    if manifest.is_file():
        old = read_json(manifest).get("config_hash")
        if old and old != config_hash(cfg.model_dump(mode="json")):
            raise HusaiError(
                f"{run_dir}: holds a run with another config (hash {old}); choose another --out"
            )
