"""`husai run` with a multi-layer `lm` set (lm.layers) and RouteSAE, end to end on the tiny
saved Llama (3 layers, d 32)."""

from __future__ import annotations

from pathlib import Path

import pytest

from husai.config import parse_run_config
from husai.errors import HusaiError
from husai.experiments.run import run
from husai.io import read_json

ROUTE = {"architecture": "routesae", "k": 4, "d_sae": 64, "epochs": 2, "batch_size": 64}


def _config(model_dir: Path, corpus: Path, saes: list | None = None, **lm: object):
    fields = {
        "model": str(model_dir),
        "layers": [0, 1, 2],
        "site": "resid_post",
        "corpus": str(corpus),
        "context_size": 16,
        "train_tokens": 16 * 48,
        "eval_contexts": 4,
        "batch_size": 4,
        "contexts_per_shard": 8,
        **lm,
    }
    return parse_run_config(
        {
            "data": [{"name": "tiny_route", "source": "lm", "lm": fields}],
            "saes": saes or [ROUTE],
            "seeds": [1, 2, 3],
            "metrics": {"n_bootstrap": 200},
        }
    )


def test_a_routesae_run_on_three_layers_is_deterministic(
    tmp_path: Path, model_dir: Path, corpus: Path
) -> None:
    cfg = _config(model_dir, corpus)
    cache = tmp_path / "cache"
    metrics = run(cfg, tmp_path / "a", cache_dir=cache)
    entry = metrics["datasets"]["tiny_route"]
    assert entry["layers"] == [0, 1, 2] and entry["d"] == 3 * 32 and entry["d_layer"] == 32
    assert entry["n"] == 48 * 15
    assert [p["hook"] for p in entry["per_layer"]] == [
        f"blocks.{i}.hook_resid_post" for i in range(3)
    ]
    arch = entry["architectures"]["routesae"]
    assert arch["config"]["n_layers"] == 3
    pw = arch["consistency"]["pwmcc"]
    assert {"trained", "random", "init"} <= set(pw)
    q = arch["quality"]["per_seed"]
    assert set(q) == {"1", "2", "3"}
    for s in q.values():
        assert s["l0"] <= 4 + 1e-6 and s["mse"] >= 0 and "explained_variance" in s
    routing = arch["routing"]
    assert routing["eval_tokens"] == 4 * 15
    for fr in routing["per_seed"].values():
        assert len(fr) == 3 and abs(sum(fr) - 1) < 1e-6
    assert arch["downstream"] is None and "RouteSAE" in arch["downstream_reason"]
    report = (tmp_path / "a" / "report.md").read_text()
    assert "layer distribution" in report and "not defined for a RouteSAE" in report

    run(cfg, tmp_path / "b", cache_dir=cache)
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (
        tmp_path / "b" / "metrics.json"
    ).read_bytes()
    cfg_json = read_json(tmp_path / "a" / arch["saes"]["1"] / "cfg.json")
    assert cfg_json["architecture"] == "routesae"


def test_bad_multi_layer_configs_error_in_one_line(
    tmp_path: Path, model_dir: Path, corpus: Path
) -> None:
    topk = {"architecture": "topk", "k": 4, "d_sae": 64}
    cases = [
        (dict(saes=[topk]), "trains routesae SAEs only"),
        (dict(saes=[{**ROUTE, "n_layers": 2}]), "n_layers 2 ≠ the set's 3 layers"),
        (dict(layer=1), "set `layer` or `layers`, not both"),
        (dict(layers=[1]), "need ≥ 2 distinct layers"),
        (dict(outlier_factor=5.0), "cannot drop outliers per layer"),
    ]
    good = _config(model_dir, corpus)
    assert parse_run_config(good.model_dump(mode="json")) == good  # `layer` mirrors layers[0]
    assert good.data[0].lm.layer == 0
    for kwargs, msg in cases:
        with pytest.raises(HusaiError, match=msg) as e:
            _config(model_dir, corpus, **kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(HusaiError, match="layer 5 out of range"):
        run(_config(model_dir, corpus, layers=[0, 5]), tmp_path / "r", cache_dir=tmp_path / "c")
    one = parse_run_config(
        {
            "data": [{"name": "x", "source": "lm", "lm": {"model": "m", "layer": 1}}],
            "saes": [ROUTE],
        }
    )
    assert one.saes_for(one.data[0])[0].params.n_layers == 1
    with pytest.raises(HusaiError, match="needs a multi-layer set"):
        parse_run_config(
            {
                "data": [{"name": "x", "source": "lm", "lm": {"model": "m", "layer": 1}}],
                "saes": [{**ROUTE, "n_layers": 3}],
            }
        )


def test_a_multi_layer_set_shares_the_forward_with_a_one_layer_set(
    tmp_path: Path, model_dir: Path, corpus: Path
) -> None:
    raw = _config(model_dir, corpus).model_dump(mode="json")
    one = {**raw["data"][0], "name": "tiny_l1"}
    one["lm"] = {**one["lm"], "layers": None, "layer": 1}
    cfg = parse_run_config({**raw, "data": [raw["data"][0], one]})
    metrics = run(cfg, tmp_path / "a", cache_dir=tmp_path / "cache")
    ext = read_json(tmp_path / "a" / "manifest.json")["lm_extraction"]
    assert ext["tiny_route"]["tokens_forward"] == 48 * 16 == ext["tiny_l1"]["tokens_forward"]
    single = metrics["datasets"]["tiny_l1"]["architectures"]["routesae"]
    assert single["config"]["n_layers"] == 1 and "downstream_loss" in single["quality"]["mean"]
    multi = metrics["datasets"]["tiny_route"]
    # the one-layer set's store holds the same rows as the multi-layer set's layer 1
    assert (
        metrics["datasets"]["tiny_l1"]["store_content_hash"]
        == (multi["per_layer"][1]["store_content_hash"])
    )
