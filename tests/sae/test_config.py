"""SAEConfig: shared fields + the architecture's own params, flat on the way in and out."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from husai.config import SAEConfig, parse_config, parse_run_config
from husai.errors import HusaiError
from husai.io import load_tensors, read_json
from husai.sae import REGISTRY, architectures, build_sae, load, save, train_sae
from husai.sae.registry import field_owners

DATA = Path(__file__).resolve().parents[1] / "data"
TOPK_FAMILY = "archetypal, batchtopk, hierarchical_topk, matryoshka, routesae, topk"


@pytest.mark.parametrize("first", ["husai.sae", "husai.config", "husai.sae.architectures.topk"])
def test_any_module_imports_first(first: str) -> None:
    code = f"import {first}; from husai.sae import REGISTRY; print(len(REGISTRY))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(REGISTRY)


def test_every_module_of_the_subpackage_is_a_registered_architecture() -> None:
    modules = {m.name for m in pkgutil.iter_modules(architectures.__path__)}
    assert modules == {cls.__module__.rsplit(".", 1)[1] for cls in REGISTRY.values()}
    for name, cls in REGISTRY.items():
        assert cls.architecture == name and cls.uses_k == ("k" in cls.Params.model_fields)
        assert cls.coefficient_field in (None, *cls.Params.model_fields)


def test_a_field_shared_by_architectures_has_one_definition() -> None:
    """The CLI and `husai run --help` show one default and description per field name."""
    for name, archs in field_owners().items():
        infos = [REGISTRY[a].Params.model_fields[name] for a in archs]
        assert len({(repr(f.get_default()), f.description) for f in infos}) == 1, name
        assert name not in SAEConfig.model_fields


def test_flat_keys_are_routed_and_dumped_flat() -> None:
    cfg = SAEConfig(architecture="topk", k=8, d_sae=256)
    assert cfg.params.k == 8 and type(cfg.params) is REGISTRY["topk"].Params
    dump = cfg.model_dump(mode="json")
    shared = set(SAEConfig.model_fields) - {"params"}
    assert set(dump) == shared | set(REGISTRY["topk"].Params.model_fields)
    assert "params" not in dump and "l1_coefficient" not in dump and dump["k"] == 8
    assert SAEConfig.model_validate(dump) == cfg
    relu = SAEConfig(architecture="relu", l1_coefficient=0.5).model_dump()
    assert set(relu) == shared | {"l1_coefficient"}
    mat = SAEConfig(architecture="matryoshka", prefix_sizes=[0.5, 1]).model_dump(mode="json")
    assert mat["prefix_sizes"] == [0.5, 1.0] and mat["k"] == 32
    assert cfg.with_fields(k=4).params.k == 4 and cfg.with_fields(k=4).d_sae == 256


@pytest.mark.parametrize(
    ("saes", "message"),
    [
        (
            [{"architecture": "topk"}, {"architecture": "relu", "k": 8}],
            f"config: saes.1: k is not a field of architecture relu (it belongs to {TOPK_FAMILY})",
        ),
        (
            [{"architecture": "topk", "l1_coefficient": 1.0}],
            "config: saes.0: l1_coefficient is not a field of architecture topk "
            "(it belongs to gated, relu)",
        ),
        ([{"architecture": "relu", "kk": 1}], "config: saes.0.kk: Extra inputs are not permitted"),
        ([{"architecture": "topk", "k": 0}], "config: saes.0.k: Input should be greater than 0"),
        (
            [{"architecture": "matryoshka", "prefix_sizes": [0.5, 2]}],
            "config: saes.0.prefix_sizes: prefix_sizes must lie in (0, 1]",
        ),
        ([{"architecture": "topk", "k": 64, "d_sae": 32}], "k (64) must be ≤ d_sae (32)"),
        ([{"architecture": "nope"}], "unknown architecture 'nope' (known: archetypal, batchtopk"),
        (
            [{"architecture": "batchtopk", "multi_topk": 0.125}],
            "config: saes.0: multi_topk is not supported by architecture batchtopk",
        ),
        (
            [{"architecture": "topk", "multi_topk": 0.125, "balance_rate": 0.01}],
            "config: saes.0: multi_topk and balance_rate cannot be combined",
        ),
        (
            [{"architecture": "topk", "lr_min_fraction": 0.1}],
            "config: saes.0: lr_min_fraction is set but lr_schedule is 'constant'",
        ),
        (
            [{"architecture": "relu", "lr_schedule": "step"}],
            "config: saes.0.lr_schedule: Input should be 'constant', 'cosine' or 'linear'",
        ),
        (
            [{"architecture": "gated", "weight_decay": -1}],
            "config: saes.0.weight_decay: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_sae_fields_are_one_line_errors(saes: list, message: str) -> None:
    with pytest.raises(HusaiError) as e:
        parse_run_config({"saes": saes})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_overrides_set_an_architecture_field_only_where_it_exists() -> None:
    data = [
        {
            "name": "syn",
            "source": "synthetic",
            "sae_overrides": {"jumprelu_init_threshold": 0.1, "target_l0": 4, "d_sae": 64},
        }
    ]
    saes = [{"architecture": "topk", "k": 8}, {"architecture": "jumprelu"}]
    cfg = parse_run_config({"data": data, "saes": saes})
    topk, jump = cfg.saes_for(cfg.data[0])
    assert topk.params.k == 4 and "jumprelu_init_threshold" not in topk.model_dump()
    assert jump.params.jumprelu_init_threshold == 0.1 and jump.d_sae == 64
    data[0]["sae_overrides"] = {"prefix_sizes": [0.5, 1.0]}
    with pytest.raises(HusaiError, match="prefix_sizes is not a field of any SAE's architecture"):
        parse_run_config({"data": data, "saes": saes})


def test_calibrate_config_takes_flat_keys() -> None:
    from husai.experiments.calibrate import CalibrateConfig

    cfg = parse_config({"sae": {"architecture": "batchtopk", "k": 8}}, CalibrateConfig)
    run = cfg.run_config([4, 16], (1, 2, 3), epochs=2)
    assert [(s.label, s.params.k, s.epochs) for s in run.saes] == [("k4", 4, 2), ("k16", 16, 2)]
    with pytest.raises(HusaiError, match="config: sae: l1_coefficient is not a field of"):
        parse_config({"sae": {"l1_coefficient": 1.0}}, CalibrateConfig)
    with pytest.raises(HusaiError, match="calibrate chooses k: relu has no k"):
        parse_config({"sae": {"architecture": "relu"}}, CalibrateConfig)


@pytest.mark.parametrize(("arch", "own"), [("topk", {"k": 2}), ("relu", {"l1_coefficient": 0.5})])
def test_a_cfg_json_of_the_old_flat_config_loads(arch: str, own: dict) -> None:
    """tests/data/legacy_*: saved before the per-architecture configs, every architecture's
    fields in husai.config; the foreign ones are dropped on load."""
    path = DATA / f"legacy_{arch}"
    saved = read_json(path / "cfg.json")["husai"]["config"]
    assert {"k", "l1_coefficient", "prefix_sizes", "jumprelu_bandwidth"} <= set(saved)
    sae = load(path)
    assert sae.architecture == arch and sae.seeds == [7] and sae.hook_name == "blocks.0.resid_post"
    dump = sae.cfg.model_dump(mode="json")
    assert {k: dump[k] for k in saved if k in dump} == {k: v for k, v in saved.items() if k in dump}
    newer = set(dump) - set(saved)  # fields added after the file was saved take their defaults
    fields = {**SAEConfig.model_fields, **REGISTRY[arch].Params.model_fields}
    assert all(dump[k] == fields[k].default for k in newer)
    assert {k: dump[k] for k in own} == own and dump["d_sae"] == 8 and dump["epochs"] == 2
    assert set(dump) == set(SAEConfig.model_fields) - {"params"} | set(
        REGISTRY[arch].Params.model_fields
    )
    tensors, _ = load_tensors(path / "sae_weights.safetensors")
    weights = sae.saelens_weights()
    assert weights.keys() == tensors.keys()
    for name, t in tensors.items():
        assert torch.equal(weights[name], t), name


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_saelens_weights_are_what_save_writes(arch: str, tmp_path: Path) -> None:
    D, F = 5, 12
    cfg = SAEConfig.model_validate(
        {"architecture": arch, "d_sae": F, "epochs": 1, "batch_size": 16}
        | ({"k": 3} if REGISTRY[arch].uses_k else {})
    )
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(1))
    ens, _ = train_sae(cfg, x, [3, 4])
    with pytest.raises(HusaiError, match="an ensemble of 2 seeds"):
        ens.saelens_weights()
    save(ens.select(1), tmp_path / "s")
    tensors, _ = load_tensors(tmp_path / "s" / "sae_weights.safetensors")
    for weights in (ens.saelens_weights(index=1), load(tmp_path / "s").saelens_weights()):
        assert weights.keys() == tensors.keys()
        for name, t in tensors.items():
            assert torch.equal(weights[name], t), name
    w = load(tmp_path / "s").saelens_weights()
    assert w["W_enc"].shape == (D, F) and w["W_dec"].shape == (F, D) and w["b_dec"].shape == (D,)
    assert ("threshold" in w) == (REGISTRY[arch].saelens_architecture == "jumprelu")
    one = build_sae(cfg, D, [9])
    assert one.saelens_weights()["W_enc"].data_ptr() != one.W_enc.data_ptr()  # a copy
