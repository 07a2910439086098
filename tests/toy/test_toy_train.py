import json
from pathlib import Path

import pytest
import torch

from husai.errors import HusaiError
from husai.io import dumps_json, read_json, write_json
from husai.toy import load_checkpoint, save_checkpoint, train_toy

HISTORY_KEYS = {"step", "train_loss", "test_loss", "test_acc", "n_key_freqs", "key_mass"}


def _strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_seconds"}


@pytest.fixture(scope="module")
def toy_tiny_run(toy_tiny_config):
    return train_toy(toy_tiny_config)


def test_training_is_bit_identical(toy_tiny_run, toy_tiny_config) -> None:
    model_a, summary_a = toy_tiny_run
    model_b, summary_b = train_toy(toy_tiny_config, progress=True)
    for (name, a), b in zip(
        model_a.state_dict().items(), model_b.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert dumps_json(_strip(summary_a)) == dumps_json(_strip(summary_b))


def test_summary_contents(toy_tiny_run) -> None:
    _, summary = toy_tiny_run
    json.loads(dumps_json(summary))  # JSON-able, finite
    assert summary["steps"] == 30 and summary["stopped_by"] == "max_steps"
    assert [h["step"] for h in summary["history"]] == [10, 20, 30]
    assert all(set(h) == HISTORY_KEYS for h in summary["history"])
    for key in ("train_acc", "test_acc", "train_loss", "test_loss", "fourier", "wall_seconds"):
        assert key in summary
    assert {"key_frequencies", "logit_r2", "passed", "frequency_fractions"} <= set(
        summary["fourier"]
    )


def test_checkpoint_round_trip(toy_tiny_run, toy_tiny_config, tmp_path: Path) -> None:
    model, summary = toy_tiny_run
    save_checkpoint(model, toy_tiny_config, summary, tmp_path)
    loaded, cfg, loaded_summary = load_checkpoint(tmp_path)
    assert cfg == toy_tiny_config
    assert loaded_summary == _strip(summary)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    tokens = torch.tensor([[1, 2, 11], [3, 4, 11]])
    assert torch.equal(model(tokens), loaded(tokens))
    first = (tmp_path / "config.json").read_bytes()
    save_checkpoint(model, toy_tiny_config, summary, tmp_path)
    assert (tmp_path / "config.json").read_bytes() == first  # byte-stable


def test_corrupt_checkpoints_raise(toy_tiny_run, toy_tiny_config, tmp_path: Path) -> None:
    model, summary = toy_tiny_run
    save_checkpoint(model, toy_tiny_config, summary, tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(HusaiError, match="model.safetensors"):
        load_checkpoint(tmp_path)
    weights.unlink()
    with pytest.raises(HusaiError, match="model.safetensors"):
        load_checkpoint(tmp_path)
    weights.write_bytes(data)
    meta = read_json(tmp_path / "config.json")
    meta["config"]["model"]["p"] = 12
    write_json(tmp_path / "config.json", meta)
    with pytest.raises(HusaiError, match=r"config\.json.*model"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(HusaiError, match="config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(HusaiError, match="config.json"):
        load_checkpoint(tmp_path)
