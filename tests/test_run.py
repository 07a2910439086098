"""End-to-end `husai run` on a tiny config: artifacts, determinism, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from husai.config import parse_run_config
from husai.experiments import run
from husai.io import sha256_file
from husai.sae import load


def test_run_writes_every_artifact(tiny_run: Path) -> None:
    for name in (
        "manifest.json",
        "metrics.json",
        "report.md",
        "data/toy/activations.safetensors",
        "toy_model/model.safetensors",
        "toy_model/config.json",
    ):
        assert (tiny_run / name).is_file(), name
    for fig in (
        "pwmcc_heatmap_toy_topk",
        "pwmcc_heatmap_toy_relu",
        "trained_vs_baselines_toy",
        "ev_vs_pwmcc_toy",
        "fourier_spectrum",
        "training_curve",
    ):
        assert (tiny_run / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    for arch in ("topk", "relu"):
        for seed in (1, 2, 3):
            sae = load(tiny_run / "saes" / "toy" / arch / f"seed_{seed}")
            assert sae.seeds == [seed] and sae.d_in == 32


def test_metrics_hold_what_the_issue_asks(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["toy_model"]["fourier"]["logit_r2"] is not None
    for arch in ("topk", "relu"):
        a = m["datasets"]["toy"]["architectures"][arch]
        c = a["consistency"]
        for group in ("trained", "random", "init"):
            b = c["pwmcc"][group]
            assert b["ci_low"] <= b["mean"] <= b["ci_high"]
            assert len(b["pairs"]) == 3
        assert "higher = more consistent" in c["pwmcc"]["variant"]
        d = c["pwmcc"]["trained_minus_random"]
        assert d["mann_whitney"]["p_value"] is not None
        assert c["hungarian_mcc"]["trained"]["mean"] <= c["pwmcc"]["trained"]["mean"] + 1e-9
        assert {"shared_fraction@0.5", "shared_fraction@0.7", "shared_fraction@0.9"} <= set(c)
        q = a["quality"]["mean"]
        for key in (
            "mse",
            "explained_variance",
            "l0",
            "dead_fraction",
            "downstream_accuracy",
            "downstream_loss",
            "downstream_loss_recovered_vs_zero",
        ):
            assert key in q, key
    assert m["datasets"]["toy"]["architectures"]["topk"]["quality"]["mean"]["l0"] <= 4
    er = m["datasets"]["toy"]["effective_rank"]
    assert 1 <= er["participation_ratio"] <= 32 and er["n_components_0.9"] <= 32


def test_manifest_hashes_match_files(tiny_run: Path) -> None:
    man = json.loads((tiny_run / "manifest.json").read_text())
    assert man["seeds"] == [1, 2, 3] and man["provenance"]["versions"]["torch"]
    assert man["artifacts"]
    for rel, digest in man["artifacts"].items():
        assert sha256_file(tiny_run / rel) == digest, rel
    assert "metrics.json" in man["artifacts"] and "report.md" in man["artifacts"]


def test_report_numbers_come_from_metrics(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "metrics.json").read_text())
    report = (tiny_run / "report.md").read_text()
    pw = m["datasets"]["toy"]["architectures"]["topk"]["consistency"]["pwmcc"]
    assert f"{pw['trained']['mean']:.3f}" in report
    assert f"{pw['random']['mean']:.3f}" in report
    assert "metrics.json` → `datasets.toy.architectures.topk.consistency`" in report


def test_rerun_is_byte_identical_and_resumes(tiny_run: Path, tmp_path: Path, tiny_dict) -> None:
    cfg = parse_run_config(tiny_dict)
    # from scratch, another directory and cache: the same numbers, byte for byte
    run(cfg, tmp_path / "again", cache_dir=tmp_path / "cache")
    assert (tmp_path / "again" / "metrics.json").read_bytes() == (
        tiny_run / "metrics.json"
    ).read_bytes()
    # interrupted run: one architecture's SAEs lost → only that one is retrained
    import shutil

    shutil.rmtree(tmp_path / "again" / "saes" / "toy" / "relu" / "seed_2")
    run(cfg, tmp_path / "again", cache_dir=tmp_path / "cache")
    man = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert man["trained_this_run"] == ["toy/relu"]
    assert (tmp_path / "again" / "metrics.json").read_bytes() == (
        tiny_run / "metrics.json"
    ).read_bytes()


def test_synthetic_validation_run_reports_recovery(tmp_path: Path) -> None:
    syn = {"n_features": 16, "d": 16, "n_samples": 8000, "k_active": 2, "noise_std": 0.0}
    cfg = parse_run_config(
        {
            "data": [
                {"name": "sparse", "source": "synthetic", "synthetic": syn},
                {"name": "dense", "source": "synthetic", "synthetic": {**syn, "regime": "dense"}},
            ],
            "saes": [
                {
                    "name": "x1",
                    "architecture": "topk",
                    "d_sae": 16,
                    "k": 2,
                    "epochs": 8,
                    "lr": 0.003,
                },
                {
                    "name": "x2",
                    "architecture": "topk",
                    "d_sae": 32,
                    "k": 2,
                    "epochs": 8,
                    "lr": 0.003,
                },
            ],
            "seeds": [1, 2, 3],
            "metrics": {"n_bootstrap": 200},
        }
    )
    m = run(cfg, tmp_path / "run")
    assert "toy_model" not in m and not (tmp_path / "run" / "toy_model").exists()
    sparse = m["datasets"]["sparse"]
    assert sparse["n_true_features"] == 16
    x2 = sparse["architectures"]["x2"]["quality"]["mean"]
    assert x2["recovery_hungarian_mcc"] >= 0.9
    pw = sparse["architectures"]["x2"]["consistency"]["pwmcc"]
    assert pw["trained"]["mean"] > pw["random"]["mean"] + 0.1
    dense = m["datasets"]["dense"]["architectures"]["x2"]
    assert dense["quality"]["mean"]["recovery_fraction_recovered"] < 0.5
    figs = tmp_path / "run" / "figures"
    assert (figs / "d_sae_trend_sparse.png").is_file() and (
        figs / "d_sae_trend_dense.png"
    ).is_file()
    assert "recovery MCC" in (tmp_path / "run" / "report.md").read_text()


def test_pareto_front_against_brute_force() -> None:
    from husai.experiments.aggregate import pareto_front

    pts = [(0.9, 0.3), (0.8, 0.5), (0.95, 0.2), (0.7, 0.4), (0.8, 0.5), (0.6, 0.6)]
    front = pareto_front(pts)
    brute = [
        i
        for i, p in enumerate(pts)
        if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts)
    ]
    assert front == sorted(brute, key=lambda i: pts[i][0])
    assert {pts[i] for i in front} == {(0.6, 0.6), (0.8, 0.5), (0.9, 0.3), (0.95, 0.2)}


def test_trained_cis_resample_seeds(tiny_run: Path) -> None:
    import json

    import numpy as np

    from husai.metrics.stats import seed_bootstrap_ci

    m = json.loads((tiny_run / "metrics.json").read_text())
    block = next(iter(m["datasets"]["toy"]["architectures"].values()))["consistency"]["pwmcc"]
    matrix = np.array(block["matrix"])
    kw = {"level": 0.95, "n_resamples": m_cfg_n(tiny_run), "seed": 0, "method": "bca"}
    expect = seed_bootstrap_ci(matrix, **kw)
    assert block["trained"]["method"] == expect["method"]
    assert (block["trained"]["ci_low"], block["trained"]["ci_high"]) == (
        expect["ci_low"],
        expect["ci_high"],
    )
    delta = seed_bootstrap_ci(matrix - block["random"]["mean"], **kw)
    d = block["trained_minus_random"]
    assert (d["ci_low"], d["ci_high"]) == (delta["ci_low"], delta["ci_high"])
    assert "pair_bootstrap" in d and "pair_bootstrap" in block["trained"]


def m_cfg_n(run_dir: Path) -> int:
    import json

    return json.loads((run_dir / "manifest.json").read_text())["config"]["metrics"]["n_bootstrap"]


def test_permutation_tests_and_holm_in_report(tiny_run: Path) -> None:
    import json

    from husai.metrics.stats import holm, permutation_test

    m = json.loads((tiny_run / "metrics.json").read_text())
    ps = {}
    for label, a in m["datasets"]["toy"]["architectures"].items():
        for key in ("pwmcc", "hungarian_mcc"):
            block = a["consistency"][key]
            want = permutation_test(
                block["trained"]["pairs"], block["random"]["pairs"], n_resamples=200
            )
            got = block["trained_minus_random"]["permutation"]
            assert got["p_value"] == want["p_value"]
            ps[f"toy/{label}/{key}"] = got["p_value"]
    assert m["multiple_testing"]["p_adjusted"] == holm(ps)["p_adjusted"]  # computed once, here
    report = (tiny_run / "report.md").read_text()
    adj = holm(ps)["p_adjusted"]["toy/topk/pwmcc"]
    assert "Holm-adjusted" in report and (f"Holm-adjusted p = {adj:.2g}" in report or adj < 1e-4)


def test_report_names_the_configured_ci_level(tiny_run: Path) -> None:
    """The report prints the run's ci_level, not a fixed 95% (only formats metrics.json)."""
    import json

    from husai.report import in_config_order
    from husai.report.markdown import render_markdown

    m = json.loads((tiny_run / "metrics.json").read_text())
    assert "[95% CI]" in render_markdown(in_config_order(m), None)
    m["metrics_config"]["ci_level"] = 0.9
    text = render_markdown(in_config_order(m), None)
    assert "[90% CI]" in text and "[90% CI, " in text and "95% CI" not in text


