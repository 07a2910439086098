"""`husai run`: toy model → activations → SAEs × seeds → metrics → report, in one run dir.

Each stage writes its artifacts atomically and is skipped when a valid artifact for the
same resolved config already exists, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from husai.activations import extract_toy, load_activations, save_activations, split_rows
from husai.config import RunConfig, SAEConfig
from husai.errors import HusaiError
from husai.experiments.evaluate import consistency, downstream, quality
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


def sae_dir(run_dir: Path, label: str, seed: int) -> Path:
    return run_dir / "saes" / label / f"seed_{seed}"


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
    x_ND: torch.Tensor,
    acts_hash: str,
    run_dir: Path,
    progress: Progress | None,
) -> tuple[SAE, bool]:
    """Train all seeds of one SAE config together, or load them if already trained."""
    key = config_hash({"sae": sae_cfg.model_dump(mode="json"), "activations": acts_hash})
    dirs = [sae_dir(run_dir, sae_cfg.label, s) for s in cfg.seeds]
    if all((d / CFG_FILE).is_file() for d in dirs):
        if all(read_json(d / CFG_FILE)["husai"].get("job_hash") == key for d in dirs):
            return _stack([load_sae(d) for d in dirs]), False
    cb = (lambda i, n: progress(sae_cfg.label, i, n)) if progress else None
    sae, info = train_sae(sae_cfg, x_ND, cfg.seeds, progress=cb)
    for s, d in enumerate(dirs):
        extra = {
            "job_hash": key,
            "final_train_mse": info["final_train_mse"][s],
            "steps": info["steps"][s],
            "activations_tensor_sha256": acts_hash,
        }
        save_sae(sae.select(s), d, extra=extra)
    return sae, True


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
    from husai.toy import load_checkpoint, make_dataset

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    timer = Timer()
    torch.manual_seed(0)  # nothing should depend on it; pinned for safety

    with timer.stage("toy_model"):
        model_dir = toy_model_stage(cfg, run_dir, cache_dir, toy_progress)
        model, _, toy_summary = load_checkpoint(model_dir)
        model.eval()
        model_hash = sha256_file(model_dir / "model.safetensors")

    with timer.stage("activations"):
        acts_path = run_dir / "activations.safetensors"
        x_ND = extract_toy(model, cfg.toy, cfg.activations)
        save_activations(
            acts_path,
            x_ND,
            {
                "source": "husai-toy",
                "hook": cfg.activations.hook,
                "position": cfg.activations.position,
                "split": cfg.activations.split,
                "model_hash": model_hash,
            },
        )
        x_ND, _ = load_activations(acts_path)
        acts_hash = tensor_hash(x_ND)

    tokens, labels = make_dataset(cfg.toy.model.p, cfg.toy.model.op)
    test_rows = split_rows(cfg.toy, "test")
    mean_D = x_ND.mean(0)
    archs: dict[str, Any] = {}
    trained_now: list[str] = []
    for sae_cfg in cfg.saes:
        label = sae_cfg.label
        with timer.stage(f"train:{label}"):
            sae, fresh = sae_stage(cfg, sae_cfg, x_ND, acts_hash, run_dir, progress)
            if fresh:
                trained_now.append(label)
        with timer.stage(f"metrics:{label}"):
            qual = quality(sae, x_ND)
            down = downstream(
                model, cfg.activations.hook, tokens[test_rows], labels[test_rows], sae, mean_D
            )
            for q, d in zip(qual, down["per_seed"], strict=True):
                q.update({f"downstream_{k}": v for k, v in d.items()})
            archs[label] = {
                "config": sae_cfg.resolve(x_ND.shape[1]).model_dump(mode="json"),
                "saes": {str(s): f"saes/{label}/seed_{s}" for s in cfg.seeds},
                "consistency": consistency(sae, sae_cfg.resolve(x_ND.shape[1]), cfg.metrics),
                "quality": {
                    "per_seed": {str(s): q for s, q in zip(cfg.seeds, qual, strict=True)},
                    "mean": {k: sum(q[k] for q in qual) / len(qual) for k in qual[0]},
                },
                "downstream_baselines": down["baselines"],
            }

    metrics = {
        "toy_model": {
            "artifact": "toy_model/config.json",
            "config": cfg.toy.model_dump(mode="json"),
            **toy_summary,
        },
        "activations": {
            "artifact": "activations.safetensors",
            "hook": cfg.activations.hook,
            "position": cfg.activations.position,
            "split": cfg.activations.split,
            "n": int(x_ND.shape[0]),
            "d": int(x_ND.shape[1]),
        },
        "downstream_eval_split": "toy model test split (pairs never trained on)",
        "quality_eval_set": "all activation rows (the SAEs' training set)",
        "seeds": list(cfg.seeds),
        "sae_order": [s.label for s in cfg.saes],
        "architectures": archs,
    }
    write_json(run_dir / "metrics.json", metrics)

    manifest = {
        "config": cfg.model_dump(mode="json"),
        "config_hash": config_hash(cfg.model_dump(mode="json")),
        "seeds": list(cfg.seeds),
        "toy_model_seed": cfg.toy.train.seed,
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
