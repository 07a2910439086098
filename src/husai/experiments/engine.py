"""One engine for every experiment: jobs keyed by a hash of what determines their result,
skipped when already done, run by an executor (inline, process pool, Ray), results in job
order.

A job is done when `out_dir/job.json` holds its key, its result and the list of artifacts
it wrote, and those artifacts still exist. job.json is written atomically after everything
else, so a job killed half-way is simply run again.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from husai.errors import HusaiError
from husai.io import config_hash, read_json, write_json

JOB_FILE = "job.json"
Progress = Callable[[str, int, int], None]
JobFunction = Callable[["Job", Progress | None], dict[str, Any]]

# kind → "module:function"; resolved lazily so that any worker process can import it
KINDS: dict[str, str] = {
    "sae": "husai.experiments.sae_job:sae_job",
    "lm_sae": "husai.experiments.lm_job:lm_sae_job",
}


@dataclass(frozen=True)
class Job:
    """One unit of work. Only `kind` and `spec` determine the result (and the key)."""

    kind: str
    spec: dict[str, Any]  # JSON-able: configs, seeds, content hashes of the inputs
    out_dir: Path  # where the job writes its artifacts and job.json
    inputs: dict[str, str] = field(default_factory=dict)  # input files (content is in spec)
    name: str = ""  # for progress bars, timings and errors

    @property
    def key(self) -> str:
        return config_hash({"kind": self.kind, "spec": self.spec})


def register(kind: str, target: str) -> None:
    """Register a job function as "module:function" (a module-level function, so that
    process pools and Ray can import it)."""
    KINDS[kind] = target


def job_function(kind: str) -> JobFunction:
    if kind not in KINDS:
        raise HusaiError(f"unknown job kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def done_result(job: Job) -> dict[str, Any] | None:
    """The stored result if the job is done (same key, every artifact present), else None."""
    path = job.out_dir / JOB_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except HusaiError:
        return None
    if record.get("key") != job.key:
        return None
    if not all((job.out_dir / rel).is_file() for rel in record.get("artifacts", [])):
        return None
    return record["result"]


def execute(
    job: Job, progress: Progress | None = None, threads: int | None = None
) -> tuple[dict[str, Any], float]:
    """Run one job in this process (deterministic kernels), then write its job.json last.
    Returns (result, wall seconds). The same function runs inline, in a pool, or on Ray."""
    import torch

    from husai.runtime import deterministic

    if threads:
        torch.set_num_threads(threads)
    fn = job_function(job.kind)
    out_dir = Path(job.out_dir)
    (out_dir / JOB_FILE).unlink(missing_ok=True)
    t0 = time.perf_counter()
    with deterministic():
        result = fn(job, progress)
    artifacts = sorted(
        str(p.relative_to(out_dir))
        for p in out_dir.rglob("*")
        if p.is_file() and p.name != JOB_FILE and not p.name.startswith(".")
    )
    record = {"key": job.key, "kind": job.kind, "spec": job.spec, "artifacts": artifacts}
    write_json(out_dir / JOB_FILE, {**record, "result": result})
    return result, time.perf_counter() - t0


@dataclass
class Summary:
    """What `run_jobs` did: results in job order, which jobs ran and which were skipped."""

    results: list[dict[str, Any]]
    ran: list[str]
    skipped: list[str]
    seconds: dict[str, float]  # wall seconds of each job that ran, by name
    executor: str
    workers: int


def check_executor(executor: str, workers: int | None = None, address: str | None = None) -> None:
    """Reject unusable executor settings up front (one-line HusaiError)."""
    import importlib.util

    from husai.experiments.executors import EXECUTORS

    if executor not in EXECUTORS:
        raise HusaiError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if workers is not None and workers < 1:
        raise HusaiError(f"--workers must be ≥ 1, got {workers}")
    if address and executor != "ray":
        raise HusaiError("--address is for --executor ray only")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise HusaiError("--executor ray needs Ray: pip install 'husai[ray]'")


def run_jobs(
    jobs: Sequence[Job],
    executor: str = "inline",
    workers: int | None = None,
    address: str | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Run every job that is not done yet; `progress("jobs", i, n)` after each one."""
    from husai.experiments.executors import EXECUTORS, default_workers

    check_executor(executor, workers, address)
    dirs = [Path(j.out_dir).resolve() for j in jobs]
    if len(set(dirs)) != len(dirs):
        raise HusaiError("two jobs share an output directory")
    results: list[dict[str, Any] | None] = [done_result(j) for j in jobs]
    todo = [i for i, r in enumerate(results) if r is None]
    n_workers = 1 if executor == "inline" else workers or default_workers(len(todo))
    names = [j.name or j.key for j in jobs]
    seconds: dict[str, float] = {}
    if todo:
        outcomes = EXECUTORS[executor]([jobs[i] for i in todo], n_workers, address, progress)
        for n_done, (t, (result, secs)) in enumerate(outcomes, start=1):
            results[todo[t]] = result
            seconds[names[todo[t]]] = round(secs, 3)
            if progress:
                progress("jobs", n_done, len(todo))
    ran = set(todo)
    return Summary(
        results=results,  # type: ignore[arg-type]
        ran=[names[i] for i in todo],
        skipped=[n for i, n in enumerate(names) if i not in ran],
        seconds=seconds,
        executor=executor,
        workers=n_workers,
    )
