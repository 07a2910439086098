"""Speed of the default pipeline. Prints ratios; asserts nothing (timings flake in tests).

    python benchmarks/bench_run.py            # SAE throughput + ensemble ratio (≈1 min)
    python benchmarks/bench_run.py --full     # also the default `husai run`, stage by stage

SAE-tokens/s = activations processed per second per SAE (an ensemble of S seeds that
takes t seconds for N tokens does S·N/t). Reference: dictionary_learning's trainer did
~45k SAE-tokens/s on this machine for TopK 128→1024, k 32, batch 256 (issue #2).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from husai.config import RunConfig, SAEConfig
from husai.sae import SAE, build_sae, train_sae

DICTIONARY_LEARNING_TOKENS_PER_S = 45_000


def step_rate(sae: SAE, x: torch.Tensor, dense: bool, steps: int = 60) -> float:
    """SAE-tokens/s of forward + backward + Adam step (+ decoder renorm)."""
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    loss_fn = (lambda b: SAE.loss(sae, b)) if dense else sae.loss

    def step() -> None:
        loss, _ = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        sae.remove_parallel_grads()
        opt.step()
        sae.normalize_decoder()

    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return x.shape[0] * x.shape[1] * steps / (time.perf_counter() - t0)


def throughput() -> None:
    cfg = SAEConfig(architecture="topk", d_sae=1024, k=32, batch_size=256)
    print(f"TopK 128→1024, k 32, batch 256, torch threads {torch.get_num_threads()}")
    for S in (1, 5):
        x = torch.randn(S, 256, 128)
        fast = step_rate(build_sae(cfg, 128, list(range(S))), x, dense=False)
        dense = step_rate(build_sae(cfg, 128, list(range(S))), x, dense=True)
        print(
            f"  S={S}: sparse path {fast:,.0f} SAE-tokens/s | dense autograd {dense:,.0f} | "
            f"sparse/dense {fast / dense:.2f}x | vs dictionary_learning (45k) "
            f"{fast / DICTIONARY_LEARNING_TOKENS_PER_S:.2f}x"
        )


def ensemble_ratio() -> None:
    x = torch.randn(12769, 128)
    seeds = [42, 123, 456, 789, 1011]
    for arch in ("topk", "relu"):
        cfg = SAEConfig(architecture=arch, epochs=2)
        t0 = time.perf_counter()
        train_sae(cfg, x, seeds)
        ens = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in seeds:
            train_sae(cfg, x, [s])
        seq = time.perf_counter() - t0
        print(
            f"{arch}: 5 seeds × 2 epochs: ensemble {ens:.2f}s, one at a time {seq:.2f}s, "
            f"speed-up {seq / ens:.2f}x"
        )


def full_run() -> None:
    from husai.experiments.run import run
    from husai.io import read_json

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run(RunConfig(), Path(tmp) / "run", cache_dir=Path(tmp) / "cache")
        total = time.perf_counter() - t0
        timings = read_json(Path(tmp) / "run" / "manifest.json")["timings_seconds"]
    print("default `husai run` (cold cache), stage wall times:")
    for t in timings:
        print(f"  {t['stage']:<20} {t['seconds']:7.1f} s")
    print(f"  {'total':<20} {total:7.1f} s (budget 300 s: {total / 300:.2f} of it)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="also time the default husai run")
    args = ap.parse_args()
    throughput()
    ensemble_ratio()
    if args.full:
        full_run()
