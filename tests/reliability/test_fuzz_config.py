"""Config fuzzing through the CLI (`--dry-run`, in-process): every generated config exits 0
or 2 with one `error:` line, never an uncaught exception, and never writes into --out.
1,250 generated cases plus the fixed ones; deterministic (derandomize)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from fuzz_config import (
    BILLION_LAUGHS,
    COMMANDS,
    TINY,
    broken_text,
    invoke,
    mutated,
    runner,
    write_config,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from husai.cli import app


def fuzz(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_config")


OUTCOMES: dict[str, int] = {}


@fuzz(700)
@given(
    data=st.data(), command=st.sampled_from(sorted(COMMANDS)), fmt=st.sampled_from(["yaml", "toml"])
)
def test_mutated_configs(work: Path, data: st.DataObject, command: str, fmt: str) -> None:
    cfg = data.draw(mutated(COMMANDS[command]))
    path = write_config(work / "cfg.yaml", cfg, fmt)
    code = invoke(command, path, work / "out")
    OUTCOMES[f"mutated exit {code}"] = OUTCOMES.get(f"mutated exit {code}", 0) + 1


@fuzz(400)
@given(case=broken_text(), command=st.sampled_from(["run", "calibrate"]))
def test_broken_text(work: Path, case: tuple[str, bytes], command: str) -> None:
    suffix, blob = case
    path = work / f"broken{suffix}"
    path.write_bytes(blob)
    t0 = time.perf_counter()
    invoke(command, path, work / "out")
    assert time.perf_counter() - t0 < 5, "parsing a config must stay bounded"


def _other_run(work: Path) -> Path:
    d = work / "other_run"
    d.mkdir(exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({"config_hash": "0123abcd"}))
    return d


OUT_KINDS = ["new", "file", "other_run", "binary_manifest", "list_manifest", "deep_manifest"]


@fuzz(150)
@given(
    executor=st.one_of(st.sampled_from(["inline", "process", "ray"]), st.text(max_size=6)),
    workers=st.one_of(st.none(), st.integers(-3, 4)),
    address=st.one_of(st.none(), st.sampled_from(["ray://x:1", ""])),
    out_kind=st.sampled_from(OUT_KINDS),
)
def test_preflight_options(
    work: Path, executor: str, workers: int | None, address: str | None, out_kind: str
) -> None:
    cfg = write_config(work / "tiny.yaml", TINY, "yaml")
    out = work / f"out_{out_kind}"
    if out_kind == "file":
        out.write_text("not a directory")
    elif out_kind == "other_run":
        out = _other_run(work)
    elif out_kind != "new":
        out.mkdir(exist_ok=True)
        blob = {"binary": b"\xff\xfe\x00", "list": b"[1, 2]", "deep": b"[" * 3000}
        (out / "manifest.json").write_bytes(blob[out_kind.split("_")[0]])
    extra = ["--executor", executor]
    extra += ["--workers", str(workers)] if workers is not None else []
    extra += ["--address", address] if address is not None else []
    code = invoke("run", cfg, out, *extra)
    if out_kind in ("file", "other_run", "binary_manifest", "deep_manifest"):
        assert code == 2


def test_billion_laughs_is_bounded(work: Path) -> None:
    path = work / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    t0 = time.perf_counter()
    res = runner.invoke(app, ["run", str(path), "--dry-run", "--out", str(work / "o")])
    assert res.exit_code == 2 and "more than 100000 values" in res.output, res.output
    assert time.perf_counter() - t0 < 2


def test_yaml_tags_run_no_code(work: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = work / "tag.yaml"
    path.write_text(f"seeds: !!python/object/apply:os.system ['touch {marker}']\n")
    res = runner.invoke(app, ["run", str(path), "--dry-run", "--out", str(work / "o")])
    assert res.exit_code == 2 and "cannot parse config" in res.output
    assert not marker.exists()


def test_dry_run_refuses_what_run_refuses(work: Path) -> None:
    """The same pre-flight function: identical one-line refusals, before any work."""
    cfg = write_config(work / "tiny.yaml", TINY, "yaml")
    out = _other_run(work)
    for args in (["--out", str(out)], ["--out", str(work / "n"), "--workers", "0"]):
        dry = runner.invoke(app, ["run", str(cfg), "--dry-run", *args])
        real = runner.invoke(app, ["run", str(cfg), "--quiet", *args])
        assert dry.exit_code == real.exit_code == 2
        assert dry.output == real.output
    assert not (work / "n").exists()


def test_dry_run_plan_counts_done_jobs(work: Path) -> None:
    from husai.config import parse_run_config
    from husai.experiments.sae_job import SAE_JOB_VERSION

    run_cfg = parse_run_config(TINY)
    cfg = write_config(work / "tiny.yaml", TINY, "yaml")
    out = work / "partly_done"
    job = out / "saes" / "toy" / "topk"
    job.mkdir(parents=True)
    (job / "seed_1.safetensors").write_bytes(b"")
    spec = {
        "version": SAE_JOB_VERSION,
        "sae": run_cfg.saes[0].model_dump(mode="json"),
        "seeds": [1, 2, 3],
        "metrics": run_cfg.metrics.model_dump(mode="json"),
    }
    (job / "job.json").write_text(json.dumps({"spec": spec, "artifacts": ["seed_1.safetensors"]}))
    res = runner.invoke(app, ["run", str(cfg), "--dry-run", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 data set(s) × 2 SAE config(s) × 3 seeds = 2 jobs (6 SAEs)" in res.output
    assert "1 of 2 jobs already done" in res.output
    (job / "seed_1.safetensors").unlink()  # an artifact gone: not done
    res = runner.invoke(app, ["run", str(cfg), "--dry-run", "--out", str(out)])
    assert "0 of 2 jobs already done" in res.output


def test_sweep_needs_a_sweep_block_and_bounded_grid(work: Path) -> None:
    cfg = write_config(work / "tiny.yaml", TINY, "yaml")
    res = runner.invoke(app, ["sweep", str(cfg), "--dry-run", "--out", str(work / "o")])
    assert res.exit_code == 2 and "no `sweep` block" in res.output
    big = {"sweep": {"grid": {"k": list(range(1, 200)), "d_sae": list(range(200, 300))}}}
    path = work / "big.yaml"
    path.write_text(yaml.safe_dump(big))
    res = runner.invoke(app, ["sweep", str(path), "--dry-run", "--out", str(work / "o")])
    assert res.exit_code == 2 and "19900 points" in res.output