def test_manifest_records_the_provenance_read_when_the_run_began(tmp_path: Path, monkeypatch):
    """A commit made while a run is going is not the code that ran: the manifest keeps the
    git revision (and versions) read at the start, not at the end."""
    import importlib

    run_module = importlib.import_module("husai.experiments.run")

    calls = iter(range(100))

    def fake() -> dict:
        return {"versions": {}, "git_revision": f"rev{next(calls)}", "torch_threads": 1}

    monkeypatch.setattr(run_module, "provenance", fake)
    syn = {"n_features": 8, "d": 8, "n_samples": 500, "k_active": 2, "noise_std": 0.0}
    cfg = parse_run_config(
        {
            "data": [{"name": "syn", "source": "synthetic", "synthetic": syn}],
            "saes": [{"architecture": "topk", "d_sae": 8, "k": 2, "epochs": 1}],
            "seeds": [1, 2],
            "metrics": {"n_bootstrap": 100},
        }
    )
    run(cfg, tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["provenance"]["git_revision"] == "rev0"


def test_protocol_block_and_its_report_table(tiny_run: Path) -> None:
    """Issue 13's protocol: every configuration says whether its seeds are independent,
    the at-init gap to random, alive-latent Hungarian MCC with baselines, and the verdict
    follows the stated rule from the numbers beside it."""
    from husai.experiments.evaluate import INIT_TOLERANCE

    m = json.loads((tiny_run / "metrics.json").read_text())
    report = (tiny_run / "report.md").read_text()
    assert "### Seed independence and alive latents (`toy`)" in report
    for a in m["datasets"]["toy"]["architectures"].values():
        p, h = a["protocol"], a["consistency"]["hungarian_mcc"]
        assert p["independent"] is True and p["couplings"] == []
        gap = h["init"]["mean"] - h["random"]["mean"]
        assert p["init_minus_random_hungarian"] == pytest.approx(gap)
        assert p["agrees_at_init"] == (gap > INIT_TOLERANCE)
        resolved = h["trained_minus_init"]["ci_low"] > 0
        assert p["counts"] == (not p["agrees_at_init"] and resolved)
        alive = p["alive_hungarian_mcc"]
        # dead latents only lower it: never above the plain Hungarian MCC of the same pairs
        for x, y in zip(alive["trained"]["pairs"], h["trained"]["pairs"], strict=True):
            assert x <= y + 1e-6
        dead = a["quality"]["mean"]["dead_fraction"]
        assert sum(p["alive_fraction"]["trained"]) / 3 == pytest.approx(1 - dead, abs=1e-6)
        assert f"{alive['trained']['mean']:.3f}" in report
