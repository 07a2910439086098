"""The consistency summariser (metrics.json's and `husai compare`'s blocks) against the
statistics it is made of, called directly."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from husai.metrics import (
    VARIANTS,
    compare_to_baseline,
    pairwise_groups,
    random_dictionaries,
    seed_bootstrap_ci,
    summarise_pairwise,
    summarise_values,
)


@dataclass(frozen=True)
class Settings:
    ci_level: float = 0.9
    n_bootstrap: int = 300
    baseline_seed: int = 3


def test_block_is_made_of_the_named_statistics() -> None:
    s = Settings()
    matrix = np.array([[1, 0.8, 0.6], [0.8, 1, 0.65], [0.6, 0.65, 1]])
    trained = [0.8, 0.6, 0.65]
    values = {"trained": trained, "random": [0.3, 0.31, 0.29], "init": [0.4]}
    block = summarise_values(values, matrix, "v", s)
    kw = {"level": 0.9, "n_resamples": 300, "seed": 3}
    assert block["variant"] == "v" and block["matrix"] == matrix.tolist()
    assert block["trained"]["mean"] == pytest.approx(np.mean(trained))
    assert block["trained"]["pairs"] == trained
    sb = seed_bootstrap_ci(matrix, method="bca", **kw)
    assert (block["trained"]["ci_low"], block["trained"]["ci_high"]) == (
        sb["ci_low"],
        sb["ci_high"],
    )
    for base in ("random", "init"):
        d = block[f"trained_minus_{base}"]
        direct = compare_to_baseline(trained, values[base], **kw)
        assert d["mean"] == direct["mean"]
        assert d["pair_bootstrap"]["ci_low"] == direct["ci_low"]
        held = seed_bootstrap_ci(matrix - block[base]["mean"], method="bca", **kw)
        assert (d["ci_low"], d["ci_high"]) == (held["ci_low"], held["ci_high"])
        assert d["method"].endswith("baseline mean held fixed")
    assert "permutation" in block["trained_minus_random"]
    assert "permutation" not in block["trained_minus_init"]  # one pair: nothing to permute


def test_summarise_pairwise_covers_every_metric() -> None:
    dicts = {
        "trained": random_dictionaries(3, 12, 6, 0),
        "random": random_dictionaries(3, 12, 6, 1),
    }
    groups = pairwise_groups(dicts, (0.2, 0.4), block_size=5)
    out = summarise_pairwise(groups, Settings())
    assert set(out) == {
        "pairs",
        "pwmcc",
        "hungarian_mcc",
        "shared_fraction@0.2",
        "shared_fraction@0.4",
    }
    assert out["pairs"] == [[0, 1], [0, 2], [1, 2]]
    assert out["pwmcc"]["variant"] == VARIANTS["pwmcc"]
    assert (
        out["shared_fraction@0.4"]["random"]["pairs"]
        == groups["random"]["shared_fraction"][0.4]["values"]
    )
    assert out["hungarian_mcc"]["trained"]["pairs"] == groups["trained"]["hungarian_mcc"]["values"]
    named = summarise_pairwise(groups, Settings(), {k: k.upper() for k in out if k != "pairs"})
    assert named["shared_fraction@0.2"]["variant"] == "SHARED_FRACTION@0.2"


def test_metrics_imports_no_other_room() -> None:
    """Layering: importing metrics loads no sae, toy, lm, experiments, config or report."""
    code = "import json, sys, husai.metrics; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rooms = {m.split(".")[1] for m in json.loads(out.stdout) if m.startswith("husai.")}
    assert "metrics" in rooms
    forbidden = {"sae", "toy", "lm", "experiments", "config", "report", "activations", "cli"}
    assert not rooms & forbidden, rooms
