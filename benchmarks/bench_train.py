"""husai's trainer vs dictionary_learning's and sae-lens's, side by side in one process.
Prints ratios; asserts nothing (timings flake in tests).

    python benchmarks/bench_train.py                         # toy + LM width, TopK, float32
    python benchmarks/bench_train.py --bf16                  # all under bfloat16 autocast
    python benchmarks/bench_train.py --geometry toy --archs topk,batchtopk,matryoshka,relu,jumprelu
    python benchmarks/bench_train.py --threads 1 --reps 7    # pin both to one torch thread
    python benchmarks/bench_train.py --geometry toy --profile  # husai's ops per step
    python benchmarks/bench_train.py --peers dictionary_learning  # one peer only

Same data (seeded Gaussian rows), same geometry, same seeds count, Adam, one epoch:
husai's `train_sae` (all seeds as one stacked ensemble) against dictionary_learning's
`trainSAE` (the `interop` extra; one trainer per seed, each fed every batch) and sae-lens's
`SAETrainer` (same extra; its TrainingSAE of the architecture with its defaults, fed the
batches from a plain iterator, one seed after another; `--peers` picks). Repetitions
are interleaved (husai, peers, then the reverse order) so that load from other processes
hits all alike; the figures are medians over repetitions. SAE-tokens/s = seeds × rows / wall
seconds of the whole call (init and data-dependent init included on both sides). Beside it,
the CPU-time ratio (process CPU seconds, all threads): on a machine shared with other jobs,
wall time mostly measures the scheduler, CPU time the work done.

Geometries: toy 128 → 1024 (batch 256, 320 steps); lm 576 → 4608 (batch 4096, 24 steps);
k 32, 5 seeds. `--bf16`: husai `precision: bf16` (bf16 matmuls, float32 weights and Adam)
against dictionary_learning's trainers stepped under the same `torch.autocast(bf16)` (its
`trainSAE` ignores `autocast_dtype` on the CPU, so the benchmark drives the same loop
itself) and sae-lens's trainer with its own `autocast` switch on. The roofline: the time of
the dense GEMMs of the same shapes alone — the encoder matmul (husai's one dense product
per step) and dictionary_learning's five (encoder and decoder forward, decoder's two and
encoder's one backward products) — and the ratio that bounds if everything but those
GEMMs were free.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable

# isort: off
import husai  # noqa: F401  # first, as the CLI: its OpenMP wait setting (husai/__init__.py)
import torch

# isort: on

from husai.sae import train_sae
from husai.sae.config import SAEConfig

GEOMETRIES = {  # d_in, d_sae, batch, steps
    "toy": (128, 1024, 256, 320),
    "lm": (576, 4608, 4096, 24),
}
K = 32


def husai_runner(
    arch: str, x: torch.Tensor, d_sae: int, batch: int, seeds: int, bf16: bool, device: str
) -> Callable[[], None]:
    cfg = SAEConfig(
        architecture=arch,
        d_sae=d_sae,
        epochs=1,
        batch_size=batch,
        precision="bf16" if bf16 else "fp32",
        **({"k": K} if arch in ("topk", "batchtopk", "matryoshka") else {}),
    )

    def run() -> None:
        train_sae(cfg, x, list(range(seeds)), device=device)

    return run


def dl_trainer_config(
    arch: str, steps: int, d_in: int, d_sae: int, seed: int, device: str
) -> dict | None:
    """dictionary_learning's counterpart of a husai architecture (None: it has none)."""
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    from dictionary_learning.trainers.jumprelu import JumpReluTrainer
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKTrainer
    from dictionary_learning.trainers.standard import StandardTrainer
    from dictionary_learning.trainers.top_k import TopKTrainer

    common = {
        "steps": steps,
        "activation_dim": d_in,
        "dict_size": d_sae,
        "layer": 0,
        "lm_name": "bench",
        "device": device,
        "lr": 1e-3,
        "warmup_steps": 0,
    }
    if arch == "topk":
        return {"trainer": TopKTrainer, "k": K, "seed": seed, **common}
    if arch == "batchtopk":
        return {"trainer": BatchTopKTrainer, "k": K, "seed": seed, **common}
    if arch == "matryoshka":  # husai's prefixes 1/16 … 1 as dl's group fractions
        groups = [1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2]
        return {
            "trainer": MatryoshkaBatchTopKTrainer,
            "k": K,
            "seed": seed,
            "group_fractions": groups,
            **common,
        }
    if arch == "relu":
        return {"trainer": StandardTrainer, "seed": seed, "sparsity_warmup_steps": None, **common}
    if arch == "jumprelu":
        torch.manual_seed(seed)  # JumpReluTrainer takes no seed
        return {"trainer": JumpReluTrainer, "sparsity_warmup_steps": None, **common}
    return None


