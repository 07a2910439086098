"""Scale of the consistency metrics. Prints numbers and ratios; asserts nothing.

    python benchmarks/bench_metrics.py              # everything (a few minutes on 2 cores)
    python benchmarks/bench_metrics.py --skip-agreement --rows 2048

1. Sparse vs exact assignment (``husai.metrics.assignment``) at n = 2,048 and 8,192, d = 768,
   on random pairs and on structured pairs (b = noisy rotated, permuted copy of a): fraction
   of identical matched pairs, |MCC difference|, fallback pairs, wall times.
2. Two random 65,536 x 768 float32 dictionaries: time and peak RSS of ``pwmcc`` vs the bare
   block matmul (same blocks; no |.|, scaling or max) for several block sizes, each in its own
   subprocess so RSS peaks are separate. To keep it short only the first ``--rows`` rows of a
   are compared against all 65,536 rows of b (both fully allocated, so memory is the real
   thing); times are extrapolated linearly to all rows. The naive full-matrix implementation
   needs 16 GiB at 65k², so it is run at n = 16,384 instead (1 GiB matrix), next to pwmcc.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

D = 768


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(mode: str, n: int, rows: int, block: int) -> dict[str, float]:
    """One measurement in a fresh process: prints time and RSS as JSON."""
    from husai.metrics import pwmcc

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, D, generator=gen)
    b = torch.randn(n, D, generator=gen)
    a_rows = a[:rows]  # a view: no copy
    before = _rss_mib()
    t0 = time.perf_counter()
    if mode == "pwmcc":
        pwmcc(a_rows, b, block_size=block)
    elif mode == "bare":
        bt = b.T
        for s in range(0, rows, block):
            torch.mm(a_rows[s : s + block], bt)
    elif mode == "naive":
        ua = a_rows / a_rows.norm(dim=1, keepdim=True)
        ub = b / b.norm(dim=1, keepdim=True)
        sim = (ua @ ub.T).abs()
        0.5 * (sim.amax(1).mean() + sim.amax(0).mean()).item()
    else:
        raise ValueError(mode)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "rss_before_mib": before, "peak_rss_mib": _peak_mib()}


def run_worker(mode: str, n: int, rows: int, block: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", mode, str(n), str(rows), str(block)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def structured_pair(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """b = a, permuted, slightly rotated (R = QR(I + 0.1/sqrt(d) G)) plus noise: |cos| ~ 0.9."""
    a = torch.randn(n, D, generator=gen)
    a /= a.norm(dim=1, keepdim=True)
    rot, _ = torch.linalg.qr(torch.eye(D) + (0.1 / D**0.5) * torch.randn(D, D, generator=gen))
    rot *= torch.sign(torch.diagonal(rot))  # QR sign convention: keep R close to I
    b = a[torch.randperm(n, generator=gen)] @ rot
    return a, b + (0.3 / D**0.5) * torch.randn(n, D, generator=gen)


def agreement(sizes: list[int], top_m: int) -> None:
    from husai.metrics import assignment

    print(f"\n== sparse (top_m={top_m}) vs exact assignment, d={D} ==")
    print(
        f"{'pairs':>10} {'n':>6} {'identical':>9} {'MCC exact':>9} {'|ΔMCC|':>9} "
        f"{'fallback':>8} {'t exact':>8} {'t sparse':>8}"
    )
    gen = torch.Generator().manual_seed(1)
    for n in sizes:
        for kind in ("random", "structured"):
            if kind == "random":
                a, b = torch.randn(n, D, generator=gen), torch.randn(n, D, generator=gen)
            else:
                a, b = structured_pair(n, gen)
            t0 = time.perf_counter()
            ex = assignment(a, b, method="exact")
            t1 = time.perf_counter()
            sp = assignment(a, b, method="sparse", top_m=top_m)
            t2 = time.perf_counter()
            same = float((ex.partner_of_rows(n) == sp.partner_of_rows(n)).mean())
            print(
                f"{kind:>10} {n:>6} {same:>9.4f} {ex.mean:>9.5f} {abs(ex.mean - sp.mean):>9.2e} "
                f"{sp.n_fallback:>8} {t1 - t0:>7.1f}s {t2 - t1:>7.1f}s",
                flush=True,
            )


def memory(n: int, rows: int, blocks: list[int], naive_n: int) -> None:
    print(
        f"\n== pwmcc vs bare block matmul: {n} x {D} float32 dictionaries, "
        f"first {rows} rows of a vs all of b; times extrapolated x{n / rows:.0f} =="
    )
    print(f"torch threads: {torch.get_num_threads()}")
    print(
        f"{'block':>6} {'pwmcc s':>9} {'bare s':>9} {'ratio':>6} {'pwmcc peak RSS':>15} "
        f"{'bare peak RSS':>14} {'inputs RSS':>11}"
    )
    scale = n / rows
    for block in blocks:
        p = run_worker("pwmcc", n, rows, block)
        m = run_worker("bare", n, rows, block)
        print(
            f"{block:>6} {p['seconds'] * scale:>9.1f} {m['seconds'] * scale:>9.1f} "
            f"{p['seconds'] / m['seconds']:>6.2f} {p['peak_rss_mib']:>11.0f} MiB "
            f"{m['peak_rss_mib']:>10.0f} MiB {p['rss_before_mib']:>7.0f} MiB",
            flush=True,
        )
    print(
        f"naive full matrix at n={n}: skipped (the |cos| matrix alone needs "
        f"{n * n * 4 / 2**30:.0f} GiB); run at n={naive_n} instead:"
    )
    nv = run_worker("naive", naive_n, naive_n, naive_n)
    pw = run_worker("pwmcc", naive_n, naive_n, 1024)
    print(
        f"  n={naive_n}: naive {nv['seconds']:.1f}s, peak RSS {nv['peak_rss_mib']:.0f} MiB; "
        f"pwmcc (block 1024) {pw['seconds']:.1f}s, peak RSS {pw['peak_rss_mib']:.0f} MiB; "
        f"time ratio pwmcc/naive {pw['seconds'] / nv['seconds']:.2f}, "
        f"RSS ratio {pw['peak_rss_mib'] / nv['peak_rss_mib']:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=65_536)
    ap.add_argument("--rows", type=int, default=4096, help="rows of a timed (of --n)")
    ap.add_argument("--blocks", default="256,1024,4096")
    ap.add_argument("--naive-n", type=int, default=16_384)
    ap.add_argument("--agreement-sizes", default="2048,8192")
    ap.add_argument("--top-m", type=int, default=16)
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    if args.worker:
        mode, n, rows, block = args.worker
        print(json.dumps(worker(mode, int(n), int(rows), int(block))))
        return
    t0 = time.perf_counter()
    if not args.skip_memory:
        memory(args.n, args.rows, [int(b) for b in args.blocks.split(",")], args.naive_n)
    if not args.skip_agreement:
        agreement([int(s) for s in args.agreement_sizes.split(",")], args.top_m)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
