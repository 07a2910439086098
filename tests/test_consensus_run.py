"""The run's consensus block (husai.experiments.consensus_block) against `husai consensus` on
the same saved seeds, counted by loops; the `metrics.variants` cost switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from husai.config import MetricsConfig, SAEConfig, parse_run_config
from husai.experiments.consensus import consensus
from husai.experiments.evaluate import consistency
from husai.experiments.run import run
from husai.report.consensus import consensus_lines
from husai.sae import train_sae

SYN = {"n_features": 24, "d": 24, "n_samples": 2000, "k_active": 2, "noise_std": 0.0}
SAE = {"architecture": "topk", "d_sae": 32, "k": 2, "epochs": 8, "batch_size": 64, "lr": 3e-3}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny matmuls


@pytest.fixture(scope="module")
def syn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    cfg = parse_run_config(
        {
            "data": [{"name": "syn", "source": "synthetic", "synthetic": SYN}],
            "saes": [{"name": "topk", **SAE}],
            "seeds": [1, 2, 3, 4],
            "metrics": {"n_bootstrap": 100, "consensus_refit_epochs": 2},
        }
    )
    out = tmp_path_factory.mktemp("consensus_run") / "run"
    return out, run(cfg, out)


def test_block_matches_husai_consensus_on_the_same_seeds(syn_run: tuple[Path, dict]) -> None:
    out, metrics = syn_run
    block = metrics["datasets"]["syn"]["architectures"]["topk"]["consensus"]
    cli = consensus([out / "saes" / "syn" / "topk"], refit_epochs=2).summary
    n = cli["n_saes"]
    assert block["n_seeds"] == n == 4 and block["min_seeds"] == cli["min_seeds"] == 2
    sizes = [g["n_seeds"] for g in cli["groups"]]
    t = block["trained"]
    assert t["n_groups"] == len(sizes)
    for m in range(2, n + 1):  # counts vs m, by a loop over the CLI's groups
        assert t["found_in_at_least"][str(m)] == sum(1 for s in sizes if s >= m)
    assert t["groups_by_n_seeds"] == cli["groups_by_n_seeds"]
    per_latent = [g["stability"] for g in cli["groups"] for _ in range(g["n_seeds"])]
    assert len(per_latent) == n * 32
    assert t["stability"]["mean"] == pytest.approx(sum(per_latent) / len(per_latent), abs=1e-6)
    assert t["stability"]["quantiles"]["0.9"] == pytest.approx(
        float(np.quantile(per_latent, 0.9)), abs=1e-6
    )
    assert t["stability"]["fraction_grouped"] == pytest.approx(
        sum(s > 0 for s in per_latent) / len(per_latent)
    )
    # the dictionary: width, quality of both encoders, recovery, as `husai consensus` has them
    d, q = block["dictionary"], cli["quality"]
    assert d["width"] == cli["width"] > 0
    for key in ("explained_variance", "l0", "dead_fraction"):
        assert d["quality"]["averaged"][key] == pytest.approx(q["consensus_averaged"][key])
        assert d["quality"]["refit"][key] == pytest.approx(q["consensus_refit"][key])
    rec = d["recovery"]
    assert rec["consensus"]["hungarian_mcc"] == pytest.approx(
        cli["recovery"]["consensus"]["hungarian_mcc"]
    )
    assert rec["best_single_seed"]["hungarian_mcc"] == pytest.approx(
        max(r["hungarian_mcc"] for r in cli["recovery"]["single_seeds"])
    )
    # chance levels: random and at-init dictionaries group (next to) nothing; trained ones do
    for m in ("2", "4"):
        assert t["found_in_at_least"][m] > 2 * block["random"]["found_in_at_least"][m]
        assert t["found_in_at_least"][m] > 2 * block["init"]["found_in_at_least"][m]
    lines = "\n".join(consensus_lines("syn", metrics["datasets"]["syn"]))
    assert f"| trained | {t['found_in_at_least']['2']} |" in lines
    assert f"{rec['consensus']['hungarian_mcc']:.4f}" in lines
    assert "### Consensus across seeds" in (out / "report.md").read_text()


def test_variants_switch_drops_only_the_asked_parts() -> None:
    x = torch.randn(600, 8, generator=torch.Generator().manual_seed(0))
    cfg = SAEConfig.model_validate({**SAE, "d_sae": 16, "epochs": 1}).resolve(8)
    sae, _ = train_sae(cfg, x, [1, 2, 3])
    out = {
        v: consistency(sae, cfg, MetricsConfig(n_bootstrap=100, variants=v), x)
        for v in ("full", "decoder", "off")
    }
    assert {"hungarian_signed", "hungarian_minus_pwmcc", "shared_latent_curve"} <= set(out["full"])
    assert "shared_latent_curve" not in out["decoder"]
    assert out["decoder"]["hungarian_signed"] == out["full"]["hungarian_signed"]
    assert out["decoder"]["hungarian_minus_pwmcc"] == out["full"]["hungarian_minus_pwmcc"]
    assert set(out["off"]) == set(out["full"]) - {
        "hungarian_signed",
        "hungarian_minus_pwmcc",
        "shared_latent_curve",
    }
    assert out["off"]["pwmcc"] == out["full"]["pwmcc"]
