"""`husai consensus` on synthetic data with known features: recovery, stability ranking,
the exported SAE, the CLI and its one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from husai.cli import app
from husai.config import SAEConfig
from husai.errors import HusaiError
from husai.experiments.consensus import consensus, write_consensus
from husai.sae import load, save_seeds, train_sae
from husai.sae.formats.saelens import save
from husai.sae.trainer import build_sae
from husai.synthetic import SyntheticConfig, load_ground_truth, write_synthetic

SEEDS = [0, 1, 2, 3, 4]
TRUTH = SyntheticConfig(n_features=32, d=16, k_active=2, n_samples=4000, noise_std=0)
CFG = {"architecture": "topk", "d_sae": 48, "k": 2, "epochs": 10, "batch_size": 64, "lr": 3e-3}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny matmuls


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `husai run`-shaped folder: run/data/syn/activations.safetensors (synthetic, with its
    true features) and run/saes/syn/topk/seed_<n>/ (5 TopK seeds trained on it)."""
    run = tmp_path_factory.mktemp("consensus") / "run"
    data = write_synthetic(TRUTH, run / "data" / "syn" / "activations.safetensors")
    from husai.activations import load_activations

    x, _ = load_activations(data)
    sae, _ = train_sae(SAEConfig.model_validate(CFG), x, SEEDS)
    save_seeds(sae, run / "saes" / "syn" / "topk", {})
    return run


def _config_dir(run: Path) -> Path:
    return run / "saes" / "syn" / "topk"


def test_consensus_at_half_recovers_truth_as_well_as_best_seed(fake_run: Path) -> None:
    # the run folder is resolved to its one config's seeds, activations and truth; m = ceil(5/2)
    res = consensus([fake_run])
    s = res.summary
    assert s["min_seeds"] == 3 and s["n_saes"] == 5 and s["encoder"] == "refit"
    best = max(r["hungarian_mcc"] for r in s["recovery"]["single_seeds"])
    assert s["recovery"]["consensus"]["hungarian_mcc"] >= best
    assert res.sae.d_sae == s["width"] == sum(g["n_seeds"] >= 3 for g in s["groups"])
    assert res.sae.params.k == 2
    q = s["quality"]
    assert (
        q["consensus_refit"]["explained_variance"] >= q["consensus_averaged"]["explained_variance"]
    )


def test_stability_ranks_true_features_above_spurious(fake_run: Path) -> None:
    """Every group exported (m = 1): AUC of the stability score for groups whose centroid
    matches a true feature at |cos| > 0.9 against the others must exceed 0.8."""
    res = consensus([_config_dir(fake_run)], 1, refit_epochs=1)
    truth = load_ground_truth(fake_run / "data" / "syn" / "activations.safetensors")
    t = truth / truth.norm(dim=1, keepdim=True)
    best = (res.sae.W_dec[0].detach() @ t.T).abs().amax(dim=1).numpy()
    stab = np.array([row["stability"] for row in res.table])
    true, spurious = stab[best > 0.9], stab[best <= 0.9]
    assert len(true) >= 16 and len(spurious) >= 8
    auc = (true[:, None] > spurious[None, :]).mean() + 0.5 * (
        true[:, None] == spurious[None, :]
    ).mean()
    assert auc > 0.8


def test_cli_exports_a_loadable_sae_deterministically(fake_run: Path, tmp_path: Path) -> None:
    acts = fake_run / "data" / "syn" / "activations.safetensors"
    seeds = sorted(str(p) for p in _config_dir(fake_run).iterdir())
    runner = CliRunner()
    outs = []
    for name in ("a", "b"):
        r = runner.invoke(
            app,
            ["consensus", *seeds, "--out", str(tmp_path / name), "--activations", str(acts)],
        )
        assert r.exit_code == 0, r.output
        outs.append(tmp_path / name)
    assert "consensus width" in r.output and "refit encoder" in r.output
    summary = json.loads((outs[0] / "consensus.json").read_text())
    sae = load(outs[0])
    assert sae.d_sae == summary["width"] and sae.architecture == "topk"
    np.testing.assert_allclose(sae.W_dec[0].norm(dim=1).detach().numpy(), 1.0, atol=1e-5)
    table = (outs[0] / "consensus_latents.csv").read_text().splitlines()
    assert table[0].startswith("latent,n_seeds,stability") and len(table) == sae.d_sae + 1
    for f in ("consensus.json", "consensus_latents.csv", "sae_weights.safetensors"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes()


def _untrained(tmp: Path, name: str, d_in: int, hook: str | None = None, seed: int = 0) -> Path:
    cfg = SAEConfig.model_validate({"architecture": "relu", "d_sae": 8})
    sae = build_sae(cfg, d_in, [seed])
    sae.hook_name = hook
    return save(sae, tmp / name)


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    a, b = _untrained(tmp_path, "a", 4), _untrained(tmp_path, "b", 6)
    c, d = _untrained(tmp_path, "c", 4, "h.0"), _untrained(tmp_path, "d", 4, "h.1")
    e = _untrained(tmp_path, "e", 4, seed=1)
    (tmp_path / "empty").mkdir()
    runner = CliRunner()
    cases = {
        "different d_in": [str(a), str(b)],
        "different hook": [str(c), str(d)],
        "no SAE directories": [str(tmp_path / "empty")],
        "at least two": [str(a)],
        "--min-seeds must lie": [str(a), str(e), "--min-seeds", "3"],
    }
    # a source SAE's own folder as --out: refused before anything is computed
    r = runner.invoke(app, ["consensus", str(a), str(e), "--out", str(e)])
    assert r.exit_code == 2 and "not empty" in r.output, r.output
    for msg, args in cases.items():
        r = runner.invoke(app, ["consensus", *args, "--out", str(tmp_path / "out")])
        assert r.exit_code == 2, (msg, r.output)
        assert msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "out").exists()


def test_nothing_to_export_and_run_of_several_configs(fake_run: Path, tmp_path: Path) -> None:
    a, c = _untrained(tmp_path, "x/a", 4), _untrained(tmp_path, "x/c", 4, seed=1)
    with pytest.raises(HusaiError, match="no latent is found in >= 2 of 2"):
        consensus([a, c], 2, threshold=1.0)  # random decoders never match exactly
    run = tmp_path / "run"
    shutil.copytree(_config_dir(fake_run), run / "saes" / "syn" / "topk")
    shutil.copytree(_config_dir(fake_run), run / "saes" / "syn" / "relu")
    with pytest.raises(HusaiError, match="SAEs of 2 configs"):
        consensus([run])
    res = consensus([run / "saes" / "syn" / "topk"])  # no data folder: no quality, averaged
    assert res.summary["encoder"] == "averaged" and "quality" not in res.summary
    out = write_consensus(res, tmp_path / "cons")
    assert [p.name for p in out] == ["cons", "consensus_latents.csv", "consensus.json"]
