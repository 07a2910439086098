"""Shared fixtures: one tiny end-to-end run reused by the pipeline and CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {
    "toy": {
        "model": {"p": 23, "d_model": 32, "n_heads": 2, "d_mlp": 64},
        "train": {"train_frac": 0.7, "max_steps": 60, "check_every": 30},
    },
    "saes": [
        {"architecture": "topk", "d_sae": 48, "k": 4, "epochs": 4, "batch_size": 64},
        {"architecture": "relu", "d_sae": 48, "epochs": 4, "batch_size": 64},
    ],
    "seeds": [1, 2, 3],
    "metrics": {"n_bootstrap": 200},
}


@pytest.fixture(scope="session")
def tiny_dict() -> dict:
    return TINY


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml

    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from husai.config import parse_run_config
    from husai.experiments import run

    base = tmp_path_factory.mktemp("tiny_run")
    run(parse_run_config(TINY), base / "run", cache_dir=base / "cache")
    return base / "run"
