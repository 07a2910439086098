"""Sweeps: grid expansion, the sweep report, resuming an interrupted grid, and the same
metrics.json from every executor (inline, process pool, Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import husai
from husai.cli import app
from husai.config import parse_run_config
from husai.errors import HusaiError
from husai.experiments import run

GRID = {"k": [2, 4], "d_sae": [16, 32]}
LABELS = ["topk_k2_d16", "topk_k2_d32", "topk_k4_d16", "topk_k4_d32"]


def sweep_dict(tiny: dict, **grid: list) -> dict:
    grid = grid or GRID
    base = {"architecture": "topk", "epochs": 2, "batch_size": 64}
    base = {k: v for k, v in base.items() if k not in grid}
    cfg = {k: v for k, v in tiny.items() if k != "saes"}
    return {**cfg, "sweep": {"base": base, "grid": grid}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep_cache")


@pytest.fixture(scope="module")
def sweep_run(tiny_dict: dict, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 4-job grid, run inline without interruption: the reference metrics."""
    out = tmp_path_factory.mktemp("sweep") / "run"
    run(parse_run_config(sweep_dict(tiny_dict)), out, cache_dir=cache)
    return out


def _jobs(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["jobs"]


def test_sweep_expands_into_labelled_saes_in_grid_order(tiny_dict: dict) -> None:
    cfg = parse_run_config(sweep_dict(tiny_dict))
    assert [s.label for s in cfg.saes] == LABELS
    assert [(s.params.k, s.d_sae, s.epochs) for s in cfg.saes] == [
        (2, 16, 2),
        (2, 32, 2),
        (4, 16, 2),
        (4, 32, 2),
    ]
    swapped = parse_run_config(sweep_dict(tiny_dict, d_sae=[16, 32], k=[2, 4]))
    assert [s.label for s in swapped.saes] == [
        "topk_d16_k2",
        "topk_d16_k4",
        "topk_d32_k2",
        "topk_d32_k4",
    ]
    assert parse_run_config(cfg.model_dump(mode="json")) == cfg  # a dumped config reloads
    archs = parse_run_config(
        sweep_dict(tiny_dict, architecture=["relu", "gated"], l1_coefficient=[0.5, 2.0])
    )
    assert [s.label for s in archs.saes] == [
        "relu_l1c0.5",
        "relu_l1c2",
        "gated_l1c0.5",
        "gated_l1c2",
    ]


@pytest.mark.parametrize(
    ("sweep", "needle"),
    [
        ({"grid": {"kk": [1]}}, "sweep: grid: unknown SAE field 'kk'"),
        ({"base": {"bogus": 1}, "grid": {"k": [1]}}, "sweep: base: unknown SAE field 'bogus'"),
        ({"grid": {"name": ["a"]}}, "`name` is set by the sweep"),
        ({"grid": {}}, "grid: needs at least one field"),
        ({"grid": {"k": []}}, "grid.k: needs at least one value"),
        ({"grid": {"k": [4, 4]}}, "duplicate labels"),
        ({"base": {"k": 4}, "grid": {"k": [8]}}, "'k' is in both base and grid"),
        ({"grid": {"k": [64], "d_sae": [32]}}, "sweep: point topk_k64_d32: k (64) must be ≤ d_sae"),
        ({"grid": {"architecture": ["nope"]}}, "unknown architecture 'nope'"),
        (
            {"grid": {"architecture": ["topk", "relu"], "l1_coefficient": [0.5]}},
            "sweep: point topk_l1c0.5: l1_coefficient is not a field of architecture topk "
            "(it belongs to gated, relu)",
        ),
    ],
)
def test_bad_sweeps_are_one_line_errors(sweep: dict, needle: str) -> None:
    with pytest.raises(HusaiError) as e:
        parse_run_config({"sweep": sweep})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_sweep_and_saes_together_are_refused(tiny_dict: dict) -> None:
    with pytest.raises(HusaiError, match="either `saes` or `sweep`"):
        parse_run_config({**sweep_dict(tiny_dict), "saes": tiny_dict["saes"]})


def test_sweep_run_reports_curves_and_effective_rank(sweep_run: Path) -> None:
    m = json.loads((sweep_run / "metrics.json").read_text())
    assert [p["label"] for p in m["sweep"]["points"]] == LABELS == m["sae_order"]
    assert m["sweep"]["fields"] == ["k", "d_sae"]
    for label in LABELS:
        a = m["datasets"]["toy"]["architectures"][label]
        ci = a["quality"]["ci"]["explained_variance"]
        assert ci["ci_low"] <= a["quality"]["mean"]["explained_variance"] <= ci["ci_high"]
        assert (sweep_run / "saes" / "toy" / label / "job.json").is_file()
    for fig in ("sweep_k_toy", "sweep_d_sae_toy"):
        assert (sweep_run / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
    report = (sweep_run / "report.md").read_text()
    assert "## Sweep over k × d_sae" in report and "figures/sweep_d_sae_toy.png" in report
    pr = m["datasets"]["toy"]["effective_rank"]["participation_ratio"]
    assert f"participation ratio {pr:.1f}" in report
    assert _jobs(sweep_run)["total"] == 4 and len(_jobs(sweep_run)["ran"]) == 4


def test_interrupted_grid_resumes_without_redoing_finished_jobs(
    sweep_run: Path, tiny_dict: dict, cache: Path, tmp_path: Path
) -> None:
    cfg = parse_run_config(sweep_dict(tiny_dict))

    def stop_after_two(label: str, i: int, n: int) -> None:
        if label == "jobs" and i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "run", cache_dir=cache, progress=stop_after_two)
    assert len(list((tmp_path / "run").glob("saes/toy/*/job.json"))) == 2
    run(cfg, tmp_path / "run", cache_dir=cache)
    jobs = _jobs(tmp_path / "run")
    assert (len(jobs["ran"]), len(jobs["skipped"])) == (2, 2)
    assert jobs["ran"] == ["toy/topk_k4_d16", "toy/topk_k4_d32"]
    assert (tmp_path / "run" / "metrics.json").read_bytes() == (
        sweep_run / "metrics.json"
    ).read_bytes()


@pytest.mark.slow
def test_killed_process_resumes_with_only_the_missing_jobs(
    tiny_dict: dict, cache: Path, sweep_run: Path, tmp_path: Path
) -> None:
    """SIGKILL a `husai sweep` after its first job, rerun, count the jobs that ran."""
    cfg = sweep_dict(tiny_dict)
    cfg["sweep"]["base"]["epochs"] = 2
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "run"
    src = str(Path(husai.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "HUSAI_CACHE_DIR": str(cache)}
    cmd = "from husai.cli import main; main()"
    args = [sys.executable, "-c", cmd, "sweep", str(tmp_path / "s.yaml"), "--out", str(out)]
    proc = subprocess.Popen([*args, "--quiet"], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("saes/toy/*/job.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("saes/toy/*/job.json")))
    assert 1 <= done < 4 and not (out / "metrics.json").exists()
    run(parse_run_config(cfg), out, cache_dir=cache)
    jobs = _jobs(out)
    assert (len(jobs["ran"]), len(jobs["skipped"])) == (4 - done, done)
    assert (out / "metrics.json").read_bytes() == (sweep_run / "metrics.json").read_bytes()


def test_process_pool_gives_the_same_metrics(
    sweep_run: Path, tiny_dict: dict, cache: Path, tmp_path: Path
) -> None:
    cfg = parse_run_config(sweep_dict(tiny_dict))
    run(cfg, tmp_path / "run", cache_dir=cache, executor="process", workers=2)
    jobs = _jobs(tmp_path / "run")
    assert (jobs["executor"], jobs["workers"], len(jobs["ran"])) == ("process", 2, 4)
    assert (tmp_path / "run" / "metrics.json").read_bytes() == (
        sweep_run / "metrics.json"
    ).read_bytes()


@pytest.mark.slow
def test_ray_local_instance_gives_the_same_metrics(
    sweep_run: Path, tiny_dict: dict, cache: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'husai[ray]'")
    cfg = parse_run_config(sweep_dict(tiny_dict))
    run(cfg, tmp_path / "run", cache_dir=cache, executor="ray", workers=2)
    assert not ray.is_initialized()  # the local instance it started is shut down again
    jobs = _jobs(tmp_path / "run")
    assert (jobs["executor"], jobs["workers"], len(jobs["ran"])) == ("ray", 2, 4)
    assert (tmp_path / "run" / "metrics.json").read_bytes() == (
        sweep_run / "metrics.json"
    ).read_bytes()


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--executor", "nope"], "unknown executor 'nope'"),
        (["--executor", "process", "--workers", "0"], "--workers must be ≥ 1"),
        (["--address", "auto"], "--address is for --executor ray only"),
    ],
)
def test_sweep_cli_rejects_bad_engine_options(
    tiny_dict: dict, tmp_path: Path, args: list[str], needle: str
) -> None:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sweep_dict(tiny_dict)))
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", str(tmp_path / "s.yaml"), "--out", str(out), *args])
    assert res.exit_code == 2 and needle in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_sweep_cli_needs_a_sweep_block(tiny_config: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["sweep", str(tiny_config), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no `sweep` block (use `husai run`)" in res.output
