"""Kill anywhere, at scale: tests/reliability/test_kill.py's harness at random points.

    python benchmarks/kill_points.py                    # 200 points (≈10–15 min on 2 cores)
    python benchmarks/kill_points.py --points 40 --timer 0.2 --seed 3

Each trial starts from an empty run directory and cache (or store directory), runs `husai run`
(toy + synthetic + lm data sets) or `husai extract --model` with a SIGKILL at one point, reruns
it without faults and checks the result against an uninterrupted run: metrics.json (the
stores) byte-identical, jobs done before the rerun skipped, nothing finished rewritten, no temp
file left. Points are drawn with a seeded generator over every atomic write of the reference
runs (each write × start / partial / written / renamed), the directory stages' copies, and, for
a fraction `--timer`, SIGKILLs at a random wall-clock moment. Prints a table per stage.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))
from _kill import (  # noqa: E402
    Point,
    Server,
    done_jobs,
    extract_args,
    launch,
    run_args,
    store_content,
    temp_files,
)

WRITE_PHASES = ("start", "partial", "written", "renamed")


def stage(path: str, command: str) -> str:
    """The pipeline stage a write (or copy) belongs to."""
    name = Path(path).name
    if command == "extract":
        return "extract index" if name == "index.json" else "extract shards"
    for key, label in (
        ("/.toy_model.tmp/", "toy-model copy"),
        ("/.store.tmp/", "store link"),
        ("/cache/toy/", "toy-model cache"),
        ("/figures/", "figures"),
        ("/seed_", "SAE seeds"),
        ("/data/", "data sets"),
    ):
        if key in path:
            return label
    if "/cache/stores/" in path:
        return "store index" if name == "index.json" else "store shards"
    return {"job.json": "job.json", "trajectory.json": "SAE seeds"}.get(name, name)


def write_points(log: Path, root: Path, command: str) -> list[tuple[str, Point]]:
    """(stage, point) for every write of a reference log × every phase; paths made relative
    to the reference root (a glob `*/<rel>` matches the same file under any root)."""
    seen: Counter[str] = Counter()
    out = []
    for line in log.read_text().splitlines():
        path = line.split("\t", 1)[1]
        rel = str(Path(path).relative_to(root))
        seen[rel] += 1
        for phase in WRITE_PHASES:
            out.append(
                (stage(path, command), Point(stage(path, command), f"*/{rel}", seen[rel], phase))
            )
    return out


def trial(
    server: Server, command: str, inputs: dict, point: Point, ref: dict, work: Path
) -> tuple[str | None, str]:
    """One kill and rerun from empty directories: (None or what went wrong, whether the
    kill came before the command finished)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if command == "run":
        args = run_args(inputs, work / "run", work / "cache")
    else:
        args = extract_args(inputs, work / "store")
    killed = launch(server, args, work, "kill", point)
    problems = list(killed.problems)
    done = done_jobs(work / "run") if command == "run" else set()
    final = launch(server, args, work, "final", None)
    problems += final.problems
    if final.rc == 0 and command == "run":
        if (work / "run" / "metrics.json").read_bytes() != ref["metrics"]:
            problems.append("metrics.json differs from the uninterrupted run's")
        jobs = json.loads((work / "run" / "manifest.json").read_text())["jobs"]
        if set(jobs["skipped"]) != done:
            problems.append(f"skipped {sorted(jobs['skipped'])}, done before {sorted(done)}")
    elif final.rc == 0 and store_content(work / "store") != ref["store"]:
        problems.append("the store differs from the uninterrupted extraction's")
    left = temp_files(work)
    if left:
        problems.append(f"temp files left: {left[:3]}")
    if killed.rc not in (0, -9):
        problems.append(f"killed run exited {killed.rc}")
    outcome = "killed" if killed.rc == -9 else "finished first"
    return "; ".join(problems)[:500] or None, outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timer", type=float, default=0.1, help="fraction of timer kills")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="husai_kill_points_"))
    with Server() as server:
        inputs = server.make_inputs(base / "inputs")
        ref_dir = base / "ref"
        ref_dir.mkdir()
        walls = {}
        for command, argv in (
            ("run", run_args(inputs, ref_dir / "run", ref_dir / "cache")),
            ("extract", extract_args(inputs, ref_dir / "store")),
        ):
            t = time.perf_counter()
            link = launch(server, argv, ref_dir, command, None)
            walls[command] = time.perf_counter() - t
            assert not link.problems, link.problems
        ref = {
            "metrics": (ref_dir / "run" / "metrics.json").read_bytes(),
            "store": store_content(ref_dir / "store"),
        }
        pool = [("run", s, p) for s, p in write_points(ref_dir / "log_run.txt", ref_dir, "run")]
        pool += [
            ("run", "toy-model copy", Point("toy-model copy", "*/.toy_model.tmp/*", n, "copy"))
            for n in (1, 2)
        ]
        pool += [
            ("run", "store link", Point("store link", "*/.store.tmp/*", n, "copy"))
            for n in (1, 2, 3)
        ]
        pool += [
            ("extract", s, p)
            for s, p in write_points(ref_dir / "log_extract.txt", ref_dir, "extract")
        ]
        print(
            f"{len(pool)} write / copy points (run {walls['run']:.1f} s, extract "
            f"{walls['extract']:.1f} s uninterrupted); trying {args.points}",
            flush=True,
        )
        rows: dict[str, Counter[str]] = defaultdict(Counter)
        failures = []
        for i in range(args.points):
            if rng.random() < args.timer:
                command = rng.choice(["run", "extract"])
                after = round(rng.uniform(0.02, walls[command]), 3)
                label = f"timer ({command})"
                point = Point(label, "", after=after)
            else:
                command, label, point = rng.choice(pool)
            problem, outcome = trial(server, command, inputs, point, ref, base / "work")
            rows[label]["tried"] += 1
            rows[label][outcome] += 1
            if point.after is None:
                rows[label][point.phase] += 1
            if problem:
                rows[label]["failures"] += 1
                failures.append((i, command, point, problem))
                print(f"FAIL {i} {command} {point}: {problem}", flush=True)
            elif (i + 1) % 20 == 0:
                print(f"  {i + 1} points, {len(failures)} failures", flush=True)
    shutil.rmtree(base, ignore_errors=True)
    cols = ["tried", "killed", "finished first", *WRITE_PHASES, "copy", "failures"]
    print(f"\n{'stage':<18}" + "".join(f"{c:>15}" for c in cols))
    for label in sorted(rows):
        print(f"{label:<18}" + "".join(f"{rows[label][c]:>15}" for c in cols))
    total = sum((rows[r] for r in rows), Counter())
    print(f"{'all':<18}" + "".join(f"{total[c]:>15}" for c in cols))
    print(
        f"\n{args.points} points, {len(failures)} failures, {time.perf_counter() - t0:.0f} s wall"
    )
    for i, command, point, problem in failures:
        print(f"  #{i} {command} {point}: {problem}")


if __name__ == "__main__":
    main()
