"""Pre-flight checks and the plan of a run: what `husai run` checks before any work (shared
by the run itself and `--dry-run`), and what it would do (data sets × SAE configs × seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from husai.config import RunConfig
from husai.errors import HusaiError
from husai.experiments.engine import JOB_FILE, check_executor
from husai.experiments.lm_job import LM_JOB_VERSION
from husai.experiments.sae_job import SAE_JOB_VERSION
from husai.integrity import read_sealed
from husai.io import config_hash, read_json


def require_sweep(cfg: RunConfig) -> None:
    if cfg.sweep is None:
        raise HusaiError("the config has no `sweep` block (use `husai run`)")


def require_new_or_same(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse to mix a different config into an existing run directory (or to guess
    which config a corrupt manifest.json held)."""
    manifest = Path(run_dir) / "manifest.json"
    if manifest.is_file():
        record = read_manifest(manifest)
        old = record.get("config_hash") if isinstance(record, dict) else None
        if old and old != config_hash(cfg.model_dump(mode="json")):
            raise HusaiError(
                f"{run_dir}: holds a run with another config (hash {old}); choose another --out"
            )


def read_manifest(path: Path) -> Any:
    """A run's manifest.json; one that does not parse or match its seal is a HusaiError."""
    manifest, sealed = read_sealed(path)
    if sealed is False:
        raise HusaiError(
            f"{path}: does not match its checksum (corrupted?); delete it to rerun this "
            "directory, or choose another --out"
        )
    return manifest


def preflight(
    cfg: RunConfig,
    run_dir: Path,
    executor: str = "inline",
    workers: int | None = None,
    address: str | None = None,
) -> None:
    """Everything `run` refuses before doing any work (one-line HusaiError)."""
    check_executor(executor, workers, address)
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise HusaiError(f"{run_dir}: exists and is not a directory (choose another --out)")
    for d in cfg.data:
        if d.source == "file" and not Path(d.path or "").is_file():
            raise HusaiError(f"data {d.name}: activation file {d.path} not found")
    require_new_or_same(Path(run_dir), cfg)


def done_jobs(cfg: RunConfig, run_dir: Path) -> int:
    """Jobs whose job.json in `run_dir` records this config's SAE, seeds, metrics and job
    version, with every artifact present. (Input hashes are only known once the data sets
    are built; the run re-checks them.)"""
    n = 0
    for d in cfg.data:
        version = LM_JOB_VERSION if d.source == "lm" else SAE_JOB_VERSION
        for s in cfg.saes_for(d):
            out_dir = Path(run_dir) / "saes" / d.name / s.label
            if not (out_dir / JOB_FILE).is_file():
                continue
            try:
                record = read_json(out_dir / JOB_FILE)
            except HusaiError:
                continue
            spec = record.get("spec") if isinstance(record, dict) else None
            if not isinstance(spec, dict):
                continue
            want = {
                "version": version,
                "sae": s.model_dump(mode="json"),
                "seeds": list(cfg.seeds),
                "metrics": cfg.metrics.model_dump(mode="json"),
            }
            artifacts = record.get("artifacts", [])
            if all(spec.get(k) == v for k, v in want.items()) and all(
                isinstance(a, str) and (out_dir / a).is_file() for a in artifacts
            ):
                n += 1
    return n


def plan_lines(cfg: RunConfig, run_dir: Path, executor: str = "inline") -> list[str]:
    """A few lines: the data sets, SAE configs and seeds, the jobs, what is already done."""
    data = [f"{d.name} ({d.source})" for d in cfg.data]
    labels = [s.label for s in cfg.saes]
    n_jobs = sum(len(cfg.saes_for(d)) for d in cfg.data)
    n_seeds = len(cfg.seeds)
    where = Path(run_dir)
    done = done_jobs(cfg, where) if where.is_dir() else 0
    state = f"{done} of {n_jobs} jobs already done" if where.is_dir() else "new"
    return [
        f"config OK{' (sweep)' if cfg.sweep is not None else ''}: {len(data)} data set(s) × "
        f"{len(labels)} SAE config(s) × {n_seeds} seeds = {n_jobs} jobs "
        f"({n_jobs * n_seeds} SAEs), executor {executor}",
        f"data sets: {', '.join(data)}",
        f"SAE configs: {', '.join(labels)}; seeds: {', '.join(map(str, cfg.seeds))}",
        f"run directory {run_dir}: {state}; dry run, nothing done",
    ]
