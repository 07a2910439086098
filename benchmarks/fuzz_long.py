"""A long fuzzing run over the strategies of tests/reliability: generated configs
(`--dry-run`) and broken input files through the CLI, in one process; prints the count of
each outcome (exit 0 / exit 2 / failure) per group, the first failures, wall time and peak RSS.

    python benchmarks/fuzz_long.py --examples 10000 [--file-examples 3000] [--seed 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

from fuzz_config import COMMANDS, broken_text, invoke, mutated, write_config  # noqa: E402
from fuzz_files import MARKER, WHAT, cases, make_bases  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_fuzz_files import check, reset_peak, vm_kb  # noqa: E402

COUNTS: dict[str, Counter] = {}
FAILURES: list[str] = []


def record(group: str, fn, *args) -> None:  # noqa: ANN001
    try:
        outcome = f"exit {fn(*args)}"
    except AssertionError as e:
        outcome = "failure"
        if len(FAILURES) < 20:
            FAILURES.append(f"{group} {WHAT if group == 'files' else ''}: {str(e)[:300]}")
    COUNTS.setdefault(group, Counter())[outcome] += 1


def run(n_config: int, n_files: int, rng_seed: int, work: Path) -> None:
    opts = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))

    @seed(rng_seed)
    @settings(max_examples=n_config, **opts)
    @given(
        data=st.data(),
        command=st.sampled_from(sorted(COMMANDS)),
        fmt=st.sampled_from(["yaml", "toml"]),
    )
    def configs(data: st.DataObject, command: str, fmt: str) -> None:
        path = write_config(work / "cfg.yaml", data.draw(mutated(COMMANDS[command])), fmt)
        record("config (mutated)", invoke, command, path, work / "out")

    @seed(rng_seed)
    @settings(max_examples=max(1, n_config // 3), **opts)
    @given(case=broken_text(), command=st.sampled_from(["run", "calibrate"]))
    def texts(case: tuple[str, bytes], command: str) -> None:
        path = work / f"broken{case[0]}"
        path.write_bytes(case[1])
        record("config (broken text)", invoke, command, path, work / "out")

    bases = make_bases(Path(tempfile.mkdtemp(dir=work)))

    @seed(rng_seed)
    @settings(max_examples=n_files, **opts)
    @given(data=st.data())
    def files(data: st.DataObject) -> None:
        where = Path(tempfile.mkdtemp(dir=work))
        try:
            case = data.draw(cases(bases, where))
            record("files", lambda: check(case.args, case.names, case.must_fail))
            COUNTS.setdefault("files by kind", Counter())[case.kind] += 1
        finally:
            shutil.rmtree(where, ignore_errors=True)

    for name, fn in (("configs", configs), ("texts", texts), ("files", files)):
        t0 = time.perf_counter()
        fn()
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=10_000, help="mutated configs")
    ap.add_argument("--file-examples", type=int, default=None, help="default: --examples")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    MARKER.unlink(missing_ok=True)
    reset_peak()
    rss0, t0 = vm_kb("VmRSS"), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="husai_fuzz_"))
    try:
        run(args.examples, args.file_examples or args.examples, args.seed, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for group, c in COUNTS.items():
        print(f"{group}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    for f in FAILURES:
        print("FAILURE", f)
    peak = vm_kb("VmHWM")
    print(
        f"wall {time.perf_counter() - t0:.0f} s; peak RSS {peak and peak >> 10} MB "
        f"(start {rss0 and rss0 >> 10} MB); code ran by unpickling: {MARKER.exists()}"
    )
    sys.exit(1 if FAILURES or MARKER.exists() else 0)


if __name__ == "__main__":
    main()
