"""An LM set's OOD corpus (`lm.ood`): EV on its tokens against a hand computation, the OOD
gate decided (not missing), the consensus block on an LM set, and the one-line errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import yaml
from _lm_text import WORDS
from typer.testing import CliRunner

from husai.cli import app
from husai.config import parse_run_config
from husai.errors import HusaiError
from husai.experiments.run import run
from husai.gates.evaluate import evaluate
from husai.gates.policy import DEFAULT_POLICY
from husai.io import load_tensors
from husai.sae import load

CTX = 16


def _data(model_dir: Path, corpus: Path, ood: str, **lm: object) -> dict:
    return {
        "name": "tiny",
        "source": "lm",
        "lm": {
            "model": str(model_dir),
            "layer": 1,
            "corpus": str(corpus),
            "context_size": CTX,
            "train_tokens": CTX * 32,
            "eval_contexts": 4,
            "batch_size": 4,
            "contexts_per_shard": 8,
            "ood": ood,
            "ood_contexts": 3,
            **lm,
        },
    }


def _config(model_dir: Path, corpus: Path, ood: str) -> dict:
    sae = {"architecture": "topk", "k": 4, "d_sae": 32, "epochs": 2, "batch_size": 64}
    return {
        "data": [_data(model_dir, corpus, ood)],
        "saes": [sae],
        "seeds": [1, 2, 3],
        "metrics": {"n_bootstrap": 100, "consensus_refit_epochs": 1},
    }


@pytest.fixture(scope="module")
def ood_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Documents of one word repeated: far from the training corpus's word runs."""
    f = tmp_path_factory.mktemp("ood") / "ood.txt"
    f.write_text("\n\n".join(" ".join([WORDS[(7 * i) % 40]] * 40) for i in range(6)))
    return f


def test_lm_ood_ev_by_hand_and_the_gate_decides(
    tmp_path: Path, model_dir: Path, corpus: Path, ood_corpus: Path
) -> None:
    out = tmp_path / "run"
    metrics = run(parse_run_config(_config(model_dir, corpus, str(ood_corpus))), out)
    ds = metrics["datasets"]["tiny"]
    assert ds["ood"]["n_contexts"] == 3 and ds["ood"]["corpus"] == "ood.txt"
    arch = ds["architectures"]["topk"]
    ood = arch["quality"]["ood"]
    assert ood["n"] == 3 * (CTX - 1) and ood["kind"] == "ood.txt"
    # by hand: the block's output (hidden_states[2]) at every position but the first, × scale
    from husai.lm import load_model

    ids = load_tensors(out / ds["ood"]["artifact"])[0]["input_ids"]
    model = load_model(model_dir, dtype=torch.float32)
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[2]
    x = hidden[:, 1:].reshape(-1, hidden.shape[-1]) * ds["normalization"]["scale"]
    for seed, rel in arch["saes"].items():
        sae = load(out / rel)
        with torch.no_grad():
            x_hat = sae(x)[0]
        ev = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        got = ood["per_seed"][seed]["explained_variance"]
        assert got == pytest.approx(float(ev), abs=1e-4)
        held_out = arch["quality"]["per_seed"][seed]["explained_variance"]
        drop = ood["explained_variance_drop"]["per_seed"][seed]
        assert drop == pytest.approx(held_out - got, abs=1e-9)
    gate = {g["name"]: g for g in evaluate(DEFAULT_POLICY, metrics)["gates"]}["ood_drop"]
    assert gate["status"] in ("pass", "fail") and gate["evidence"]
    assert "the corpus `ood.txt`" in (out / "report.md").read_text()
    # the consensus block on an LM set: scored on the held-out tokens
    c = arch["consensus"]
    assert c["n_seeds"] == 3 and set(c["trained"]["found_in_at_least"]) == {"2", "3"}
    if "quality" in c["dictionary"]:
        assert c["dictionary"]["quality"]["n_rows"] == 4 * (CTX - 1)


def test_short_ood_corpus_is_one_line_exit_2(tmp_path: Path, model_dir: Path, corpus: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("w1 w2 w3")
    cfg = _config(model_dir, corpus, str(short))
    with pytest.raises(HusaiError, match="data tiny: ood corpus: .*shorter than one context"):
        run(parse_run_config(cfg), tmp_path / "r", cache_dir=tmp_path / "c")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(
        app, ["run", str(path), "--out", str(tmp_path / "r2"), "--cache-dir", str(tmp_path)]
    )
    assert r.exit_code == 2
    errors = [line for line in r.output.splitlines() if "error" in line]  # (+ transformers' bar)
    assert len(errors) == 1 and "ood corpus: short.txt: 3 tokens, shorter than one" in errors[0]
    data = _data(model_dir, corpus, str(short), layers=[0, 1])
    del data["lm"]["layer"]
    with pytest.raises(HusaiError, match="ood is not measured for a multi-layer set"):
        parse_run_config({"data": [data], "saes": [{"architecture": "routesae"}]})


def test_stdlib_code_corpus_is_code_without_docstrings() -> None:
    from husai.lm import stdlib_code_corpus

    c = stdlib_code_corpus(20_000)
    assert sum(map(len, c.documents)) >= 20_000 and c.name == "python-stdlib-code"
    for doc in c.documents:
        tree = ast.parse(doc)
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Module | ast.ClassDef)]
        nodes += [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        assert all(ast.get_docstring(n) is None for n in nodes)
