"""`husai calibrate` end to end on a tiny toy model, and its selection rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from husai.cli import app
from husai.errors import HusaiError
from husai.experiments.calibrate import select_k
from husai.metrics.stats import seed_bootstrap_ci


def test_select_k_maximises_lower_bound_under_ev_floor() -> None:
    def row(k: int, low: float, ev: float) -> dict:
        return {"k": k, "trained_minus_random": {"ci_low": low}, "ev": ev}

    rows = [
        row(8, 0.30, 0.80),  # best bound, but below the floor
        row(16, 0.20, 0.92),
        row(32, 0.20, 0.95),  # tie: the smaller k wins
        row(64, 0.10, 0.99),
    ]
    assert select_k(rows, 0.9)["k"] == 16
    with pytest.raises(HusaiError, match="no candidate k reaches ev_floor 0.999"):
        select_k(rows, 0.999)


def test_calibrate_cli(tiny_dict: dict, tmp_path: Path) -> None:
    cfg = {
        "toy": tiny_dict["toy"],
        "sae": {"architecture": "topk", "d_sae": 32, "epochs": 3, "batch_size": 64},
        "candidates": [2, 4, 8],
        "search_seeds": [1, 2, 3],
        "ev_floor": 0.0,
        "control_k": 8,
        "confirm_seeds": [1, 2, 3, 4],
        "metrics": {"n_bootstrap": 200},
    }
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["calibrate", str(path), "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    )
    assert res.exit_code == 0, res.output
    result = json.loads((out / "calibration.json").read_text())
    best = max(result["search"], key=lambda r: (r["trained_minus_random"]["ci_low"], -r["k"]))
    assert result["selected_k"] == best["k"] and f"selected k = {best['k']}" in res.output
    confirm = json.loads((out / "confirm" / "metrics.json").read_text())
    assert confirm["seeds"] == [1, 2, 3, 4]
    archs = confirm["datasets"]["toy"]["architectures"]
    if best["k"] != 8:  # improvement = paired seed bootstrap of the matrix difference
        diff = np.array(archs[f"k{best['k']}"]["consistency"]["pwmcc"]["matrix"]) - np.array(
            archs["k8"]["consistency"]["pwmcc"]["matrix"]
        )
        expect = seed_bootstrap_ci(diff, n_resamples=200, method="bca")
        assert result["improvement_selected_minus_control"]["ci_low"] == expect["ci_low"]
    report = (out / "report.md").read_text()
    assert "(selected)" in report and (out / "figures" / "calibration.png").stat().st_size > 1000


def test_calibrate_rejects_architectures_without_k(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"sae": {"architecture": "relu"}}))
    res = CliRunner().invoke(app, ["calibrate", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "calibrate chooses k: relu has no k" in res.output
