"""husai run: consistency trajectory, toy-structure recovery and regularised SAEs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from husai.config import parse_run_config
from husai.experiments import run


@pytest.fixture(scope="module")
def extras_run(tiny_dict: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("extras")
    sae = {"architecture": "topk", "d_sae": 48, "k": 4, "epochs": 3, "batch_size": 64}
    cfg = {
        **tiny_dict,
        "saes": [
            {**sae, "trajectory_every_epochs": 1},
            {**sae, "name": "ref", "consistency_penalty": "reference", "consistency_lambda": 50.0},
            {**sae, "name": "joint", "consistency_penalty": "joint", "consistency_lambda": 50.0},
        ],
    }
    run(parse_run_config(cfg), base / "run", cache_dir=base / "cache")
    return base / "run"


def _archs(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["datasets"]["toy"]["architectures"]


def test_trajectory_ends_at_the_final_consistency(extras_run: Path) -> None:
    a = _archs(extras_run)["topk"]
    t = a["trajectory"]
    assert [p["epoch"] for p in t] == [0, 1, 2, 3]
    assert t[-1]["pwmcc"] == pytest.approx(a["consistency"]["pwmcc"]["trained"]["mean"], abs=1e-6)
    assert t[0]["pwmcc"] == pytest.approx(a["consistency"]["pwmcc"]["init"]["mean"], abs=1e-6)
    assert "trajectory" not in _archs(extras_run)["ref"]
    assert (extras_run / "figures" / "trajectory_toy.png").stat().st_size > 1000
    assert "Consistency trajectory" in (extras_run / "report.md").read_text()


def test_structure_recovery_matches_an_independent_computation(extras_run: Path) -> None:
    from husai.experiments.evaluate import toy_truths
    from husai.sae import load
    from husai.toy import load_checkpoint
    from husai.toy.structure import recovery_against

    m = json.loads((extras_run / "metrics.json").read_text())
    st = m["toy_model"]["structure"]["hooks"]["blocks.0.resid_post"]
    assert 0 < st["class_means"]["variance_explained"] <= 1
    model, cfg, _ = load_checkpoint(extras_run / "toy_model")
    truths = toy_truths(model.eval(), cfg, "blocks.0.resid_post")
    w = torch.stack([load(extras_run / f"saes/toy/topk/seed_{s}").W_dec[0] for s in (1, 2, 3)])
    got = _archs(extras_run)["topk"]["structure"]
    for name, truth in truths.items():
        want = recovery_against(w.detach(), truth)
        assert got[name]["hungarian_mcc"] == pytest.approx(want["hungarian_mcc"], abs=1e-6)
        assert got[name]["random"]["hungarian_mcc"] < 1
    assert "known structure" in (extras_run / "report.md").read_text()


def test_regularised_configs_train_and_record_their_penalty(extras_run: Path) -> None:
    for label in ("ref", "joint"):
        cfg = json.loads((extras_run / f"saes/toy/{label}/seed_1/cfg.json").read_text())
        assert 0 <= cfg["husai"]["consistency_mcc"] <= 1, label


def test_lambda_sweep_report_selects_by_the_rule(tiny_dict: dict, tmp_path: Path) -> None:
    import numpy as np

    from husai.metrics.stats import seed_bootstrap_ci

    base = {"architecture": "topk", "d_sae": 48, "k": 4, "epochs": 3, "batch_size": 64}
    grid = {"consistency_penalty": ["joint"], "consistency_lambda": [0, 50]}
    cfg = {k: v for k, v in tiny_dict.items() if k != "saes"}
    cfg["sweep"] = {"base": base, "grid": grid}
    run(parse_run_config(cfg), tmp_path / "run", cache_dir=tmp_path / "cache")
    archs = _archs(tmp_path / "run")
    ok = {
        label: a["consistency"]["pwmcc"]["trained_minus_random"]["ci_low"]
        for label, a in archs.items()
        if archs[next(iter(archs))]["quality"]["mean"]["explained_variance"]
        - a["quality"]["mean"]["explained_variance"]
        <= 0.05
    }
    best = max(ok, key=ok.get)
    sel = json.loads((tmp_path / "run" / "metrics.json").read_text())["lambda_selection"]
    (row,) = sel["datasets"]["toy"]
    assert row["selected"] == best and row["lower_bound"] == ok[best]
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"(`{best}`; lower bound {ok[best]:+.3f}" in report
    if best != next(iter(archs)):
        diff = np.array(archs[best]["consistency"]["pwmcc"]["matrix"]) - np.array(
            archs[next(iter(archs))]["consistency"]["pwmcc"]["matrix"]
        )
        g = seed_bootstrap_ci(diff, n_resamples=200, method="bca")
        assert f"{g['mean']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]" in report
        assert row["gain_over_control"] == g


@pytest.mark.parametrize(
    ("arch", "init", "transcoder"),
    [
        ("topk", "random", False),
        ("topk", "data", False),
        ("relu", "random", False),
        ("batchtopk", "data", False),
        ("jumprelu", "random", True),
        ("topk", "random", True),
    ],
)
def test_init_baseline_is_what_training_starts_from(
    monkeypatch: pytest.MonkeyPatch, arch: str, init: str, transcoder: bool
) -> None:
    """The at-init baseline's decoders are the weights of train_sae's first step (the
    trainer's own init: random, data-sampled, a transcoder's fit_init)."""
    from husai.config import MetricsConfig, SAEConfig
    from husai.experiments.evaluate import consistency
    from husai.metrics import pairwise
    from husai.sae import trainer
    from husai.sae.registry import REGISTRY

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g) + 0.5
    y = torch.randn(300, 5, generator=g) + x[:, :5] if transcoder else None
    fields = {"k": 2} if REGISTRY[arch].uses_k else {}
    cfg = SAEConfig(architecture=arch, d_sae=16, init=init, epochs=1, batch_size=100, **fields)
    starts: list[dict[str, torch.Tensor]] = []
    real_step = trainer.train_step

    def first_step(sae, *args, **kwargs):
        if not starts:
            starts.append({n: p.detach().clone() for n, p in sae.named_parameters()})
        return real_step(sae, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", first_step)
    sae, _ = trainer.train_sae(cfg, x, [1, 2, 3], y_ND=y)
    start = starts[0]
    for name, p in trainer.initial_sae(cfg, x, [1, 2, 3], y).named_parameters():
        assert torch.equal(p, start[name]), name
    want = pairwise([start["W_dec"][s] for s in range(3)], thresholds=())["pwmcc"]["values"]
    got = consistency(sae, cfg, MetricsConfig(n_bootstrap=100), x, y)["pwmcc"]["init"]["pairs"]
    assert got == want
