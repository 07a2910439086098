"""Offline loading from a local directory: a saved tiny model round-trips; non-models and
unsupported families are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _lm_tiny import tiny_model

from husai.errors import HusaiError
from husai.lm import capture, load_model

transformers = pytest.importorskip(
    "transformers", reason="transformers not installed (pip install -e '.[lm]')"
)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_saved_model_loads_offline_and_captures_the_same(tmp_path: Path, family: str) -> None:
    model = tiny_model(family)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert not loaded.training and type(loaded) is type(model)
    ids = torch.arange(12).reshape(2, 6)
    name = "blocks.1.hook_resid_post"
    torch.testing.assert_close(
        capture(loaded, ids, [name])[name], capture(model, ids, [name])[name]
    )


def _one_line(path: Path, match: str) -> None:
    with pytest.raises(HusaiError, match=match) as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_paths_that_are_not_models(tmp_path: Path) -> None:
    _one_line(tmp_path / "missing", "not a model directory \\(no such directory\\)")
    (tmp_path / "file.txt").write_text("x")
    _one_line(tmp_path / "file.txt", "not a model directory \\(a file\\)")
    _one_line(tmp_path, "not a model directory \\(no config.json\\)")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    _one_line(tmp_path, "no \\*.safetensors weights beside config.json")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    _one_line(tmp_path, "cannot load the model \\(")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nonexistent"}))
    _one_line(tmp_path, "cannot load the model \\(.*model type `nonexistent`")


def test_unsupported_family(tmp_path: Path) -> None:
    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        is_decoder=True,
    )
    transformers.BertLMHeadModel(config).save_pretrained(tmp_path)
    _one_line(
        tmp_path, r"unsupported model type 'bert' \(BertLMHeadModel; supported: gpt2, llama\)"
    )
