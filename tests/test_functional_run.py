"""Functional correspondence end to end: the tiny run's `functional` blocks and report
section, and a planted check — seed B an exact copy of seed A with its latents permuted, so
every matched partner is the same latent: fingerprints and steering agree exactly (r = 1),
substitution changes nothing, random partners score lower."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _functional import check_planted, copy_permuted

from husai.config import MetricsConfig, ToyConfig
from husai.experiments.functional import functional_block, substituted, toy_probe
from husai.report.format import interval
from husai.sae import load as load_sae


def test_planted_copy_on_the_toy_model(tiny_run: Path) -> None:
    from husai.toy import load_checkpoint

    model, _, _ = load_checkpoint(tiny_run / "toy_model")
    toy = ToyConfig.model_validate(
        json.loads((tiny_run / "metrics.json").read_text())["toy_model"]["config"]
    )
    one = load_sae(tiny_run / "saes" / "toy" / "relu" / "seed_1")
    m = MetricsConfig(n_bootstrap=200, functional_probes=16)
    probe = toy_probe(model, toy, "blocks.0.resid_post", None, m)
    check_planted(functional_block(copy_permuted(one), probe, m, 8))


def test_substituted_latent_fires_as_in_the_other_seed(tiny_run: Path) -> None:
    a = load_sae(tiny_run / "saes" / "toy" / "relu" / "seed_1")
    b = load_sae(tiny_run / "saes" / "toy" / "relu" / "seed_2")
    x = torch.randn(20, a.d_in, generator=torch.Generator().manual_seed(0))
    ens = substituted(a, b, [(3, 7), (0, 0)])
    codes, ca, cb = ens.encode(x), a.encode(x)[0], b.encode(x)[0]
    assert torch.allclose(codes[0][:, 3], cb[:, 7], atol=1e-5)
    keep = [f for f in range(a.d_sae) if f != 3]
    assert torch.equal(codes[0][:, keep], ca[:, keep])
    assert torch.equal(ens.W_dec[0][3], b.W_dec[0][7]) and torch.equal(
        ens.W_dec[1][3], a.W_dec[0][3]
    )


def test_tiny_run_functional_blocks_and_report(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "metrics.json").read_text())
    report = (tiny_run / "report.md").read_text()
    assert "## " in report and "Functional correspondence" in report
    for label, arch in m["datasets"]["toy"]["architectures"].items():
        f = arch["functional"]
        assert f["n_sampled"] == len(f["samples"]) > 0
        assert f["seed_pairs"] == [[1, 2], [2, 3]]
        row = next(r for r in report.splitlines() if r.startswith(f"| {label} | ablation"))
        assert interval(f["ablation"]["matched"]) in row
        assert f"| {f['ablation']['matched']['n']} (" in row
        # matched pairs split by the sign of their decoder cosine, recounted from the samples
        signed = [s["cos_signed"] for s in f["samples"]]
        for key, part in (
            ("ablation_r", f["ablation"]),
            ("steering_r", f["steering"]["correlation"]),
        ):
            neg, pos = part["by_sign"]
            vals = [s[key][0] for s in f["samples"]]
            assert neg["count"] == sum(
                c < 0 and v is not None for c, v in zip(signed, vals, strict=True)
            )
            assert pos["count"] == sum(
                c >= 0 and v is not None for c, v in zip(signed, vals, strict=True)
            )
        assert "Matched pairs by the sign of their decoder cosine" in report
