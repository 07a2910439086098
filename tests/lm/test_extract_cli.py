"""`husai extract --model`: a tiny random model saved with save_pretrained, a text file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _lm_text import words
from _lm_tiny import N_LAYERS
from typer.testing import CliRunner

from husai.cli import app
from husai.store import ActivationStore

runner = CliRunner()


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("text") / "corpus.txt"
    f.write_text("\n\n".join(words(7 * i, 30) for i in range(6)))
    return f


def _extract(model_dir: Path, text: Path, out: Path, *extra: str):
    args = ["extract", "--model", str(model_dir), "--text", str(text), "--out", str(out)]
    return runner.invoke(app, [*args, "--context-size", "16", "--device", "cpu", *extra])


def test_extract_two_layers_into_stores(model_dir: Path, text: Path, tmp_path: Path) -> None:
    extra = ["--layer", "0", "--layer", "2", "--normalize", "expected_average_only_in"]
    res = _extract(model_dir, text, tmp_path / "s", *extra, "--dtype", "bfloat16")
    assert res.exit_code == 0, res.output
    assert "tokens/s" in res.output and "dropped_first" in res.output
    for layer in (0, 2):
        hook = f"blocks.{layer}.hook_resid_post"
        store = ActivationStore(tmp_path / "s" / hook)
        assert hook in res.output and str(tmp_path / "s" / hook) in res.output
        assert store.dtype == "bfloat16" and store.d == 32
        assert store.n_tokens == store.metadata["n_contexts"] * 15  # position 0 dropped
        assert store.metadata["context_size"] == 16 and store.scale != 1.0
        n = store.metadata["n_contexts"]
    # 6 documents of 30 words + 5 separators = 185 tokens → 12 contexts of BOS + 15
    assert n == 12 and f"{n * 16} tokens through the model ({n} contexts)" in res.output


def test_extract_one_site_keep_first(model_dir: Path, text: Path, tmp_path: Path) -> None:
    extra = ["--layer", "1", "--site", "mlp_out", "--keep-first", "--keep-bos", "--n-contexts", "3"]
    res = _extract(model_dir, text, tmp_path / "one", *extra)
    assert res.exit_code == 0, res.output
    store = ActivationStore(tmp_path / "one")
    assert store.hook_name == "blocks.1.hook_mlp_out" and store.n_tokens == 3 * 16
    assert store.counts["dropped_first"] == 0 and store.counts["dropped_bos"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "0", "--site", "nope"], "unknown site 'nope'"),
        (["--layer", str(N_LAYERS)], f"layer {N_LAYERS} out of range"),
        (["--layer", "0", "--context-size", "500"], "shorter than one context"),
        (["--layer", "0", "--dtype", "int8"], "store dtype 'int8'"),
        (["--layer", "0", "--normalize", "l2"], "unknown normalize"),
        ([], "at least one --layer"),
    ],
)
def test_bad_input_is_one_line(
    model_dir: Path, text: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    res = _extract(model_dir, text, tmp_path / "bad", *args)
    assert res.exit_code == 2 and message in res.output, res.output
    # one error line (transformers may show its weight-loading bar before it)
    assert [ln for ln in res.output.splitlines() if "error" in ln] == [
        f"error: {res.output.split('error: ')[1].strip()}"
    ]


def test_bad_model_corpus_and_device(model_dir: Path, text: Path, tmp_path: Path) -> None:
    res = _extract(tmp_path, text, tmp_path / "x", "--layer", "0")
    assert res.exit_code == 2 and "not a model directory" in res.output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    res = _extract(model_dir, empty, tmp_path / "x", "--layer", "0")
    assert res.exit_code == 2 and "empty corpus" in res.output
    if not torch.cuda.is_available():
        res = _extract(model_dir, text, tmp_path / "x", "--layer", "0", "--device", "cuda")
        assert res.exit_code == 2 and "no CUDA GPU is available" in res.output
    res = runner.invoke(app, ["extract", "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "--model" in res.output
