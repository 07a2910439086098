"""One writer per run directory: a second husai on a directory in use stops at once with
one line naming the other process; the first is unaffected; a killed holder's lock is
recognised as stale; shared caches wait instead of failing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli import husai, husai_env
from typer.testing import CliRunner

from husai.cli import app
from husai.errors import HusaiError
from husai.lock import LOCK_FILE, directory_lock

runner = CliRunner()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "{cfg}", "--out", "{dir}", "--quiet"],
        ["sweep", "{sweep}", "--out", "{dir}", "--quiet"],
        ["calibrate", "--out", "{dir}"],
        ["train-sae", "{acts}", "--out", "{dir}"],
        ["extract", "--model", "smollm2", "--layer", "0", "--out", "{dir}"],
    ],
    ids=lambda a: a[0],
)
def test_second_writer_stops_with_one_line(
    argv: list[str], tmp_path: Path, tiny_config: Path
) -> None:
    import torch
    import yaml

    from husai.activations import save_activations

    d = tmp_path / "busy"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump({"sweep": {"base": {"architecture": "topk"}, "grid": {"k": [2]}}})
    )
    acts = save_activations(tmp_path / "acts.safetensors", torch.randn(64, 8), {})
    args = [a.format(cfg=tiny_config, dir=d, sweep=sweep, acts=acts) for a in argv]
    with directory_lock(d, "run"):
        before = sorted(p.name for p in d.iterdir())
        res = runner.invoke(app, args)
        after = sorted(p.name for p in d.iterdir())
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and f"pid {os.getpid()} (husai run" in lines[0], res.output
    assert "in use by another husai process" in lines[0]
    assert before == after == [LOCK_FILE]  # it wrote nothing


def test_concurrent_runs_first_is_unaffected(
    tiny_run: Path, tiny_config: Path, tmp_path: Path
) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    first = husai("run", str(tiny_config), "--out", str(out), "--cache-dir", str(cache), "--quiet")
    lock = out / LOCK_FILE
    deadline = time.monotonic() + 60
    while f"pid {first.pid} " not in (lock.read_text() if lock.is_file() else ""):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = husai("run", str(tiny_config), "--out", str(out), "--cache-dir", str(cache))
    _, err2 = second.communicate(timeout=60)
    _, err1 = first.communicate(timeout=300)
    assert second.returncode == 2 and err2.strip().count("\n") == 0, err2
    assert f"in use by another husai process (pid {first.pid} (husai run" in err2
    assert first.returncode == 0, err1
    assert (out / "metrics.json").read_bytes() == (tiny_run / "metrics.json").read_bytes()


def test_stale_lock_of_a_killed_process_is_taken(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "run"
    code = (
        "import os, signal; from pathlib import Path; from husai.lock import directory_lock\n"
        f"with directory_lock(Path({str(d)!r}), 'run'):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    dead = subprocess.run([sys.executable, "-c", code], env=husai_env(), timeout=60)
    assert dead.returncode == -9
    assert (d / LOCK_FILE).read_text().startswith("pid ")  # its record is left behind
    with directory_lock(d, "run"):
        assert (d / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")
    err = capfd.readouterr().err
    assert "stale lock of a stopped process (pid" in err
    with directory_lock(d, "run"):  # released cleanly: no note the second time
        pass
    assert "stale" not in capfd.readouterr().err


def test_cache_lock_waits_for_the_holder(tmp_path: Path) -> None:
    d = tmp_path / "cache_entry"
    code = (
        "import time, sys; from pathlib import Path; from husai.lock import directory_lock\n"
        f"with directory_lock(Path({str(d)!r}), 'run'):\n"
        "    print('held', flush=True); time.sleep(1.5)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], env=husai_env(), stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(HusaiError, match="in use by another husai process"):
        with directory_lock(d, "run"):
            pass
    t0 = time.monotonic()
    with directory_lock(d, "run (cache)", wait=True):
        waited = time.monotonic() - t0
    holder.wait(timeout=30)
    assert waited > 1.0  # it waited out the holder's 1.5 s instead of failing


def test_unwritable_lock_location_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(HusaiError, match="cannot create its lock file"):
        with directory_lock(blocker / "run", "run"):
            pass
