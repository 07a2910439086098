"""Consistency-regularised training on the toy activations: PWMCC, EV and time vs λ.

    OMP_NUM_THREADS=1 python benchmarks/bench_regularise.py [ACTIVATIONS] [--modes ...]

TopK k=32, d_sae 1024, 20 epochs. The reference is the λ = 0 decoder of seed 42; the
"reference"/"assignment" rows train the other seeds (alone, which is what they do inside an
ensemble), the "joint" rows train all five seeds together. Prints one table row per run:
PWMCC to the reference and cross-seed PWMCC (mean of 6 pairs) of seeds 123, 456, 789, 1011,
their mean EV and final train MSE, and the wall time. The penalty is at most λ while the
MSE (summed over 128 dims) ends at ~20 (~380 after 2 epochs), so λ ∈ {10, 100, 1000}: λ = 10
moved PWMCC to the reference by only +0.07, so λ ≤ 1 was not run.
"""

from __future__ import annotations

import argparse
import time
from itertools import combinations

import torch

from husai.activations import load_activations
from husai.config import SAEConfig
from husai.metrics import explained_variance, pwmcc
from husai.sae import train_sae

SEEDS = [42, 123, 456, 789, 1011]
DEFAULT = "runs/default/data/toy/activations.safetensors"


def ev(sae, x: torch.Tensor) -> list[float]:
    with torch.no_grad():
        x_hat = torch.cat([sae(c) for c in x.split(4096)], dim=1)
    return [float(explained_variance(x, x_hat[s])) for s in range(sae.n_seeds)]


def row(mode: str, lam: float, w: torch.Tensor, seeds: list[int], ref, evs, secs, info) -> None:
    others = [s for s, seed in enumerate(seeds) if seed != SEEDS[0]]
    to_ref = sum(pwmcc(w[s], ref) for s in others) / len(others)
    pairs = list(combinations(others, 2))
    cross = sum(pwmcc(w[s], w[t]) for s, t in pairs) / len(pairs)
    mse = sum(info["final_train_mse"]) / len(seeds)
    print(
        f"| {mode:10} | {lam:6g} | {to_ref:.3f} | {cross:.3f} | {sum(evs) / len(evs):.4f} "
        f"| {mse:7.2f} | {secs:6.1f} |",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("activations", nargs="?", default=DEFAULT)
    ap.add_argument("--modes", nargs="+", default=["reference", "joint"])
    ap.add_argument("--lambdas", nargs="+", type=float, default=[1, 10, 100])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--reassign-every", type=int, default=50)
    args = ap.parse_args()
    x, _ = load_activations(args.activations)
    base = dict(architecture="topk", k=32, d_sae=1024, epochs=args.epochs)
    print(f"x {tuple(x.shape)}, threads {torch.get_num_threads()}")
    print("| mode | λ | PWMCC to ref | cross-seed PWMCC | EV | MSE | s |")
    print("|---|---|---|---|---|---|---|")
    t = time.perf_counter()
    sae, info = train_sae(SAEConfig(**base), x, SEEDS)
    secs = time.perf_counter() - t
    w0 = sae.W_dec.detach()
    ref = w0[0].clone()
    row("none", 0.0, w0, SEEDS, ref, ev(sae, x)[1:], secs, info)
    for mode in args.modes:
        seeds = SEEDS if mode == "joint" else SEEDS[1:]
        for lam in args.lambdas:
            cfg = SAEConfig(
                **base,
                consistency_penalty=mode,
                consistency_lambda=lam,
                reassign_every=args.reassign_every,
            )
            t = time.perf_counter()
            sae, info = train_sae(cfg, x, seeds, reference=None if mode == "joint" else ref)
            secs = time.perf_counter() - t
            evs = [e for e, s in zip(ev(sae, x), seeds, strict=True) if s != SEEDS[0]]
            row(mode, lam, sae.W_dec.detach(), seeds, ref, evs, secs, info)


if __name__ == "__main__":
    main()
