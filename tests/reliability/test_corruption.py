"""A truncated or bit-flipped artifact is never read as valid: derived files (job outputs,
caches) are recomputed after one `note:` line naming the file, and the rerun's metrics.json
is byte-identical to the original; what husai cannot recompute (a run's manifest.json, the
metrics.json `husai report` renders) is refused with one line naming it (exit 2).

One shared tiny run (module fixture); each case corrupts a copy of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from husai.cli import app
from husai.errors import HusaiError

runner = CliRunner()
SMALL = {
    "toy": {
        "model": {"p": 13, "d_model": 16, "n_heads": 2, "d_mlp": 32},
        "train": {"train_frac": 0.7, "max_steps": 20, "check_every": 10},
    },
    "saes": [{"architecture": "topk", "d_sae": 16, "k": 4, "epochs": 2, "batch_size": 64}],
    "seeds": [1, 2],
    "metrics": {"n_bootstrap": 100, "functional_latents": 8},
}
MODES = ("truncate", "flip_payload", "flip_header")
JOB = "saes/toy/topk"


def corrupt(path: Path, mode: str) -> None:
    """Truncate a file to half, or flip one bit: in a safetensors file in the last tensor
    byte (payload) or in the middle of its JSON header; in a JSON file in its last digit
    (payload: still parses) or in its first byte (header: no longer parses)."""
    data = bytearray(path.read_bytes())
    if mode == "truncate":
        data = data[: len(data) // 2]
    elif path.suffix == ".safetensors":
        n = int.from_bytes(data[:8], "little")
        data[-1 if mode == "flip_payload" else 8 + n // 2] ^= 0x01
    elif mode == "flip_payload":  # '0'…'9' xor 1 is still a digit
        i = max(i for i, b in enumerate(data) if chr(b).isdigit())
        data[i] ^= 0x01
    else:
        data[0] ^= 0x01
    assert bytes(data) != path.read_bytes()
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module's tiny models (on a busy machine, thread hand-offs
    cost more than the arithmetic); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """tmp/{small.yaml, run/, cache/}: one finished run."""
    root = tmp_path_factory.mktemp("corrupt_base")
    (root / "small.yaml").write_text(yaml.safe_dump(SMALL))
    res = runner.invoke(app, _run_args(root))
    assert res.exit_code == 0, res.output
    return root


def _run_args(root: Path) -> list[str]:
    cfg, out, cache = root / "small.yaml", root / "run", root / "cache"
    return ["run", str(cfg), "--out", str(out), "--cache-dir", str(cache), "--quiet"]


def _copy(base: Path, tmp_path: Path) -> Path:
    root = tmp_path / "case"
    shutil.copytree(base, root, symlinks=True)
    return root


def _toy_cache(root: Path) -> Path:
    (entry,) = (root / "cache" / "toy").iterdir()
    return entry


# kind → file (relative to the case root); all recomputed on rerun
RECOMPUTED = {
    "job_json": lambda r: r / "run" / JOB / "job.json",
    "sae_weights": lambda r: r / "run" / JOB / "seed_1" / "sae_weights.safetensors",
    "sae_cfg": lambda r: r / "run" / JOB / "seed_2" / "cfg.json",
    "toy_cache_weights": lambda r: _toy_cache(r) / "model.safetensors",
    "toy_cache_config": lambda r: _toy_cache(r) / "config.json",
}
# files every run rewrites before anything reads them (never read, so no note)
REWRITTEN = (
    "data/toy/activations.safetensors",
    "toy_model/model.safetensors",
    "toy_model/config.json",
    "metrics.json",
)


@pytest.fixture
def rerun(monkeypatch: pytest.MonkeyPatch):
    """`husai run` again on a case's copy, without redrawing the figures (time)."""
    import husai.report

    monkeypatch.setattr(husai.report, "render", lambda run_dir: None)
    return lambda root: runner.invoke(app, _run_args(root))


def _same_content(a: Path, b: Path) -> bool:
    """Same bytes; for safetensors, same tensors and metadata (its header's metadata order
    is not fixed)."""
    if a.suffix != ".safetensors":
        return a.read_bytes() == b.read_bytes()
    from husai.io import load_tensors

    (ta, ma), (tb, mb) = load_tensors(a), load_tensors(b)
    return ma == mb and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def _same_metrics(root: Path, base: Path) -> bool:
    return (root / "run" / "metrics.json").read_bytes() == (
        base / "run" / "metrics.json"
    ).read_bytes()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(RECOMPUTED))
