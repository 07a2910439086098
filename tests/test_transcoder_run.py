"""`husai run` with a transcoder data set (DataConfig.target_hook): inputs at the activation
hook, targets at a later hook; metrics against the target."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from husai.activations import load_activation_pair
from husai.config import parse_run_config
from husai.errors import HusaiError
from husai.experiments import run
from husai.metrics import explained_variance, mse
from husai.sae import load

IN_HOOK, OUT_HOOK = "blocks.0.resid_mid", "blocks.0.mlp_out"


@pytest.fixture(scope="module")
def tc(tiny_dict: dict) -> dict:
    """The tiny config (conftest) with one transcoder data set and its TopK SAE."""
    return {
        **tiny_dict,
        "activations": {"hook": IN_HOOK},
        "data": [{"name": "mlp", "target_hook": OUT_HOOK}],
        "saes": [tiny_dict["saes"][0]],
    }


@pytest.fixture(scope="module")
def tc_run(tmp_path_factory: pytest.TempPathFactory, tc: dict) -> Path:
    base = tmp_path_factory.mktemp("tc_run")
    run(parse_run_config(tc), base / "run", cache_dir=base / "cache")
    return base / "run"


def test_saved_saes_are_transcoders(tc_run: Path) -> None:
    x, y, meta = load_activation_pair(tc_run / "data" / "mlp" / "activations.safetensors")
    assert meta["hook"] == IN_HOOK and meta["target_hook"] == OUT_HOOK
    assert not torch.equal(x, y)
    cfg = json.loads((tc_run / "saes" / "mlp" / "topk" / "seed_1" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk_transcoder" and cfg["d_out"] == 32
    for seed in (1, 2, 3):
        sae = load(tc_run / "saes" / "mlp" / "topk" / f"seed_{seed}")
        assert sae.transcoder and sae.d_in == sae.d_out == 32 and sae.seeds == [seed]
        assert (sae.hook_name, sae.hook_name_out) == (IN_HOOK, OUT_HOOK)


def test_quality_and_baselines_are_against_the_target(tc_run: Path) -> None:
    m = json.loads((tc_run / "metrics.json").read_text())
    ds = m["datasets"]["mlp"]
    assert ds["target_hook"] == OUT_HOOK and ds["d_out"] == 32
    a = ds["architectures"]["topk"]
    x, y, _ = load_activation_pair(tc_run / "data" / "mlp" / "activations.safetensors")
    for seed in (1, 2, 3):
        sae = load(tc_run / "saes" / "mlp" / "topk" / f"seed_{seed}")
        with torch.no_grad():
            pred = sae(x)[0]
        q = a["quality"]["per_seed"][str(seed)]
        assert q["explained_variance"] == pytest.approx(explained_variance(y, pred), abs=1e-6)
        assert q["mse"] == pytest.approx(mse(y, pred), rel=1e-5)
        assert q["explained_variance"] != pytest.approx(explained_variance(x, pred), abs=1e-3)
        assert q["l0"] <= 4 and "downstream_accuracy" in q
    c = a["consistency"]["pwmcc"]
    assert len(c["random"]["pairs"]) == 3 and c["trained"]["mean"] > c["random"]["mean"]
    report = (tc_run / "report.md").read_text()
    assert f"transcoder: input hook `{IN_HOOK}` → target hook `{OUT_HOOK}`" in report
    assert "EV and MSE against the target" in report


def test_random_baseline_has_target_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """The baselines have the decoder's width d_out (here ≠ d_in)."""
    from husai.config import MetricsConfig, SAEConfig
    from husai.experiments import evaluate as ev
    from husai.sae import train_sae

    cfg = SAEConfig(architecture="topk", d_sae=16, k=2, epochs=1, batch_size=64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 12, generator=g), torch.randn(256, 7, generator=g)
    sae, _ = train_sae(cfg, x, [1, 2], y_ND=y)
    calls = []
    real = ev.random_dictionaries_like
    monkeypatch.setattr(
        ev,
        "random_dictionaries_like",
        lambda shapes, seed: calls.append(shapes) or real(shapes, seed),
    )
    out = ev.consistency(sae, cfg, MetricsConfig(n_bootstrap=100), x, y)
    # one draw: the 2 random decoders at d_out = 7, then the 2 random encoders' rows at d_in
    assert calls == [[(16, 7), (16, 7), (16, 12), (16, 12)]]
    assert len(out["pwmcc"]["random"]["pairs"]) == 1
    q = ev.quality(sae, x, y)
    assert q[0]["explained_variance"] == pytest.approx(explained_variance(y, sae(x)[0]), abs=1e-6)


