"""The husai CLI in a subprocess, for the reliability tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-c", "from husai.cli import app; app()"]


def husai_env(**extra: str) -> dict[str, str]:
    """The environment for a husai subprocess: this interpreter's husai, no faults."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUSAI_FAULT")}
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def husai(*args: str, **popen: object) -> subprocess.Popen:
    """Start `husai ARGS…` (stdout/stderr piped, text)."""
    return subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=popen.pop("env", None) or husai_env(),  # type: ignore[arg-type]
        **popen,  # type: ignore[arg-type]
    )