def test_corrupt_derived_file_is_recomputed_with_a_note(
    base: Path, tmp_path: Path, rerun, kind: str, mode: str
) -> None:
    root = _copy(base, tmp_path)
    target = RECOMPUTED[kind](root)
    original = target.read_bytes()
    corrupt(target, mode)
    res = rerun(root)
    assert res.exit_code == 0, res.output
    notes = [line for line in res.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and str(target) in notes[0], res.stderr
    assert _same_metrics(root, base)
    assert target.read_bytes() == original  # recomputed bit for bit


@pytest.mark.parametrize("mode", MODES)
def test_corrupt_rewritten_files_are_replaced(base: Path, tmp_path: Path, rerun, mode: str) -> None:
    root = _copy(base, tmp_path)
    for rel in REWRITTEN:
        corrupt(root / "run" / rel, mode)
    res = rerun(root)
    assert res.exit_code == 0, res.output
    assert "note: " not in res.stderr
    for rel in REWRITTEN:
        assert _same_content(root / "run" / rel, base / "run" / rel), rel
    assert _same_metrics(root, base)


def _refused(res, target: Path) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(target) in lines[0], lines


@pytest.mark.parametrize("mode", MODES)
def test_corrupt_manifest_is_refused_by_run(base: Path, tmp_path: Path, mode: str) -> None:
    root = _copy(base, tmp_path)
    target = root / "run" / "manifest.json"
    corrupt(target, mode)
    _refused(runner.invoke(app, _run_args(root)), target)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["metrics.json", "manifest.json"])
def test_corrupt_run_files_are_refused_by_report(
    base: Path, tmp_path: Path, name: str, mode: str
) -> None:
    root = _copy(base, tmp_path)
    target = root / "run" / name
    corrupt(target, mode)
    before = (root / "run" / "report.md").read_bytes()
    _refused(runner.invoke(app, ["report", str(root / "run")]), target)
    assert (root / "run" / "report.md").read_bytes() == before


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["sae_weights.safetensors", "cfg.json"])
def test_corrupt_sae_is_refused_on_load(base: Path, tmp_path: Path, name: str, mode: str) -> None:
    from husai.sae import load

    seed = tmp_path / "seed_1"
    shutil.copytree(base / "run" / JOB / "seed_1", seed)
    corrupt(seed / name, mode)
    with pytest.raises(HusaiError) as e:
        load(seed)
    assert name in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("mode", MODES)
def test_corrupt_activation_file_is_refused_on_load(base: Path, tmp_path: Path, mode: str) -> None:
    """An activation file as a user input (`source: file`, `husai train-sae`)."""
    from husai.activations import load_activations

    path = tmp_path / "acts.safetensors"
    shutil.copy(base / "run" / "data" / "toy" / "activations.safetensors", path)
    load_activations(path)  # intact: reads
    corrupt(path, mode)
    with pytest.raises(HusaiError) as e:
        load_activations(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


# ---- every single-bit flip of a sealed header or record ---------------------------------


def _flips(data: bytes, start: int, stop: int):
    """`data` with one bit flipped, for every bit of bytes [start, stop)."""
    for i in range(start, stop):
        for bit in range(8):
            d = bytearray(data)
            d[i] ^= 1 << bit
            yield bytes(d)


def test_every_bit_flip_of_a_sealed_safetensors_header_is_refused(tmp_path: Path) -> None:
    """Including flips in the seal's own key name (`husai_sha256` → `husai_sha257`), which
    would otherwise read as an unsealed file (safetensors orders the metadata at random, so
    the middle byte of the header, which `corrupt` flips, lands on a different key per run)."""
    from husai.activations import load_activations, save_activations

    path = tmp_path / "a.safetensors"
    save_activations(path, torch.randn(3, 2), {"source": "toy", "hook": "h", "model_hash": "ab"})
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    passed = []
    for i, flipped in enumerate(_flips(data, 8, 8 + n)):
        path.write_bytes(flipped)
        try:
            load_activations(path)
            passed.append(divmod(i, 8))
        except HusaiError:
            pass
    assert passed == [], f"(header byte, bit) flips that still load: {passed}"


def test_every_byte_flip_of_a_saved_sae_cfg_is_refused(base: Path, tmp_path: Path) -> None:
    """Bit 0 of every byte of a husai SAE's cfg.json, including the names of husai's block
    and its seals (`husai` → `iusai` would otherwise read as a third-party SAE, unchecked)."""
    from husai.sae import load

    seed = tmp_path / "seed_1"
    shutil.copytree(base / "run" / JOB / "seed_1", seed)
    cfg = seed / "cfg.json"
    data = cfg.read_bytes()
    passed = []
    for i in range(len(data)):
        cfg.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :])
        try:
            load(seed)
            passed.append((i, data[max(0, i - 8) : i + 8].decode()))
        except HusaiError:
            pass
    assert passed == [], f"byte flips that still load: {passed}"


def test_every_bit_flip_of_a_sealed_record_fails_its_seal(tmp_path: Path) -> None:
    from husai.integrity import read_sealed, seal
    from husai.io import write_json

    path = tmp_path / "r.json"
    write_json(path, seal({"key": "k", "result": {"ev": 0.5, "n": 3}, "artifacts": {}}))
    assert read_sealed(path)[1] is True
    data = path.read_bytes()
    passed = []
    for i, flipped in enumerate(_flips(data, 0, len(data))):
        path.write_bytes(flipped)
        try:
            if read_sealed(path)[1] is not False:
                passed.append(divmod(i, 8))
        except HusaiError:
            pass
    assert passed == [], f"(byte, bit) flips not caught: {passed}"


