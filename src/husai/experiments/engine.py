"""One engine for every experiment: jobs keyed by a hash of what determines their result,
skipped when already done, run by an executor (inline, process pool, Ray), results in job
order.

A job is done when `out_dir/job.json` holds its key, its result and the sha256 of every
artifact it wrote, matches its own seal (sha256 of the rest of the record) and every artifact
still matches its hash. job.json is written atomically after everything else, so a job
killed half-way is simply run again; a job whose job.json or artifacts are corrupt (or whose
job.json an older husai wrote) is run again after one `note:` line naming the file, its
recorded artifacts removed first so that nothing corrupt is reused.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from husai.errors import HusaiError
from husai.integrity import file_hashes, first_mismatch, note, read_sealed, seal, seal_ok
from husai.io import config_hash, write_json

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
    """The stored result if the job is done (same key, record and every artifact intact),
    else None; a corrupt record or artifact is noted and the job's artifacts removed."""
    path = job.out_dir / JOB_FILE
    if not path.is_file():
        return None
    try:
        record, ok = read_sealed(path)
    except HusaiError as e:
        return _redo(job, None, f"{e}; rerunning the job")
    if ok is False or not isinstance(record.get("artifacts"), dict):
        why = "written by an older husai" if ok is None else "does not match its checksum"
        return _redo(job, record, f"{path}: {why}; rerunning the job")
    if record.get("key") != job.key:
        return None
    bad = first_mismatch(job.out_dir, record["artifacts"])
    if bad is not None:
        return _redo(job, record, f"{job.out_dir / bad}: missing or corrupt; rerunning the job")
    return record["result"]


def _redo(job: Job, record: Any, message: str) -> None:
    """Note why a job reruns; remove its job.json and (for a corrupt one) the artifacts it
    recorded, so that the rerun trusts none of them (an older husai's are kept: intact)."""
    note(message)
    (job.out_dir / JOB_FILE).unlink(missing_ok=True)
    if isinstance(record, dict) and seal_ok(record) is None:
        return None
    recorded = record.get("artifacts") if isinstance(record, dict) else None
    files = recorded if isinstance(recorded, dict) else _artifacts(job.out_dir)
    for rel in files:
        (job.out_dir / rel).unlink(missing_ok=True)
    return None


def _artifacts(out_dir: Path) -> list[str]:
    """Every file a job wrote in `out_dir` (not job.json, not hidden temp files)."""
    return sorted(
        str(p.relative_to(out_dir))
        for p in out_dir.rglob("*")
        if p.is_file() and p.name != JOB_FILE and not p.name.startswith(".")
    )


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
    artifacts = file_hashes(out_dir, _artifacts(out_dir))
    record = {"key": job.key, "kind": job.kind, "spec": job.spec, "artifacts": artifacts}
    write_json(out_dir / JOB_FILE, seal({**record, "result": result}))
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