def dl_runner(
    arch: str, x: torch.Tensor, d_sae: int, batch: int, seeds: int, bf16: bool, device: str
) -> Callable[[], None] | None:
    import dictionary_learning.training as dl_training

    dl_training.tqdm = lambda it, **_: it  # trainSAE's progress bar off

    steps, d_in = len(x) // batch, x.shape[1]
    if dl_trainer_config(arch, steps, d_in, d_sae, 0, device) is None:
        return None
    batches = [x[i * batch : (i + 1) * batch].to(device) for i in range(steps)]

    def configs() -> list[dict]:
        return [dl_trainer_config(arch, steps, d_in, d_sae, s, device) for s in range(seeds)]

    def run() -> None:
        if not bf16:
            dl_training.trainSAE(iter(batches), configs(), steps, device=device)
            return
        # trainSAE's loop, under the autocast it leaves off on the CPU
        trainers = [cfg.pop("trainer")(**cfg) for cfg in configs()]
        for step, act in enumerate(batches):
            for trainer in trainers:
                with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                    trainer.update(step, act)

    return run


def saelens_training_sae(arch: str, d_in: int, d_sae: int, device: str):
    """sae-lens's TrainingSAE counterpart of a husai architecture (None: it has none)."""
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    common = {"d_in": d_in, "d_sae": d_sae, "device": device}
    if arch == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=K, **common))
    if arch == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(k=K, **common))
    if arch == "matryoshka":  # husai's prefixes 1/16 … 1
        widths = [d_sae // 16, d_sae // 8, d_sae // 4, d_sae // 2, d_sae]
        cfg = MatryoshkaBatchTopKTrainingSAEConfig(k=K, matryoshka_widths=widths, **common)
        return MatryoshkaBatchTopKTrainingSAE(cfg)
    if arch == "relu":
        return StandardTrainingSAE(StandardTrainingSAEConfig(**common))
    if arch == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(**common))
    return None


def saelens_runner(
    arch: str, x: torch.Tensor, d_sae: int, batch: int, seeds: int, bf16: bool, device: str
) -> Callable[[], None] | None:
    """sae-lens's `SAETrainer` fed the same batches from a plain iterator, one trainer per
    seed in turn (it trains one SAE at a time); its own bf16 `autocast` switch for --bf16."""
    import tqdm.auto
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training import sae_trainer

    sae_trainer.tqdm = functools.partial(tqdm.auto.tqdm, disable=True)  # no progress bar
    steps, d_in = len(x) // batch, x.shape[1]
    if saelens_training_sae(arch, d_in, d_sae, device) is None:
        return None
    batches = [x[i * batch : (i + 1) * batch].to(device) for i in range(steps)]

    def run() -> None:
        for seed in range(seeds):
            torch.manual_seed(seed)
            sae = saelens_training_sae(arch, d_in, d_sae, device)
            cfg = SAETrainerConfig(
                total_training_samples=steps * batch,
                train_batch_size_samples=batch,
                lr=1e-3,
                lr_end=1e-3,  # constant schedule (sae-lens's runner config fills this in)
                device=device,
                autocast=bf16,
            )
            sae_trainer.SAETrainer(cfg, sae, iter(batches)).fit()

    return run


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall, CPU) seconds of fn()."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def roofline(
    d_in: int, d_sae: int, batch: int, seeds: int, bf16: bool, device: str, reps: int = 5
) -> tuple[float, float]:
    """Seconds per step of the encoder GEMM [S,B,D]×[S,D,F] alone, and of the five dense
    GEMMs of that size a dense implementation needs (medians)."""
    dt = torch.bfloat16 if bf16 else torch.float32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(seeds, batch, d_in, generator=g).to(device, dt)
    w = torch.randn(seeds, d_in, d_sae, generator=g).to(device, dt)
    c = torch.randn(seeds, batch, d_sae, generator=g).to(device, dt)
    wd = torch.randn(seeds, d_sae, d_in, generator=g).to(device, dt)

    def enc() -> None:
        torch.bmm(x, w)

    def five() -> None:
        torch.bmm(x, w)  # encoder forward
        torch.bmm(c, wd)  # decoder forward
        torch.bmm(x, wd.transpose(1, 2))  # d codes = d x̂ · W_decᵀ
        torch.bmm(c.transpose(1, 2), x)  # d W_dec = codesᵀ · d x̂
        torch.bmm(c.transpose(1, 2), x)  # d W_enc = d preᵀ · x

    enc(), five()
    t_enc = statistics.median(timed(enc)[0] for _ in range(reps))
    t_five = statistics.median(timed(five)[0] for _ in range(reps))
    return t_enc, t_five