# ---- activation stores (the LM data sets' cache and run-directory links) ----------------


def _store(path: Path) -> None:
    from husai.store import StoreWriter

    w = StoreWriter(path, d=4, hook_name="blocks.0.hook_resid_post", n_shards=3)
    for k in range(3):
        w.write(k, torch.arange(24, dtype=torch.float32).reshape(6, 4) + k)
    w.finish()


@pytest.fixture(scope="session")
def store_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "s"
    _store(path)
    return path


STORE_FILES = ("shard_00001.safetensors", "index.json")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", STORE_FILES)
def test_corrupt_store_is_refused_on_read_and_recomputed_by_its_writer(
    store_base: Path, tmp_path: Path, name: str, mode: str, capsys: pytest.CaptureFixture
) -> None:
    from husai.store import ActivationStore

    path = tmp_path / "s"
    shutil.copytree(store_base, path)
    corrupt(path / name, mode)
    with pytest.raises(HusaiError) as e:
        ActivationStore(path).verify()
    assert name in str(e.value) and "\n" not in str(e.value)
    capsys.readouterr()
    _store(path)  # the writer of the same store, as a resumed extraction opens it
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: ") and name in notes[0], notes
    for f in sorted(store_base.iterdir()):
        assert (path / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", STORE_FILES)
def test_corrupt_run_store_link_is_linked_again(
    store_base: Path, tmp_path: Path, name: str, mode: str, capsys: pytest.CaptureFixture
) -> None:
    from husai.experiments.lm_data import _link_tree, _run_store

    cached, target = tmp_path / "cache", tmp_path / "run" / "store"
    shutil.copytree(store_base, cached)
    _link_tree(cached, target)
    (target / name).unlink()  # a copy of its own (a hard link would corrupt the cache too)
    shutil.copy2(cached / name, target / name)
    corrupt(target / name, mode)
    capsys.readouterr()
    store = _run_store(cached, target)
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: ") and str(target) in notes[0], notes
    assert (target / name).samefile(cached / name)
    store.verify()


# ---- the converted packaged LM (<cache>/models/) ----------------------------------------


@pytest.fixture
def fake_packaged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """packaged_model_dir with a stand-in GGUF file and a conversion that writes a tiny
    checkpoint; returns the list of conversions made."""
    import types

    from husai.io import save_tensors, write_json
    from husai.lm import packaged as packaged_mod

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    made: list[Path] = []

    def convert(_gguf: Path, out: Path) -> None:
        made.append(out)
        save_tensors(out / "model.safetensors", {"w": torch.arange(64.0)}, {"format": "pt"})
        write_json(out / "config.json", {"model_type": "llama", "hidden_size": 8})

    monkeypatch.setattr(packaged_mod, "packaged_file", lambda name: gguf)
    monkeypatch.setattr(packaged_mod, "metadata", types.SimpleNamespace(version=lambda d: "0"))
    monkeypatch.setattr(packaged_mod, "_convert", convert)
    return made


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "husai_files.json"])
def test_corrupt_converted_model_is_converted_again(
    fake_packaged: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture, name: str, mode: str
) -> None:
    from husai.lm import packaged_model_dir

    cache = tmp_path / "models"
    out = packaged_model_dir("smollm2", cache)
    originals = {f.name: f.read_bytes() for f in out.iterdir()}
    assert packaged_model_dir("smollm2", cache) == out and len(fake_packaged) == 1  # reused
    corrupt(out / name, mode)
    capsys.readouterr()
    assert packaged_model_dir("smollm2", cache) == out
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: ") and name in notes[0], notes
    assert len(fake_packaged) == 2
    assert {f.name: f.read_bytes() for f in out.iterdir()} == originals


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN"])
def test_sealed_cfg_with_a_non_finite_value_is_refused(
    base: Path, tmp_path: Path, value: str
) -> None:
    """A sealed cfg.json whose field became ±inf / NaN (JSON has no canonical form for them,
    so its seal cannot be recomputed) is refused as corrupt, not a ValueError traceback;
    found by test_fuzz_files (`apply_b_dec_to_input: inf`)."""
    from husai.integrity import read_sealed, seal
    from husai.sae import load

    seed = tmp_path / "seed_1"
    shutil.copytree(base / "run" / JOB / "seed_1", seed)
    cfg = json.loads((seed / "cfg.json").read_text())
    cfg["apply_b_dec_to_input"] = json.loads(value)
    (seed / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(HusaiError, match="cfg.json: does not match its checksum"):
        load(seed)
    record = tmp_path / "record.json"
    record.write_text(json.dumps({**seal({"x": 1.0}), "x": json.loads(value)}))
    assert read_sealed(record)[1] is False
