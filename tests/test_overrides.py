"""Per-data-set SAE overrides in a run config."""

from __future__ import annotations

import pytest

from husai.config import parse_run_config
from husai.errors import HusaiError


def test_overrides_apply_to_their_data_set_only() -> None:
    cfg = parse_run_config(
        {
            "data": [
                {"name": "toy"},
                {"name": "syn", "source": "synthetic", "sae_overrides": {"k": 4, "d_sae": 64}},
            ],
            "saes": [{"architecture": "topk"}, {"architecture": "batchtopk", "k": 8}],
        }
    )
    assert [(s.params.k, s.d_sae) for s in cfg.saes_for(cfg.data[0])] == [(32, 1024), (8, 1024)]
    assert [(s.params.k, s.d_sae) for s in cfg.saes_for(cfg.data[1])] == [(4, 64), (4, 64)]
    assert [s.label for s in cfg.saes_for(cfg.data[1])] == ["topk", "batchtopk"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kk": 4}, "config: data syn: sae_overrides: kk: Extra inputs are not permitted"),
        ({"target_l0": 4.5}, "target_l0 \\(4.5\\) sets k here: it must be a whole number"),
        ({"target_l0": 4, "k": 8}, "k \\(8\\) and target_l0 \\(4\\) disagree"),
        ({"architecture": "relu"}, "sae_overrides cannot set name or architecture"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides: dict, message: str) -> None:
    data = [{"name": "syn", "source": "synthetic", "sae_overrides": overrides}]
    with pytest.raises(HusaiError, match=message) as e:
        parse_run_config({"data": data})
    assert "\n" not in str(e.value)


def test_target_l0_sets_k_for_the_topk_family_and_overrides_it() -> None:
    data = [{"name": "syn", "source": "synthetic", "sae_overrides": {"target_l0": 4}}]
    saes = [{"architecture": "topk", "target_l0": 32}, {"architecture": "relu", "target_l0": 32}]
    cfg = parse_run_config({"data": data, "saes": saes})
    assert cfg.saes[0].params.k == 32
    over = cfg.saes_for(cfg.data[0])
    assert [(s.model_dump().get("k"), s.target_l0) for s in over] == [(4, 4), (None, 4)]
