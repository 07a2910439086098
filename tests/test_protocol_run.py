"""Issue 13's protocol end to end: a coupled configuration (joint penalty) is reported as
coupled and validated against an independent one of the same width in the same run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from husai.config import parse_run_config
from husai.experiments import run
from husai.metrics import hungarian_mcc
from husai.sae import load

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {
    "data": [
        {
            "name": "syn",
            "source": "synthetic",
            "synthetic": {"n_features": 16, "d": 8, "k_active": 2, "n_samples": 2000},
        }
    ],
    "saes": [
        {
            "name": "balanced",
            "architecture": "topk",
            "d_sae": 16,
            "k": 2,
            "epochs": 15,
            "lr": 0.003,
            "balance_rate": 0.01,
        },
        {
            "name": "joint",
            "architecture": "topk",
            "d_sae": 16,
            "k": 2,
            "epochs": 15,
            "lr": 0.003,
            "consistency_penalty": "joint",
            "consistency_lambda": 10,
        },
    ],
    "seeds": [1, 2, 3],
    "metrics": {"n_bootstrap": 200, "functional": False, "probing": False, "consensus": False},
}


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("protocol_run")
    run(parse_run_config(CFG), base / "run", cache_dir=base / "cache")
    return base / "run"


def test_coupled_is_reported_as_coupled_and_validated(protocol_run: Path) -> None:
    m = json.loads((protocol_run / "metrics.json").read_text())
    ds = m["datasets"]["syn"]
    joint, balanced = ds["architectures"]["joint"], ds["architectures"]["balanced"]
    assert joint["protocol"]["independent"] is False and joint["protocol"]["counts"] is False
    assert "joint" in joint["protocol"]["couplings"][0]
    assert balanced["protocol"]["independent"] is True and balanced["protocol"]["counts"]
    v = ds["coupled_validation"]["joint"]["balanced"]
    # brute force: every joint seed against every balanced seed, from the saved SAEs
    dec = {
        label: [load(protocol_run / rel).W_dec[0].detach() for rel in a["saes"].values()]
        for label, a in (("joint", joint), ("balanced", balanced))
    }
    cross = np.array([[hungarian_mcc(a, b) for b in dec["balanced"]] for a in dec["joint"]])
    assert v["cross"]["mean"] == pytest.approx(cross.mean(), abs=1e-9)
    assert v["cross"]["ci_low"] <= v["cross"]["mean"] <= v["cross"]["ci_high"]
    assert v["independent_within"] == balanced["consistency"]["hungarian_mcc"]["trained"]["mean"]
    report = (protocol_run / "report.md").read_text()
    assert "| joint | coupled: consistency_penalty joint" in report
    assert "coupled `joint` against independent `balanced`" in report
    assert f"{v['cross']['mean']:.3f}" in report
