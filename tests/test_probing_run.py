"""The `probing` block of the tiny toy run (SAEBench's sparse probing) and its report section."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from husai.toy.tasks import probe_labels


def test_probing_block_of_the_tiny_run(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["metrics_config"]["probing"] is True
    for label in ("topk", "relu"):
        p = m["datasets"]["toy"]["architectures"][label]["probing"]
        ks = p["settings"]["ks"]
        assert ks == [1, 2, 5, 10, 20] and p["n_tasks"] == 10
        probed = {n: t for n, t in p["tasks"].items() if "skipped" not in t}
        assert len(probed) == p["n_probed"] and "a<p/2" in probed
        for t in probed.values():
            assert t["n_train"] + t["n_test"] == 2 * min(t["n_positive"], t["n_negative"])
            for group in ("trained", "init"):
                for k in ks:
                    auc = t[group][str(k)]["auc"]
                    assert len(auc["per_seed"]) == 3
                    assert auc["ci_low"] <= auc["mean"] <= auc["ci_high"]
                    assert t[group][str(k)]["vs_raw_full"] in ("win", "loss", "tie")
        for group in ("trained", "init"):
            for base in ("vs_raw_top_k", "vs_raw_full"):
                for k in ks:
                    n = p["tally"][group][base][str(k)]
                    calls = [t[group][str(k)][base] for t in probed.values()]
                    assert [n["wins"], n["losses"], n["ties"]] == [
                        calls.count(c) for c in ("win", "loss", "tie")
                    ]
    report = (tiny_run / "report.md").read_text()
    assert "### Sparse probing (SAEBench's protocol) on `toy`" in report
    assert "21 wins / 88 losses / 4 ties" in report


def test_toy_probe_labels_match_a_loop_over_pairs() -> None:
    p, rows = 7, torch.tensor([0, 5, 12, 30, 48])
    labels = probe_labels(p, "add", rows)
    for i, r in enumerate(rows.tolist()):
        a, b = divmod(r, p)
        c = (a + b) % p
        assert bool(labels["c=0"][i]) == (c == 0) and bool(labels["c=3"][i]) == (c == 3)
        assert bool(labels["a<p/2"][i]) == (a < 3.5) and bool(labels["b even"][i]) == (b % 2 == 0)
        assert bool(labels["c even"][i]) == (c % 2 == 0)
    assert set(labels) == {"c=0", "c=1", "c=3", "c=5"} | {
        f"{v}{s}" for v in "abc" for s in ("<p/2", " even")
    }
