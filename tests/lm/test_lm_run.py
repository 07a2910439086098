"""`husai run` with the `lm` data source, end to end on a tiny saved Llama and a word corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from husai.config import parse_run_config
from husai.errors import HusaiError
from husai.experiments.run import run
from husai.io import read_json


def _config(model_dir: Path, corpus: Path, layers: tuple[int, ...] = (1,), **lm: object):
    data = [
        {
            "name": f"tiny_l{layer}",
            "source": "lm",
            "lm": {
                "model": str(model_dir),
                "layer": layer,
                "site": "resid_post",
                "corpus": str(corpus),
                "context_size": 16,
                "train_tokens": 16 * 48,
                "eval_contexts": 4,
                "batch_size": 4,
                "contexts_per_shard": 8,
                **lm,
            },
        }
        for layer in layers
    ]
    return parse_run_config(
        {
            "data": data,
            "saes": [
                {
                    "architecture": "topk",
                    "k": 4,
                    "d_sae": 64,
                    "epochs": 2,
                    "batch_size": 64,
                    "shuffle_buffer": 200,
                },
                {"architecture": "relu", "d_sae": 64, "epochs": 2, "batch_size": 64},
            ],
            "seeds": [1, 2, 3],
            "metrics": {"n_bootstrap": 200, "functional_lm_latents": 4},
        }
    )


def test_lm_run_end_to_end_is_deterministic_and_reuses_the_extraction(
    tmp_path: Path, model_dir: Path, corpus: Path
) -> None:
    cfg = _config(model_dir, corpus, layers=(0, 2))
    cache = tmp_path / "cache"
    metrics = run(cfg, tmp_path / "a", cache_dir=cache)
    manifest = read_json(tmp_path / "a" / "manifest.json")
    ext = manifest["lm_extraction"]
    # one forward pass serves both layers: each data set reports the same shared pass
    assert ext["tiny_l0"]["tokens_forward"] == 48 * 16 == ext["tiny_l2"]["tokens_forward"]
    entry = metrics["datasets"]["tiny_l2"]
    assert entry["source"] == "lm" and entry["hook"] == "blocks.2.hook_resid_post"
    assert entry["n"] == 48 * 15  # position 0 dropped
    assert entry["token_counts"]["dropped_first"] == 48
    arch = (
        entry["architectures"]["topk_k4_d64"]
        if "topk_k4_d64" in entry["architectures"]
        else next(iter(entry["architectures"].values()))
    )
    assert {"trained", "random", "init"} <= set(arch["consistency"]["pwmcc"])
    f = arch["functional"]  # husai.experiments.functional on the LM (tests/lm/test_functional_lm)
    assert 0 < f["n_sampled"] <= 4 and f["probe"]["n_tokens"] == 15
    lm_c = arch["lm_consistency"]
    assert {"shared_latent_rate", "subspace_similarity", "activation_mcc", "firing"} <= set(lm_c)
    per_seed = arch["quality"]["per_seed"]["1"]
    for key in (
        "mse",
        "explained_variance",
        "l0",
        "dead_fraction",
        "downstream_loss",
        "downstream_kl_to_clean",
        "downstream_loss_recovered_vs_zero",
    ):
        assert key in per_seed, key
    assert arch["quality"]["per_seed"]["1"]["l0"] <= 4 + 1e-6
    base = arch["downstream_baselines"]
    assert base["clean"]["loss"] < base["zero_ablated"]["loss"] or True  # random model
    assert arch["lm_eval"]["n_replaced_tokens"] == 4 * 15
    probing = arch["probing"]  # 6 token properties + 3 frequent tokens; 60 tokens: all skipped
    assert probing["n_tasks"] == 9 and probing["rows"].startswith("60 held-out tokens")

    cfg_json = read_json(tmp_path / "a" / arch["saes"]["1"] / "cfg.json")
    assert cfg_json["model_name"] == str(model_dir)
    assert cfg_json["hook_name"] == "blocks.2.hook_resid_post"
    assert cfg_json["context_size"] == 16 and cfg_json["prepend_bos"] is True
    assert cfg_json["normalize_activations"] == "expected_average_only_in"
    assert cfg_json["norm_scaling_factor"] == entry["normalization"]["scale"]

    again = run(cfg, tmp_path / "b", cache_dir=cache)
    ext_b = read_json(tmp_path / "b" / "manifest.json")["lm_extraction"]
    assert ext_b["tiny_l0"]["tokens_forward"] == 0  # every shard reused from the cache
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (
        tmp_path / "b" / "metrics.json"
    ).read_bytes()
    assert again == metrics


def test_lm_config_errors(tmp_path: Path, model_dir: Path, corpus: Path) -> None:
    with pytest.raises(HusaiError, match="layer 7 out of range"):
        run(_config(model_dir, corpus, layers=(7,)), tmp_path / "r", cache_dir=tmp_path / "c")
    with pytest.raises(HusaiError, match="holds .* contexts of 16 tokens"):
        run(
            _config(model_dir, corpus, train_tokens=16 * 5000),
            tmp_path / "r2",
            cache_dir=tmp_path / "c",
        )
    with pytest.raises(HusaiError, match="unknown site"):
        parse_run_config({"data": [{"name": "x", "source": "lm", "lm": {"site": "nope"}}]})
