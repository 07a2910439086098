"""Training streamed from an activation store vs in memory. Prints numbers; asserts nothing.

    python benchmarks/bench_store_train.py                    # d_in 128, 4 seeds
    python benchmarks/bench_store_train.py --d-in 576 --rows 65536 --seeds 3

(i) training throughput (rows/s, one epoch of TopK, d_sae = 4 × d_in) from a store of
--shards shards vs from the same rows as one in-memory tensor, and the ratio (goal ≥ 0.9);
(ii) peak RSS (VmHWM of a fresh subprocess) training on a store --rss-factor times the
shuffle buffer, beside the same training in memory and on one shard in memory (the
baseline: the SAE, Adam and a step), with the store's and the buffer's sizes.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from husai.sae import train_sae
from husai.sae.config import SAEConfig
from husai.store import ActivationStore, StoreWriter

RSS_D_SAE = 256  # (ii) is about the data's memory: a small SAE keeps it quick


def make_store(path: Path, rows: int, d: int, shards: int) -> ActivationStore:
    w = StoreWriter(path, d=d, hook_name="blocks.0.hook_resid_post", n_shards=shards)
    g = torch.Generator().manual_seed(0)
    for k, n in enumerate([rows // shards + (k < rows % shards) for k in range(shards)]):
        w.write(k, torch.randn(n, d, generator=g))
    return w.finish()


def config(d_sae: int, k: int, batch: int, buffer: int) -> SAEConfig:
    return SAEConfig(
        architecture="topk", d_sae=d_sae, k=k, epochs=1, batch_size=batch, shuffle_buffer=buffer
    )


def child(path: str, mode: str, k: int, batch: int, buffer: int, seeds: int) -> None:
    """One measurement in a fresh process: prints its peak RSS in MiB."""
    store = ActivationStore(Path(path))
    # idle: the same training on one shard in memory (the SAE, Adam and a step's memory)
    data = {"store": store, "memory": store.load_all, "idle": lambda: store.read_shard(0)}[mode]
    data = data if mode == "store" else data()
    train_sae(config(RSS_D_SAE, k, batch, buffer), data, list(range(seeds)))
    print(peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM (per address space, so reset by exec) where Linux has
    it; ru_maxrss elsewhere (Linux carries that over exec from the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(args: argparse.Namespace, tmp: Path) -> None:
    store = make_store(tmp / "tp", args.rows, args.d_in, args.shards)
    x = store.load_all()
    cfg = config(4 * args.d_in, args.k, args.batch, args.buffer)
    seeds = list(range(args.seeds))
    best = {"memory": float("inf"), "store": float("inf")}
    for _ in range(args.repeats):  # interleaved, best of
        for name, data in (("memory", x), ("store", store)):
            t = time.perf_counter()
            train_sae(cfg, data, seeds)
            best[name] = min(best[name], time.perf_counter() - t)
    n = (args.rows // args.batch) * args.batch
    print(f"(i) {args.rows} rows x d_in {args.d_in}, d_sae {4 * args.d_in}, k {args.k}, ")
    print(f"    {args.seeds} seeds, batch {args.batch}, {args.shards} shards, buffer {args.buffer}")
    print(f"    in memory : {n / best['memory']:10.0f} rows/s")
    print(f"    store     : {n / best['store']:10.0f} rows/s")
    print(f"    store / memory = {best['memory'] / best['store']:.2f}  (goal >= 0.9)")


def rss(args: argparse.Namespace, tmp: Path) -> None:
    rows = args.rss_factor * args.rss_buffer
    store = make_store(tmp / "rss", rows, args.rss_d, args.rss_shards)
    mib = 4 * args.rss_d / 2**20
    peak = {}
    for mode in ("idle", "store", "memory"):
        cmd = [sys.executable, __file__, "--child", str(store.path), mode]
        cmd += [str(v) for v in (args.rss_k, args.batch, args.rss_buffer, args.seeds)]
        peak[mode] = float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    print(
        f"(ii) store {rows} rows x d {args.rss_d} = {rows * mib:.0f} MiB in {args.rss_shards} "
        f"shards of {rows // args.rss_shards * mib:.0f} MiB; buffer {args.rss_buffer} rows = "
        f"{args.rss_buffer * mib:.0f} MiB; {args.seeds} seeds, d_sae {RSS_D_SAE}"
    )
    print(f"    peak RSS, training on 1 shard: {peak['idle']:7.0f} MiB (in memory; the baseline)")
    print(
        f"    peak RSS, training on store  : {peak['store']:7.0f} MiB "
        f"(+{peak['store'] - peak['idle']:.0f} over the baseline)"
    )
    print(
        f"    peak RSS, training in memory : {peak['memory']:7.0f} MiB "
        f"(+{peak['memory'] - peak['idle']:.0f} over the baseline)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        p, mode, k, batch, buffer, seeds = sys.argv[2:8]
        return child(p, mode, int(k), int(batch), int(buffer), int(seeds))
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=131_072)
    ap.add_argument("--d-in", type=int, default=128)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--buffer", type=int, default=32_768)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rss-d", type=int, default=576)
    ap.add_argument("--rss-k", type=int, default=8)
    ap.add_argument("--rss-buffer", type=int, default=8192)
    ap.add_argument("--rss-factor", type=int, default=10)
    ap.add_argument("--rss-shards", type=int, default=20)
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        throughput(args, Path(tmp))
        if not args.skip_rss:
            rss(args, Path(tmp))


if __name__ == "__main__":
    main()
