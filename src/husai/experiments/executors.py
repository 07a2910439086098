"""Where jobs run: in this process, in a local process pool, or on Ray. Every executor calls
the same `engine.execute` and yields (index, (result, seconds)) as jobs finish."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from husai.errors import HusaiError
from husai.experiments.engine import Job, Progress, execute

Outcome = tuple[int, tuple[dict[str, Any], float]]
Executor = Callable[[Sequence[Job], int, "str | None", "Progress | None"], Iterator[Outcome]]


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_workers(n_jobs: int) -> int:
    return max(1, min(cores(), n_jobs))


def threads_per_worker(workers: int) -> int:
    """torch threads per worker so that workers × threads ≤ cores."""
    return max(1, cores() // workers)


def inline(
    jobs: Sequence[Job], workers: int, address: str | None, progress: Progress | None
) -> Iterator[Outcome]:
    """One job after the other in this process (training progress is reported)."""
    for i, job in enumerate(jobs):
        yield i, execute(job, progress)


def process(
    jobs: Sequence[Job], workers: int, address: str | None, progress: Progress | None
) -> Iterator[Outcome]:
    """A local pool of `workers` spawned processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        threads = threads_per_worker(workers)
        futures = {pool.submit(execute, job, None, threads): i for i, job in enumerate(jobs)}
        for f in as_completed(futures):
            try:
                result = f.result()
            except BrokenProcessPool:
                raise HusaiError(
                    f"a worker process died (killed, or out of memory) during job "
                    f"{jobs[futures[f]].name or futures[f]}; finished jobs are kept, rerun to "
                    "resume"
                ) from None
            yield futures[f], result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ray(
    jobs: Sequence[Job], workers: int, address: str | None, progress: Progress | None
) -> Iterator[Outcome]:
    """Ray tasks: on the cluster at `address` (run directory on a shared file system), or
    on a local instance with `workers` CPUs started here and stopped afterwards."""
    try:
        import ray as ray_lib
    except ImportError:
        raise HusaiError("--executor ray needs Ray: pip install 'husai[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray_lib.is_initialized()
    if started and address:
        ray_lib.init(address=address)
    elif started:
        ray_lib.init(num_cpus=workers, include_dashboard=False)
    threads = 1 if address else threads_per_worker(workers)
    remote = ray_lib.remote(num_cpus=1)(execute)  # retried if a worker dies: jobs are idempotent
    refs = {remote.remote(job, None, threads): i for i, job in enumerate(jobs)}
    pending = list(refs)
    try:
        while pending:
            finished, pending = ray_lib.wait(pending, num_returns=1)
            for ref in finished:
                try:
                    out = ray_lib.get(ref)
                except ray_lib.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    raise (cause if isinstance(cause, Exception) else e) from None
                yield refs[ref], out
    finally:
        for ref in pending:
            ray_lib.cancel(ref)
        if started:
            ray_lib.shutdown()


EXECUTORS: dict[str, Executor] = {"inline": inline, "process": process, "ray": ray}
