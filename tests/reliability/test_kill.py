"""Kill anywhere: `husai run` (toy, synthetic and lm data sets in one config) and `husai
extract --model` SIGKILLed at atomic writes in every stage and phase, one kill after
another on the same directory, then rerun: the result is the uninterrupted run's, finished
jobs, cache entries and shards are never recomputed, and no temp file is left behind."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _kill import (
    EXTRACT_POINTS,
    RUN_POINTS,
    Server,
    done_jobs,
    extract_args,
    launch,
    run_args,
    store_content,
    temp_files,
)

if importlib.util.find_spec("transformers") is None:
    pytest.skip("transformers not installed (pip install -e '.[lm]')", allow_module_level=True)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as s:
        yield s
    print(f"\nkill harness: the CLI children used {s.cpu_seconds:.1f} s of CPU")


@pytest.fixture(scope="module")
def inputs(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return server.make_inputs(tmp_path_factory.mktemp("inputs"))


def _chain(server: Server, args: list[str], root: Path, points: list) -> list[str]:
    problems = []
    for i, point in enumerate(points):
        link = launch(server, args, root, f"kill{i}", point)
        problems += [f"point {i} {point}: {p}" for p in link.problems]
    return problems


def test_run_killed_at_every_stage_resumes_to_the_same_metrics(
    server: Server, inputs: dict[str, Path], tmp_path: Path
) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    link = launch(server, run_args(inputs, ref / "run", ref / "cache"), ref, "ref", None)
    assert not link.problems, link.problems
    logged = [line.split("\t")[1] for line in (ref / "log_ref.txt").read_text().splitlines()]
    root = tmp_path / "chain"
    root.mkdir()
    args = run_args(inputs, root / "run", root / "cache")
    problems = _chain(server, args, root, RUN_POINTS)
    done = done_jobs(root / "run")
    final = launch(server, args, root, "final", None)
    assert not problems + final.problems, "\n".join(problems + final.problems)
    run = root / "run"
    assert (run / "metrics.json").read_bytes() == (ref / "run" / "metrics.json").read_bytes()
    jobs = json.loads((run / "manifest.json").read_text())["jobs"]
    assert set(jobs["skipped"]) == done
    assert set(jobs["ran"]) == {"toy/topk", "syn/topk", "lm/topk"} - done
    assert temp_files(root) == []
    # the run's copies of cache entries hold no lock or temp files of the cache's
    assert not [p for d in (run / "toy_model", run / "data/lm/store") for p in d.glob(".*")]
    # every file of the reference run went through husai.io (an atomic write, a fault
    # point), but for the two directory stages that copy a cache entry
    copies = ("run/toy_model/", "run/data/lm/store/")
    files = {str(p) for p in ref.rglob("*") if p.is_file() and not p.name.startswith(".")}
    files = {f for f in files if not f.startswith(tuple(str(ref / c) for c in copies))}
    assert files - set(logged) - {str(ref / n) for n in ("log_ref.txt", "out_ref.txt")} == set()


def test_extract_killed_at_every_shard_and_index_resumes_to_the_same_store(
    server: Server, inputs: dict[str, Path], tmp_path: Path
) -> None:
    link = launch(server, extract_args(inputs, tmp_path / "ref"), tmp_path, "ref", None)
    assert not link.problems, link.problems
    args = extract_args(inputs, tmp_path / "store")
    problems = _chain(server, args, tmp_path, EXTRACT_POINTS)
    final = launch(server, args, tmp_path, "final", None)
    assert not problems + final.problems, "\n".join(problems + final.problems)
    assert store_content(tmp_path / "store") == store_content(tmp_path / "ref")
    assert len(store_content(tmp_path / "ref")) == 2 * (1 + 3)  # 2 stores: index + 3 shards
    assert temp_files(tmp_path) == []
