"""The experiment engine: one small sweep run inline (torch's default threads, then one
thread), in a local process pool (workers × cores // workers threads) and, with --ray, on a
local Ray instance. Prints wall times and the pool / inline speed ratios; asserts only that
every executor wrote the same metrics.json.

    python benchmarks/bench_engine.py [--workers N] [--ray]     # ≈ 2–4 min on 2 cores

The grid: TopK k ∈ {8, 16, 32, 64} at d_sae 1024, 5 seeds, 2 epochs, on synthetic data of
the toy model's size (12,769 × 128), so no toy model has to be trained first. Inline at one
thread separates the pool's parallelism from the cost of torch's intra-op threads, which on
a loaded machine (other processes on the cores) can be several times slower than one thread.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from husai.config import parse_run_config
from husai.experiments.executors import cores
from husai.experiments.run import run
from husai.io import read_json

CONFIG = {
    "data": [
        {
            "name": "synthetic",
            "source": "synthetic",
            "synthetic": {"n_features": 512, "d": 128, "n_samples": 12769, "k_active": 4},
        }
    ],
    "sweep": {
        "base": {"architecture": "topk", "d_sae": 1024, "epochs": 2},
        "grid": {"k": [8, 16, 32, 64]},
    },
    "metrics": {"n_bootstrap": 1000},
}


def timed(
    executor: str, workers: int | None, root: Path, threads: int | None = None
) -> tuple[float, float, bytes]:
    """(wall seconds of the whole run, seconds of its jobs stage, metrics.json bytes)."""
    out = root / f"{executor}_{threads}"
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    t0 = time.perf_counter()
    try:
        run(parse_run_config(CONFIG), out, executor=executor, workers=workers)
    finally:
        torch.set_num_threads(before)
    wall = time.perf_counter() - t0
    stages = {t["stage"]: t["seconds"] for t in read_json(out / "manifest.json")["timings_seconds"]}
    return wall, stages["jobs"], (out / "metrics.json").read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=None, help="pool size (default: cores)")
    ap.add_argument("--ray", action="store_true", help="also time a local Ray instance")
    args = ap.parse_args()
    workers = args.workers or cores()
    print(
        f"4 jobs (TopK 128→1024, k 8…64, 5 seeds, 2 epochs); {cores()} cores; pool: "
        f"{workers} workers × {max(1, cores() // workers)} torch thread(s)"
    )
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = [(f"inline, {threads} threads", timed("inline", None, root))]
        if threads > 1:
            rows.append(("inline, 1 thread", timed("inline", None, root, threads=1)))
        rows.append((f"process, {workers} workers", timed("process", workers, root)))
        if args.ray:
            rows.append((f"ray, {workers} CPUs", timed("ray", workers, root)))
        wall0, jobs0, metrics0 = rows[0][1]
        for name, (wall, jobs, metrics) in rows:
            assert metrics == metrics0, f"{name}: metrics.json differs from inline"
            print(
                f"  {name:<20} wall {wall:6.1f} s, jobs stage {jobs:6.1f} s; speed vs inline "
                f"({threads} threads): {wall0 / wall:.2f}x wall, {jobs0 / jobs:.2f}x jobs stage"
            )
        if threads > 1:
            (_, j1, _), (_, jp, _) = rows[1][1], rows[2][1]
            print(f"  process pool vs inline at 1 thread (jobs stage): {j1 / jp:.2f}x")
    print("metrics.json identical across executors")


if __name__ == "__main__":
    main()
