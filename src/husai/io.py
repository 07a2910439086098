"""Atomic file writes, hashing and provenance: every artifact goes through here."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from husai import faults
from husai.errors import HusaiError


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write via a temp file in the same directory, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = faults.next_write(path)
    faults.point(n, "start")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        faults.point(n, "partial", Path(tmp))
        faults.point(n, "written", Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    faults.point(n, "renamed")
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    return _atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def dumps_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, fixed indent, trailing newline (byte-stable)."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, dumps_json(obj))


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HusaiError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise HusaiError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise HusaiError(f"{path}: invalid JSON (not UTF-8 text, byte {e.start})") from None
    except RecursionError:
        raise HusaiError(f"{path}: invalid JSON (nested too deeply)") from None


def save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Save tensors as safetensors, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return _atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file; a missing or corrupt file is a HusaiError naming it."""
    path = Path(path)
    if not path.is_file():
        raise HusaiError(f"{path}: file not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise HusaiError(f"{path}: not a valid safetensors file ({e})") from None
    return tensors, meta


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensor_hash(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (file bytes can differ: safetensors
    writes its metadata in no fixed order)."""
    t = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Content hash of a JSON-able object (first 16 hex digits of sha256 of canonical JSON)."""
    return hashlib.sha256(dumps_json(obj).encode()).hexdigest()[:16]


def git_revision() -> str | None:
    """The git revision of the husai source tree, if it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    rev = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=5,
    )
    return rev + ("-dirty" if dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    """Versions of python and the packages whose behaviour determines the numbers."""
    versions = {"python": platform.python_version()}
    for pkg in ("husai", "torch", "numpy", "scipy", "safetensors", "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def provenance() -> dict[str, Any]:
    """What to record next to every artifact: versions, git revision, torch threads."""
    return {
        "versions": package_versions(),
        "git_revision": git_revision(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
