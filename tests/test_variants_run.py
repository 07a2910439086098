"""The metric variants end to end (tiny run): metrics.json blocks per SAE configuration, the
report's variant tables read from them, the shared-rate curve figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from husai.metrics.variants import SHARED_CURVE_THRESHOLDS
from husai.report.format import interval


def test_every_sae_has_the_variant_blocks(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "metrics.json").read_text())
    for arch in m["datasets"]["toy"]["architectures"].values():
        c = arch["consistency"]
        for key in ("hungarian_signed", "hungarian_minus_pwmcc"):
            assert {"trained", "random", "init", "trained_minus_random", "variant"} <= set(c[key])
        gap = np.subtract(c["hungarian_mcc"]["trained"]["pairs"], c["pwmcc"]["trained"]["pairs"])
        assert np.allclose(c["hungarian_minus_pwmcc"]["trained"]["pairs"], gap)
        assert all(
            s <= h + 1e-9
            for s, h in zip(
                c["hungarian_signed"]["random"]["pairs"],
                c["hungarian_mcc"]["random"]["pairs"],
                strict=True,
            )
        )
        curve = c["shared_latent_curve"]
        assert curve["thresholds"] == list(SHARED_CURVE_THRESHOLDS)
        for kind in ("signed", "absolute"):
            means = [p["trained"]["mean"] for p in curve[kind]]
            assert means == sorted(means, reverse=True)
            assert {"random", "init", "trained_minus_random"} <= set(curve[kind][0])


def test_report_variant_table_reads_metrics_json(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "metrics.json").read_text())
    report = (tiny_run / "report.md").read_text()
    assert (tiny_run / "figures" / "shared_rate_curve_toy.png").is_file()
    assert "![P&B shared-rate curve](figures/shared_rate_curve_toy.png)" in report
    c = m["datasets"]["toy"]["architectures"]["topk"]["consistency"]
    row = next(r for r in report.splitlines() if r.startswith("| Hungarian on signed cos"))
    assert interval(c["hungarian_signed"]["trained"]) in row
    assert f"{c['hungarian_signed']['random']['mean']:.3f}" in row
    p07 = next(p for p in c["shared_latent_curve"]["signed"] if p["threshold"] == 0.7)
    row = next(r for r in report.splitlines() if r.startswith("| P&B shared rate, signed"))
    assert interval(p07["trained_minus_random"], "+") in row