def profile_step(geometry: str, arch: str, args: argparse.Namespace) -> None:
    """Prints husai's own ops over one training run of the geometry (torch.profiler, by
    self CPU time), per step."""
    from torch.profiler import profile

    d_in, d_sae, batch, steps = GEOMETRIES[geometry]
    steps = args.steps or steps
    x = torch.randn(steps * batch, d_in, generator=torch.Generator().manual_seed(0))
    run = husai_runner(arch, x, d_sae, batch, args.seeds, args.bf16, args.device)
    run()  # warm-up
    with profile() as prof:
        run()
    print(f"{geometry} {arch}: the {steps} steps' ops, ms per step (self CPU):")
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e3 / steps
    print(f"  {'all ops':32s} {total:7.2f}")
    for e in events[:15]:
        per_step = e.self_cpu_time_total / 1e3 / steps
        print(f"  {e.key:32s} {per_step:7.2f}   ({e.count / steps:g} calls)")


def bench(geometry: str, arch: str, args: argparse.Namespace) -> None:
    d_in, d_sae, batch, steps = GEOMETRIES[geometry]
    if args.steps:
        steps = args.steps
    rows = steps * batch
    x = torch.randn(rows, d_in, generator=torch.Generator().manual_seed(0))
    runners = {"husai": husai_runner(arch, x, d_sae, batch, args.seeds, args.bf16, args.device)}
    for name in args.peers.split(","):
        peer = PEERS[name](arch, x, d_sae, batch, args.seeds, args.bf16, args.device)
        if peer is not None:
            runners[name] = peer
    tokens = args.seeds * rows
    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for rep in range(args.reps + 1):  # rep 0 warms up, not counted
        for name in order if rep % 2 == 0 else order[::-1]:
            t, c = timed(runners[name])  # train_sae runs under husai.runtime.deterministic
            if rep:
                times[name].append(t)
                cpu[name].append(c)
    rate = {name: tokens / statistics.median(ts) for name, ts in times.items()}
    mode = "bf16" if args.bf16 else "fp32"
    print(
        f"{geometry} {d_in}→{d_sae} k {K} batch {batch} × {steps} steps, {args.seeds} seeds, "
        f"{arch}, {mode}, {args.device}, torch threads {torch.get_num_threads()}, "
        f"load {os.getloadavg()[0]:.2f}:"
    )
    for name, r in rate.items():
        spread = ", ".join(f"{tokens / t / 1e3:.1f}" for t in times[name])
        print(
            f"  {name:20s} {r / 1e3:8.1f}k SAE-tokens/s   (reps: {spread}; "
            f"CPU {statistics.median(cpu[name]):.1f} s a run)"
        )
    for name in order[1:]:
        pairs = zip(times["husai"], times[name], strict=True)
        ratios = [p / h for h, p in pairs]
        cpu_ratio = statistics.median(cpu[name]) / statistics.median(cpu["husai"])
        print(
            f"  husai ÷ {name}: {rate['husai'] / rate[name]:.2f}× "
            f"(per-pair ratios: {', '.join(f'{r:.2f}' for r in ratios)}; "
            f"CPU-time ratio {cpu_ratio:.2f}×)"
        )
    if not args.no_roofline and arch == "topk":
        t_enc, t_five = roofline(d_in, d_sae, batch, args.seeds, args.bf16, args.device)
        per_step = args.seeds * batch
        print(
            f"  roofline: encoder GEMM {t_enc * 1e3:.2f} ms/step "
            f"(≤ {per_step / t_enc / 1e3:.1f}k SAE-tokens/s if all else were free); "
            f"five dense GEMMs {t_five * 1e3:.2f} ms/step "
            f"(≤ {per_step / t_five / 1e3:.1f}k); dense-GEMM ratio {t_five / t_enc:.2f}×"
        )


PEERS = {"dictionary_learning": dl_runner, "sae_lens": saelens_runner}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--geometry", choices=[*GEOMETRIES, "both"], default="both")
    p.add_argument("--archs", default="topk", help="comma-separated husai architectures")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (after one warm-up)")
    p.add_argument("--steps", type=int, default=0, help="override the geometry's step count")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on both sides")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated, of: {', '.join(PEERS)}"
    )
    p.add_argument("--no-roofline", action="store_true")
    p.add_argument("--profile", action="store_true", help="print husai's ops per step instead")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    geometries = list(GEOMETRIES) if args.geometry == "both" else [args.geometry]
    for geometry in geometries:
        for arch in args.archs.split(","):
            (profile_step if args.profile else bench)(geometry, arch, args)


if __name__ == "__main__":
    main()
