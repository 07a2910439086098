"""File fuzzing through the CLI (in-process): broken activation files, SAE directories
(SAELens/husai, sparsify, dictionary_learning), activation stores and toy checkpoints exit 2
with one `error:` line naming the input, in bounded memory, and never unpickle (the marker
file a pickle would create never appears). Deterministic (derandomize)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from fuzz_config import runner
from fuzz_files import MARKER, PICKLES, WHAT, Bases, cases, make_bases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from husai.cli import app

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
MAX_GROWTH_MB = 300  # peak RSS growth over all the cases (a 10^12-element header: 4 TB)


def vm_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5), so the peak is this test's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Bases:
    return make_bases(tmp_path_factory.mktemp("fuzz_bases"))


def check(case_args: list[str], names: str, must_fail: bool) -> int:
    res = runner.invoke(app, case_args)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"uncaught {type(res.exception).__name__}: {res.exception}")
    assert res.exit_code in ((2,) if must_fail else (0, 2)), (res.exit_code, res.output)
    if res.exit_code == 2:
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), res.output
        assert names in lines[0], f"the error does not name {names}: {lines[0]}"
    return res.exit_code


@pytest.fixture(scope="module")
def peak(bases: Bases):
    MARKER.unlink(missing_ok=True)
    reset_peak()
    before = vm_kb("VmRSS")
    yield
    after = vm_kb("VmHWM")
    assert not MARKER.exists(), "a pickle was unpickled: code ran"
    if before is not None and after is not None:
        assert (after - before) / 1024 < MAX_GROWTH_MB, f"peak RSS grew {(after - before) >> 10} MB"


@settings(
    max_examples=800,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_broken_files_exit_2_one_line(bases: Bases, peak: None, data: st.DataObject) -> None:
    where = Path(tempfile.mkdtemp(dir=bases.root))
    try:
        case = data.draw(cases(bases, where))
        try:
            check(case.args, case.names, case.must_fail)
        except AssertionError as e:
            raise AssertionError(f"{case.kind} {WHAT}: {e}") from None
        assert not MARKER.exists(), f"{case.kind}: a pickle was unpickled"
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.parametrize("payload", sorted(PICKLES))
@pytest.mark.parametrize("name", ["ae.pt", "acts.pt", "acts.pkl", "acts.bin"])
def test_pickles_never_run(bases: Bases, tmp_path: Path, payload: str, name: str) -> None:
    MARKER.unlink(missing_ok=True)
    if name == "ae.pt":
        (tmp_path / "config.json").write_text('{"trainer": {"dict_class": "AutoEncoderTopK"}}')
        (tmp_path / name).write_bytes(PICKLES[payload])
        args, names = ["compare", str(tmp_path), str(bases.sae)], str(tmp_path)
    else:
        f = tmp_path / name
        f.write_bytes(PICKLES[payload])
        args, names = ["train-sae", str(f), "--out", str(tmp_path / "o"), "--seeds", "1,2"], str(f)
    check(args, names, must_fail=True)
    assert not MARKER.exists()


def test_valid_bases_pass(bases: Bases, tmp_path: Path) -> None:
    """The cases' starting points are valid: the refusals above are the mutations'."""
    from fuzz_files import TRAIN

    out = str(tmp_path / "o")
    assert check(["train-sae", str(bases.acts), "--out", out, *TRAIN], "", False) == 0
    assert check(["train-sae", str(bases.store), "--out", out + "2", *TRAIN], "", False) == 0
    assert check(["compare", str(bases.sae), str(bases.sparsify)], "", False) == 0
    assert check(["extract", str(bases.toy), "--out", str(tmp_path / "x.st")], "", False) == 0


@pytest.mark.parametrize(
    ("kind", "edit"),
    [
        ("sae", lambda c: c["husai"].update(config=1.5)),  # was AttributeError
        ("sae", lambda c: c.update(d_sae=17)),  # was ignored (16 latents)
        ("sparsify", lambda c: c.update(k=8.5)),  # was read as k = 8
        ("store", lambda c: c.update(dtype=["float32"])),  # was TypeError (unhashable)
        ("store", lambda c: c["shards"][0].update(file="../acts.safetensors")),  # outside
    ],
)
def test_regressions(bases: Bases, tmp_path: Path, kind: str, edit) -> None:  # noqa: ANN001
    """Cases the fuzzers found (benchmarks/fuzz_long.py), kept as fixed examples."""
    import json

    from fuzz_files import TRAIN

    from husai.store import content_hash

    d = tmp_path / kind
    shutil.copytree(getattr(bases, kind), d)
    name = "index.json" if kind == "store" else "cfg.json"
    cfg = json.loads((d / name).read_text())
    edit(cfg)
    if kind == "store":
        cfg["content_hash"] = content_hash(cfg)
    (d / name).write_text(json.dumps(cfg))
    if kind == "store":
        args = ["train-sae", str(d), "--out", str(tmp_path / "o"), *TRAIN]
    else:
        args = ["compare", str(d), str(bases.sae)]
    check(args, str(d), must_fail=True)