def test_rerun_skips_and_is_byte_identical(tc_run: Path, tmp_path: Path, tc: dict) -> None:
    again = tmp_path / "again"
    shutil.copytree(tc_run, again)
    run(parse_run_config(tc), again, cache_dir=tc_run.parent / "cache")
    man = json.loads((again / "manifest.json").read_text())
    assert man["jobs"]["skipped"] == ["mlp/topk"] and man["trained_this_run"] == []
    assert (again / "metrics.json").read_bytes() == (tc_run / "metrics.json").read_bytes()
    # lost job record: the SAEs are reloaded (not retrained) and re-evaluated identically
    (again / "saes" / "mlp" / "topk" / "job.json").unlink()
    run(parse_run_config(tc), again, cache_dir=tc_run.parent / "cache")
    man = json.loads((again / "manifest.json").read_text())
    assert man["jobs"]["ran"] == ["mlp/topk"] and man["trained_this_run"] == []
    assert (again / "metrics.json").read_bytes() == (tc_run / "metrics.json").read_bytes()


def test_transcoder_job_key_differs_from_sae_job(tc_run: Path, tmp_path: Path, tc: dict) -> None:
    man = json.loads((tc_run / "manifest.json").read_text())
    plain = {**tc, "data": [{"name": "mlp"}]}
    run(parse_run_config(plain), tmp_path / "plain", cache_dir=tc_run.parent / "cache")
    man2 = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert man["jobs"]["keys"]["mlp/topk"] != man2["jobs"]["keys"]["mlp/topk"]
    assert not load(tmp_path / "plain" / "saes" / "mlp" / "topk" / "seed_1").transcoder


@pytest.mark.parametrize(
    ("data", "hook", "msg"),
    [
        ({"name": "m", "target_hook": "blocks.0.mlp_outt"}, IN_HOOK, "unknown target_hook"),
        ({"name": "m", "target_hook": "blocks.0.attn_out"}, IN_HOOK, "must come after"),
        ({"name": "m", "target_hook": IN_HOOK}, IN_HOOK, "must come after"),
        (
            {"name": "m", "source": "file", "path": "a.safetensors", "target_hook": OUT_HOOK},
            IN_HOOK,
            "target_hook needs source 'toy'",
        ),
    ],
)
def test_bad_target_hook_is_a_one_line_config_error(data: dict, hook: str, msg: str) -> None:
    with pytest.raises(HusaiError) as e:
        parse_run_config({"activations": {"hook": hook}, "data": [data]})
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_downstream_splices_the_prediction_at_the_target_hook(tc_run: Path) -> None:
    """1-layer toy model: logits = (resid_mid + mlp_out) @ W_U at the answer position, so the
    spliced run must equal (resid_mid + transcoder(resid_mid)) @ W_U."""
    import torch.nn.functional as fn

    from husai.experiments.evaluate import downstream
    from husai.toy import load_checkpoint, make_dataset

    model, toy_cfg, _ = load_checkpoint(tc_run / "toy_model")
    tokens, labels = make_dataset(toy_cfg.model.p, toy_cfg.model.op)
    sae = load(tc_run / "saes" / "mlp" / "topk" / "seed_2")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, [IN_HOOK])
        mid = cache[IN_HOOK]
        logits = (mid + sae(mid)[0]) @ model.W_U
    out = downstream(model, IN_HOOK, tokens, labels, sae, torch.zeros(32), hook_out=OUT_HOOK)
    r = out["per_seed"][0]
    assert r["loss"] == pytest.approx(float(fn.cross_entropy(logits, labels)), rel=1e-5)
    assert r["accuracy"] == float((logits.argmax(-1) == labels).float().mean())
    with torch.no_grad():
        zero = float(fn.cross_entropy(mid @ model.W_U, labels))
    assert out["baselines"]["zero_ablated"]["loss"] == pytest.approx(zero, rel=1e-5)
