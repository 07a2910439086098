"""Shared fixtures: one tiny end-to-end run reused by the pipeline and CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tiny import TINY  # noqa: E402  (tests/ is on sys.path beside this conftest)


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


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    tiny matmuls run several times faster than on 2 shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
