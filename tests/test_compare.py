"""`husai compare` and `husai.experiments.compare` on tiny SAEs trained here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from husai.cli import app
from husai.config import MetricsConfig, SAEConfig
from husai.experiments.compare import compare, write_comparison
from husai.metrics import assignment, matched_correlation, pwmcc
from husai.sae import load, save, train_sae

runner = CliRunner()
D, F = 12, 16


@pytest.fixture(scope="module")
def saes(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, torch.Tensor]:
    """Three TopK SAEs (seed 0's latent 0 is dead) and an activation file."""
    from husai.activations import save_activations

    base = tmp_path_factory.mktemp("cmp")
    g = torch.Generator().manual_seed(0)
    codes = (torch.rand(600, 20, generator=g) < 0.15).float() * torch.rand(600, 20, generator=g)
    x = codes @ torch.randn(20, D, generator=g)
    sae, _ = train_sae(SAEConfig(d_sae=F, k=3, epochs=2, batch_size=64), x, [0, 1, 2])
    with torch.no_grad():
        sae.b_enc[0, 0] = -1e4  # never among the top-k with a positive value
    paths = [save(sae.select(s), base / f"seed_{s}") for s in range(3)]
    acts = save_activations(base / "acts.safetensors", x, {"source": "test"})
    return paths, acts, x


def test_compare_library_matches_direct_metrics(saes) -> None:
    paths, _, x = saes
    res = compare(paths, MetricsConfig(n_bootstrap=200), activations=x, exclude_dead=True)
    s = res.summary
    assert s["dead_latents"] == {
        "excluded": True,
        "dropped_per_sae": [1, 0, 0],
        "latents_used_per_sae": [F - 1, F, F],
    }
    sae = [load(p) for p in paths]
    dec = [m.W_dec[0].detach() for m in sae]
    dec[0] = dec[0][1:]
    assert s["pwmcc"]["trained"]["pairs"][0] == pytest.approx(pwmcc(dec[0], dec[1]), abs=1e-6)
    mt = assignment(dec[1], dec[2])
    with torch.no_grad():
        c1, c2 = sae[1].encode(x)[0], sae[2].encode(x)[0]
    ref = matched_correlation(c1, c2, mt.rows, mt.cols).mean()
    assert s["activation_mcc"]["trained"]["pairs"][2] == pytest.approx(ref, abs=1e-9)
    for key in ("pwmcc", "hungarian_mcc", "shared_latent_rate", "subspace_similarity"):
        assert "higher = more consistent" in s[key]["variant"]
        assert 0.0 <= s[key]["trained"]["mean"] <= 1.0
    assert s["firing"]["per_sae"][0]["n_dead"] == 1
    assert len(res.per_latent) == 3 * F
    assert res.per_latent[0]["excluded"] == 1 and res.per_latent[0]["dead"] == 1
    assert len(res.latent_mean_best["trained"]) == 3 * F - 1


def test_cli_compare_all_options(saes, tmp_path: Path) -> None:
    paths, acts, _ = saes
    args = ["compare", *map(str, paths), "--encoder", "--activations", str(acts)]
    args += ["--exclude-dead", "--latents-csv", str(tmp_path / "lat.csv")]
    args += ["--json", str(tmp_path / "c.json"), "--figures", str(tmp_path / "figs")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "encoder-row consistency" in res.output
    assert "dead latents excluded before matching: 0:seed_0 1, 1:seed_1 0, 2:seed_2 0" in (
        " ".join(res.output.split())
    )
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["rows_compared"] == "encoder"
    assert out["dead_latents"]["dropped_per_sae"] == [1, 0, 0]
    for key in ("activation_mcc", "shared_latent_rate", "subspace_similarity", "hungarian_mcc"):
        assert set(out[key]) >= {"variant", "trained", "random", "trained_minus_random", "matrix"}
    assert (tmp_path / "figs" / "compare_heatmap.png").stat().st_size > 1000
    assert (tmp_path / "figs" / "latent_best_hist.png").stat().st_size > 1000
    with (tmp_path / "lat.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * F
    r = rows[F + 3]  # seed 1, latent 3
    vals = [float(r[f"best_abs_cos_sae{j}"]) for j in (0, 2)]
    assert r["best_abs_cos_sae1"] == ""
    assert float(r["min_best_abs_cos"]) == pytest.approx(min(vals))
    assert float(r["mean_best_abs_cos"]) == pytest.approx(np.mean(vals), abs=1e-6)
    assert rows[0]["dead"] == "1" and rows[0]["excluded"] == "1"


def test_cli_compare_errors(saes, tmp_path: Path) -> None:
    paths, _, _ = saes
    res = runner.invoke(app, ["compare", *map(str, paths[:2]), "--exclude-dead"])
    assert res.exit_code == 2 and "--activations" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["compare", *map(str, paths[:2]), "--format", "bogus"])
    assert res.exit_code == 2 and "unknown SAE format" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["compare", *map(str, paths[:2]), "--format", "saelens"])
    assert res.exit_code == 0, res.output
    other, _ = train_sae(SAEConfig(d_sae=8, k=2, epochs=1), torch.randn(64, 5), [0])
    save(other, tmp_path / "other")
    res = runner.invoke(app, ["compare", str(paths[0]), str(tmp_path / "other")])
    assert res.exit_code == 2
    assert "different d_in" in res.output and len(res.output.strip().splitlines()) == 1


def _run_consistency(tiny_run: Path) -> dict:
    m = json.loads((tiny_run / "metrics.json").read_text())
    return m["datasets"]["toy"]["architectures"]["topk"]["consistency"]


def test_compare_reproduces_the_runs_consistency(tiny_run: Path, tiny_dict: dict) -> None:
    """Same SAEs, same metrics config: compare's trained and random blocks are the run's,
    float for float (same dictionaries, same matching, same summariser)."""
    ours = _run_consistency(tiny_run)
    dirs = [tiny_run / "saes" / "toy" / "topk" / f"seed_{s}" for s in tiny_dict["seeds"]]
    res = compare(dirs, MetricsConfig.model_validate(tiny_dict["metrics"])).summary
    keys = ["pwmcc", "hungarian_mcc"] + [f"shared_fraction@{t}" for t in (0.5, 0.7, 0.9)]
    for key in keys:
        for part in ("trained", "random", "trained_minus_random", "matrix"):
            assert res[key][part] == ours[key][part], (key, part)
    assert res["pairs"] == ours["pairs"]


def test_cli_compare_on_a_runs_seeds_gives_its_numbers(tiny_run: Path, tmp_path: Path) -> None:
    ours = _run_consistency(tiny_run)["pwmcc"]
    dirs = sorted(str(p) for p in (tiny_run / "saes" / "toy" / "topk").glob("seed_*"))
    res = runner.invoke(app, ["compare", *dirs, "--json", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "c.json").read_text())["pwmcc"]
    assert out["random"]["mean"] == ours["random"]["mean"]
    assert out["random"]["pairs"] == ours["random"]["pairs"]
    assert out["trained"]["mean"] == ours["trained"]["mean"]
    assert out["matrix"] == ours["matrix"]


def test_compare_baseline_of_transcoders_has_the_decoder_width(tmp_path: Path) -> None:
    """Transcoders (d_out 7 ≠ d_in 12): compare's random decoder rows are those the run's
    evaluation draws (the decoder's width), so the random scores agree."""
    from husai.experiments.evaluate import consistency

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 12, generator=g), torch.randn(256, 7, generator=g)
    cfg = SAEConfig(architecture="topk", d_sae=16, k=2, epochs=1, batch_size=64)
    sae, _ = train_sae(cfg, x, [1, 2, 3], y_ND=y)
    paths = [save(sae.select(s), tmp_path / f"seed_{s}") for s in range(3)]
    m = MetricsConfig(n_bootstrap=100)
    want = consistency(sae, cfg, m, x, y)
    got = compare(paths, m).summary
    for key in ("pwmcc", "hungarian_mcc"):
        assert got[key]["random"] == want[key]["random"], key
        assert got[key]["trained"]["pairs"] == want[key]["trained"]["pairs"], key


