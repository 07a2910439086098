"""Resource faults: a full disk (injected at spread writes, and a real small file system), a
read-only output directory, Ctrl-C and SIGTERM → one line, exit status ≠ 0, nothing
half-written left behind; the rerun resumes and ends byte-identical."""

from __future__ import annotations

import fnmatch
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli import husai
from typer.testing import CliRunner

from husai import faults
from husai.cli import INTERRUPTED, app
from husai.lock import LOCK_FILE

runner = CliRunner()


def temp_files(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in r.rglob("*.tmp*")]


def invoke(
    args: list[str], monkeypatch: pytest.MonkeyPatch, fault: str | None, glob: str = ""
) -> object:
    monkeypatch.setattr(faults, "_count", 0)  # a fresh process's write counts
    monkeypatch.setattr(faults, "_counts", {"write": 0, "copy": 0})
    for var, value in (("HUSAI_FAULT", fault), ("HUSAI_FAULT_PATH", glob)):
        if value:
            monkeypatch.setenv(var, value)
        else:
            monkeypatch.delenv(var, raising=False)
    return runner.invoke(app, args)


# one chain of resumed runs of the tiny config, (fault, HUSAI_FAULT_PATH) at: the toy cache,
# the data set, an SAE seed, a job record, metrics, a figure, the report
CHAIN = [
    ("enospc@1:start", "*/model.safetensors"),
    ("enospc@1:partial", "*/toy/*/config.json"),
    ("enospc@1:written", "*/seed_2/sae_weights.safetensors"),
    ("erofs@1", "*/topk/job.json"),
    ("enospc@1:written", "*/metrics.json"),
    ("enospc@2", "*/figures/*"),
    ("interrupt@1:written", "*/report.md"),
]


def test_injected_faults_along_a_run_then_resume(
    tiny_run: Path, tiny_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["run", str(tiny_config), "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    for fault, glob in CHAIN:
        res = invoke(args, monkeypatch, fault, glob)
        lines = res.output.strip().splitlines()  # type: ignore[attr-defined]
        assert len(lines) == 1, (fault, res.output)  # type: ignore[attr-defined]
        if fault.startswith("interrupt"):
            assert res.exit_code == 130 and lines[0] == INTERRUPTED  # type: ignore[attr-defined]
        else:
            want = "No space left on device" if "enospc" in fault else "Read-only file system"
            assert res.exit_code == 2 and want in lines[0], (fault, lines)  # type: ignore[attr-defined]
            named = lines[0].removeprefix("error: ").split(": ")[0]
            assert fnmatch.fnmatchcase(named, glob), (fault, lines)  # the file, not its temp
        assert not temp_files(out, cache), fault
        assert not (out / "metrics.json").exists() or "figures" in glob or "report" in glob
    res = invoke(args, monkeypatch, None)
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    assert (out / "metrics.json").read_bytes() == (tiny_run / "metrics.json").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["jobs"]["ran"] == [] and manifest["trained_this_run"] == []


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs (needs root and mount; CI's machine has both)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)])
    if ok.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the injected faults cover ENOSPC")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_real_full_disk_then_resume_after_space_is_freed(
    small_fs: Path, tiny_run: Path, tiny_config: Path, tmp_path: Path
) -> None:
    out = small_fs / "run"
    args = ["run", str(tiny_config), "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    full = husai(*args, "--quiet")
    _, err = full.communicate(timeout=300)
    assert full.returncode == 2, err
    assert err.count("\n") == 1 and "No space left on device" in err, err
    assert not temp_files(small_fs)
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_fs)], check=True)
    again = husai(*args, "--quiet")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert (out / "metrics.json").read_bytes() == (tiny_run / "metrics.json").read_bytes()


def test_read_only_output_directory(small_fs: Path, tiny_config: Path) -> None:
    (small_fs / "run").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    res = runner.invoke(app, ["run", str(tiny_config), "--out", str(small_fs / "run")])
    assert res.exit_code == 2
    assert res.output.strip() == (
        f"error: {small_fs / 'run'}: cannot create its lock file (Read-only file system)"
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly_and_rerun_resumes(
    sig: signal.Signals, tiny_run: Path, tiny_config: Path, tmp_path: Path
) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["run", str(tiny_config), "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    proc = husai(*args)
    deadline = time.monotonic() + 60
    lock = out / LOCK_FILE
    while f"pid {proc.pid} " not in (lock.read_text() if lock.is_file() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip() == INTERRUPTED
    assert not temp_files(out, cache) and not (out / "metrics.json").exists()
    if sig == signal.SIGTERM:
        return  # the resume after a stop is the same as after SIGINT
    again = husai(*args)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert (out / "metrics.json").read_bytes() == (tiny_run / "metrics.json").read_bytes()


def test_a_killed_pool_worker_is_one_line_and_the_rerun_resumes(
    tiny_run: Path, tiny_config: Path, tmp_path: Path
) -> None:
    from _cli import husai_env

    out = tmp_path / "run"
    args = ["run", str(tiny_config), "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    args += ["--quiet", "--executor", "process", "--workers", "2"]
    # the workers inherit the fault: the one training relu dies at its first weights file
    dying = husai(
        *args, env=husai_env(HUSAI_FAULT="kill@1", HUSAI_FAULT_PATH="*relu/seed_1/sae_weights*")
    )
    _, err = dying.communicate(timeout=300)
    assert dying.returncode == 2, err
    assert err.strip().startswith("error: a worker process died") and err.count("\n") == 1, err
    again = husai(*args)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert (out / "metrics.json").read_bytes() == (tiny_run / "metrics.json").read_bytes()
