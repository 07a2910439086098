"""The experiment engine on a trivial job kind: keys, skipping done jobs, rerunning the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from husai.errors import HusaiError
from husai.experiments.engine import JOB_FILE, KINDS, Job, register, run_jobs

CALLS: list[str] = []


def double_job(job: Job, progress: Any = None) -> dict[str, Any]:
    """Writes one artifact and returns 2x."""
    CALLS.append(job.name)
    (job.out_dir / "value.txt").parent.mkdir(parents=True, exist_ok=True)
    (job.out_dir / "value.txt").write_text(str(job.spec["x"]))
    return {"double": 2 * job.spec["x"]}


@pytest.fixture(autouse=True)
def _double_kind():
    register("double", f"{__name__}:double_job")
    CALLS.clear()
    yield
    KINDS.pop("double", None)


def _jobs(root: Path, xs: list[int]) -> list[Job]:
    return [Job("double", {"x": x}, root / f"j{x}", name=f"j{x}") for x in xs]


def test_job_key_is_stable_and_depends_only_on_kind_and_spec(tmp_path: Path) -> None:
    a = Job("sae", {"a": 1, "b": [1, 2]}, tmp_path / "x", {"f": "p"}, name="one")
    same = Job("sae", {"b": [1, 2], "a": 1}, tmp_path / "elsewhere", name="two")
    assert a.key == same.key and len(a.key) == 16
    assert a.key == Job("sae", {"a": 1, "b": [1, 2]}, tmp_path).key  # stable across instances
    assert Job("sae", {"a": 2, "b": [1, 2]}, tmp_path).key != a.key
    assert Job("sae", {"a": 1, "b": [2, 1]}, tmp_path).key != a.key
    assert Job("other", {"a": 1, "b": [1, 2]}, tmp_path).key != a.key


def test_done_jobs_are_skipped_and_only_missing_ones_rerun(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, [1, 2, 3, 4])
    first = run_jobs(jobs)
    assert first.results == [{"double": 2 * x} for x in (1, 2, 3, 4)]
    assert (first.ran, first.skipped) == (["j1", "j2", "j3", "j4"], [])
    again = run_jobs(jobs)
    assert again.ran == [] and again.results == first.results and CALLS == first.ran
    (tmp_path / "j2" / JOB_FILE).unlink()  # killed before job.json was written
    (tmp_path / "j3" / "value.txt").unlink()  # an artifact lost afterwards
    resumed = run_jobs(jobs)
    assert resumed.ran == ["j2", "j3"] and resumed.skipped == ["j1", "j4"]
    assert resumed.results == first.results
    changed = run_jobs(_jobs(tmp_path, [1, 2, 3]) + [Job("double", {"x": 5}, tmp_path / "j4")])
    assert len(changed.ran) == 1 and changed.results[-1] == {"double": 10}


def test_interrupted_grid_completes_only_the_missing_jobs(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, [1, 2, 3, 4, 5])

    def stop_after_two(label: str, i: int, n: int) -> None:
        if label == "jobs" and i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, progress=stop_after_two)
    assert sorted(p.parent.name for p in tmp_path.glob(f"*/{JOB_FILE}")) == ["j1", "j2"]
    rest = run_jobs(jobs)
    assert (len(rest.ran), len(rest.skipped)) == (3, 2)
    assert CALLS == ["j1", "j2", "j3", "j4", "j5"]


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(HusaiError, match="unknown executor 'nope'"):
        run_jobs(_jobs(tmp_path, [1]), executor="nope")
    with pytest.raises(HusaiError, match="--workers must be ≥ 1"):
        run_jobs(_jobs(tmp_path, [1]), executor="process", workers=0)
    with pytest.raises(HusaiError, match="--address is for --executor ray"):
        run_jobs(_jobs(tmp_path, [1]), address="ray://x:10001")
    with pytest.raises(HusaiError, match="unknown job kind 'nope'"):
        run_jobs([Job("nope", {}, tmp_path / "n")])
    with pytest.raises(HusaiError, match="share an output directory"):
        run_jobs([Job("double", {"x": 1}, tmp_path), Job("double", {"x": 2}, tmp_path)])
