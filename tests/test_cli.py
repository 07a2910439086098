"""The CLI: thin commands, one-line errors with exit status 2, nothing written on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from husai.cli import app

runner = CliRunner()


def _bad(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("saes: [{architecture: topk, d_sae: 16, k: 32}]", "k (32) must be ≤ d_sae (16)"),
        ("saes: [{architecture: nope}]", "unknown architecture 'nope'"),
        ("activations: {hook: blocks.0.nope}", "unknown hook 'blocks.0.nope'"),
        ("toy: {model: {p: 24, op: mul}}", "p (24) must be prime"),
        ("toy: {model: {d_model: -4}}", "toy.model.d_model"),
        ("seeds: [1]", "at least 2 seeds"),
        ("bogus: 1", "bogus"),
        ("saes: [{architecture: topk, epochs: 0}]", "saes.0.epochs"),
    ],
)
def test_invalid_config_is_one_line_exit_2_nothing_written(tmp_path, text, needle) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(_bad(tmp_path, text)), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_config_file(tmp_path) -> None:
    res = runner.invoke(app, ["run", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and "config file not found" in res.output


def test_run_help_documents_config_fields() -> None:
    res = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for field in ("toy.model.p", "saes[].k", "seeds", "metrics.n_bootstrap"):
        assert field in res.output, field


def test_compare_and_report_on_a_run(tiny_run: Path, tmp_path: Path) -> None:
    dirs = [str(tiny_run / "saes" / "toy" / "topk" / f"seed_{s}") for s in (1, 2, 3)]
    res = runner.invoke(app, ["compare", *dirs, "--json", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "c.json").read_text())
    m = json.loads((tiny_run / "metrics.json").read_text())
    ours = m["datasets"]["toy"]["architectures"]["topk"]["consistency"]["pwmcc"]["trained"]["pairs"]
    assert out["pwmcc"]["trained"]["mean"] == pytest.approx(sum(ours) / 3)
    assert "pwmcc" in res.output
    before = (tiny_run / "report.md").read_bytes()
    res = runner.invoke(app, ["report", str(tiny_run)])
    assert res.exit_code == 0 and "report.md" in res.output
    assert (tiny_run / "report.md").read_bytes() == before  # a pure function of metrics.json


def test_compare_rejects_mismatched_d_in(tiny_run: Path, tmp_path: Path) -> None:
    import torch

    from husai.config import SAEConfig
    from husai.sae import save, train_sae

    sae, _ = train_sae(SAEConfig(d_sae=8, k=2, epochs=1), torch.randn(64, 5), [0])
    save(sae, tmp_path / "other")
    res = runner.invoke(
        app, ["compare", str(tiny_run / "saes/toy/topk/seed_1"), str(tmp_path / "other")]
    )
    assert res.exit_code == 2
    assert "different d_in" in res.output and len(res.output.strip().splitlines()) == 1


def test_pipeline_commands_chain(tiny_run: Path, tmp_path: Path) -> None:
    acts = tmp_path / "acts.safetensors"
    res = runner.invoke(
        app,
        [
            "extract",
            str(tiny_run / "toy_model"),
            "--out",
            str(acts),
            "--hook",
            "blocks.0.mlp_post",
            "--position",
            "all",
        ],
    )
    assert res.exit_code == 0, res.output
    from husai.activations import load_activations

    x, meta = load_activations(acts)
    assert x.shape == (3 * 23 * 23, 64) and meta["hook"] == "blocks.0.mlp_post"
    res = runner.invoke(
        app,
        [
            "train-sae",
            str(acts),
            "--out",
            str(tmp_path / "s"),
            "--d-sae",
            "32",
            "--k",
            "4",
            "--epochs",
            "1",
            "--seeds",
            "1,2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s" / "seed_2" / "cfg.json").is_file()
    res = runner.invoke(
        app, ["extract", str(tiny_run / "toy_model"), "--out", str(acts), "--hook", "nope"]
    )
    assert res.exit_code == 2 and "unknown hook" in res.output


def test_nan_activations_are_rejected(tmp_path: Path) -> None:
    import torch

    from husai.activations import save_activations

    x = torch.randn(10, 4)
    x[2, 1] = float("inf")
    save_activations(tmp_path / "a.safetensors", x, {"source": "test"})
    res = runner.invoke(
        app,
        [
            "train-sae",
            str(tmp_path / "a.safetensors"),
            "--out",
            str(tmp_path / "s"),
            "--d-sae",
            "8",
            "--k",
            "2",
        ],
    )
    assert res.exit_code == 2 and "NaN/Inf" in res.output
    assert not (tmp_path / "s").exists()


def test_run_command_prints_summary_and_stage_times(tiny_run: Path, tiny_config: Path) -> None:
    # reuse the fixture's toy-model cache: this checks the command, not the training
    cache = tiny_run.parent / "cache"
    out = tiny_run.parent / "via_cli"
    res = runner.invoke(
        app, ["run", str(tiny_config), "--out", str(out), "--cache-dir", str(cache), "--quiet"]
    )
    assert res.exit_code == 0, res.output
    assert "PWMCC trained" in res.output and "stage wall times" in res.output
    assert "toy_model" in res.output and "report" in res.output
    assert (out / "metrics.json").read_bytes() == (tiny_run / "metrics.json").read_bytes()
    other = tiny_config.parent / "other.yaml"
    other.write_text(tiny_config.read_text().replace("seeds:\n- 1", "seeds:\n- 7"))
    res = runner.invoke(app, ["run", str(other), "--out", str(out), "--quiet"])
    assert res.exit_code == 2 and "another config" in res.output


def test_synthetic_command_writes_a_file_every_command_reads(tmp_path: Path) -> None:
    out = tmp_path / "syn.safetensors"
    res = runner.invoke(
        app,
        [
            "synthetic",
            "--out",
            str(out),
            "--n-features",
            "12",
            "--d",
            "6",
            "--n-samples",
            "500",
            "--frequency",
            "zipf",
        ],
    )
    assert res.exit_code == 0, res.output
    from husai.activations import load_activations
    from husai.synthetic import load_ground_truth

    x, meta = load_activations(out)
    assert x.shape == (500, 6) and load_ground_truth(out).shape == (12, 6)
    assert '"frequency":"zipf"' in meta["config"].replace(" ", "")
    res = runner.invoke(
        app,
        [
            "train-sae",
            str(out),
            "--out",
            str(tmp_path / "s"),
            "--d-sae",
            "12",
            "--k",
            "2",
            "--epochs",
            "1",
            "--seeds",
            "1,2",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["synthetic", "--out", str(tmp_path / "bad.st"), "--d", "0"])
    assert (
        res.exit_code == 2 and "synthetic: d" in res.output and not (tmp_path / "bad.st").exists()
    )


def _flat_help(command: str) -> str:
    """`husai <command> --help` on one line (box drawing and wrapping removed)."""
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    return " ".join(res.output.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def _same_value(a: str, b: str) -> bool:
    def norm(v: str) -> str:
        v = v.strip().strip("'\"")
        return "null" if v == "None" else "".join(c for c in v if c not in "()[] ")

    return norm(a) == norm(b)


def test_train_sae_options_are_generated_from_the_configs() -> None:
    import re

    from husai.cli import SAE_FIELDS
    from husai.sae import REGISTRY

    train, run = _flat_help("train-sae"), _flat_help("run")
    assert f"<{'|'.join(sorted(REGISTRY))}>" in train  # every architecture is a choice
    flags = "|".join(re.escape(f"--{n.replace('_', '-')}") for n in SAE_FIELDS)
    for name in SAE_FIELDS:
        flag = re.escape(f"--{name.replace('_', '-')}")
        cli = re.search(rf"{flag} <[^>]*> (?:(?!{flags}).)*?\[default: ([^\]]*)\]", train)
        ref = re.search(rf"saes\[\]\.{name}(?: \([a-z_, ]+\))? = (.*?): ", run)
        assert cli and ref, name
        assert _same_value(cli.group(1), ref.group(1)), (name, cli.group(1), ref.group(1))
    assert "--l1-coefficient" in train and _same_value(
        re.search(r"saes\[\]\.l1_coefficient \(gated, relu\) = (.*?): ", run).group(1), "1.0"
    )
    assert (
        "saes[].k (archetypal, batchtopk, hierarchical_topk, matryoshka, routesae, topk) = 32: "
        in run
    )


def test_train_sae_passes_only_the_options_given(tmp_path: Path) -> None:
    import torch

    from husai.activations import save_activations

    acts = tmp_path / "a.safetensors"
    save_activations(acts, torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), {})
    base = ["train-sae", str(acts), "--d-sae", "8", "--epochs", "1", "--seeds", "1,2"]
    res = runner.invoke(
        app,
        [*base, "--out", str(tmp_path / "r"), "--architecture", "relu", "--l1-coefficient", "0.5"],
    )
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "r" / "seed_2" / "cfg.json").read_text())["husai"]["config"]
    assert saved["l1_coefficient"] == 0.5 and "k" not in saved and saved["d_sae"] == 8
    res = runner.invoke(
        app,
        [*base, "--out", str(tmp_path / "m"), "--architecture", "matryoshka", "--k", "2"]
        + ["--prefix-sizes", "0.5,1", "--aux-k", "null", "--consistency-penalty", "reference"],
    )
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "m" / "seed_1" / "cfg.json").read_text())["husai"]["config"]
    assert saved["prefix_sizes"] == [0.5, 1.0] and saved["k"] == 2 and saved["aux_k"] is None
    res = runner.invoke(
        app, [*base, "--out", str(tmp_path / "x"), "--architecture", "relu"] + ["--k", "3"]
    )
    assert res.exit_code == 2 and not (tmp_path / "x").exists()
    assert "k is not a field of architecture relu (it belongs to" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_train_sae_streams_from_a_store(tmp_path: Path) -> None:
    """`husai train-sae STORE`: trained from the store's shards; cfg.json has its hook and
    LM metadata; the same SAE as training on the store's rows through the Python API."""
    import torch

    from husai.config import SAEConfig
    from husai.sae import load, train_sae
    from husai.store import StoreWriter, TokenPolicy

    meta = {"model_name": "tiny", "context_size": 8, "prepend_bos": True, "corpus": "c"}
    w = StoreWriter(
        tmp_path / "store",
        d=16,
        hook_name="blocks.1.hook_resid_post",
        n_shards=4,
        metadata=meta,
        policy=TokenPolicy(normalize="expected_average_only_in"),
    )
    gen = torch.Generator().manual_seed(0)
    for k in range(4):
        w.write(k, torch.randn(50, 16, generator=gen) * 3)
    store = w.finish()
    args = ["--architecture", "topk", "--k", "4", "--d-sae", "32", "--epochs", "2"]
    args += ["--batch-size", "32", "--shuffle-buffer", "64", "--seeds", "1,2"]
    res = runner.invoke(
        app, ["train-sae", str(tmp_path / "store"), "--out", str(tmp_path / "o"), *args]
    )
    assert res.exit_code == 0, res.output
    assert "200 rows of blocks.1.hook_resid_post" in res.output
    cfg = json.loads((tmp_path / "o" / "seed_1" / "cfg.json").read_text())
    assert cfg["hook_name"] == "blocks.1.hook_resid_post" and cfg["model_name"] == "tiny"
    assert cfg["normalize_activations"] == "expected_average_only_in"
    assert cfg["norm_scaling_factor"] == store.scale
    sae_cfg = SAEConfig(
        architecture="topk", k=4, d_sae=32, epochs=2, batch_size=32, shuffle_buffer=64
    )
    want, _ = train_sae(sae_cfg, store, [1, 2])
    got = load(tmp_path / "o" / "seed_2")
    assert torch.equal(got.W_dec[0], want.W_dec[1])