def test_write_comparison_writes_what_the_cli_writes(saes, tmp_path: Path) -> None:
    """From Python, `compare` + `write_comparison` give the CLI's files, byte for byte (the
    JSON's figure paths aside), each written atomically (no temporary files left)."""
    paths, acts, _ = saes
    cli, lib = tmp_path / "cli", tmp_path / "lib"
    args = ["compare", *map(str, paths), "--activations", str(acts), "--exclude-dead"]
    args += ["--json", str(cli / "c.json"), "--latents-csv", str(cli / "lat.csv")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    cmp = compare(paths, activations=acts, exclude_dead=True)
    written = write_comparison(cmp, json_out=lib / "c.json", latents_csv=lib / "lat.csv")
    names = ["compare_heatmap.png", "latent_best_hist.png", "lat.csv", "c.json"]
    assert written == [lib / n for n in names]
    for d in (cli, lib):
        assert sorted(p.name for p in d.iterdir()) == sorted(names)
    for name in names[:3]:
        assert (lib / name).read_bytes() == (cli / name).read_bytes(), name
    got, want = (json.loads((d / "c.json").read_text()) for d in (lib, cli))
    assert got.pop("figures") == [str(lib / n) for n in names[:2]]
    assert want.pop("figures") == [str(cli / n) for n in names[:2]]
    assert got == want and "figures" not in cmp.summary
    assert write_comparison(cmp) == []


def test_compare_checks_its_options_for_python_callers_too(saes) -> None:
    from husai.errors import HusaiError

    paths, _, _ = saes
    with pytest.raises(HusaiError, match="shared_threshold"):
        compare(paths[:2], shared_threshold=1.5)
    with pytest.raises(HusaiError, match="subspace_rank"):
        compare(paths[:2], subspace_rank=0)
    res = runner.invoke(app, ["compare", *map(str, paths[:2]), "--subspace-rank", "0"])
    assert res.exit_code == 2 and "subspace_rank" in res.output
