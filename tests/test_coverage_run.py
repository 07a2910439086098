"""The run's coverage and stability-by-frequency blocks, their figures and report section."""

from pathlib import Path

from husai.io import read_json


def test_run_has_coverage_and_stability_by_frequency(tiny_run: Path):
    metrics = read_json(tiny_run / "metrics.json")
    n_seeds = len(metrics["seeds"])
    report = (tiny_run / "report.md").read_text()
    assert "### Where consistency lives" in report and "0.58 with 2" in report
    for name, ds in metrics["datasets"].items():
        assert (tiny_run / "figures" / f"coverage_{name}.png").is_file()
        assert (tiny_run / "figures" / f"stability_frequency_{name}.png").is_file()
        for a in ds["architectures"].values():
            cov = a["coverage"]
            for group in ("trained", "random"):
                assert [p["n"] for p in cov[group]] == list(range(2, n_seeds + 1))
                for key in ("max_cos@0.7", "hungarian@0.7"):
                    vals = [p[key] for p in cov[group]]
                    assert all(0 <= v <= 1 for v in vals)
                    # all subsets at every n: a larger subset can only cover more latents
                    assert vals == sorted(vals, reverse=True)
            sf = a["stability_by_frequency"]
            per_seed = a["quality"]["per_seed"]
            assert sum(b["count"] for b in sf["bins"]) == sf["n_latents"]
            assert sf["n_latents"] == n_seeds * a["config"]["d_sae"]
            dead = next((b["count"] for b in sf["bins"] if b["bin"] == "dead"), 0)
            want_dead = sum(q["dead_fraction"] for q in per_seed.values()) * a["config"]["d_sae"]
            assert dead == round(want_dead)  # the quality block's firing, same rows
