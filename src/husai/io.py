"""Atomic file writes, hashing and provenance: every artifact goes through here."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from husai import faults
from husai.errors import HusaiError
from husai.lock import pid_alive


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write via a temp file in the same directory, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = faults.next_write(path)
    faults.point(n, "start", path)
    _remove_stale_temps(path.parent)
    prefix = f".{path.name}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        faults.point(n, "partial", Path(tmp))
        faults.point(n, "written", Path(tmp))
        os.replace(tmp, path)
    except OSError as e:  # name the file the user knows, not its temp
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    faults.point(n, "renamed")
    return path


def _write_synced(tmp: Path, data: bytes) -> None:
    """The bytes on disk before the rename, so a crash cannot leave a renamed empty file."""
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


_swept: set[Path] = set()  # directories this process has cleared of stale temp files


def _remove_stale_temps(directory: Path) -> None:
    """Once per process and directory, remove the temp files (``.<name>.<pid>.<rand>.tmp``)
    whose writer is gone: a process killed mid-write leaves its temp behind, the next
    process that writes there clears it (a live writer's temp is left alone)."""
    if directory in _swept:
        return
    _swept.add(directory)
    for p in directory.glob(".*.tmp"):
        parts = p.name[: -len(".tmp")].rsplit(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and not pid_alive(int(parts[1])):
            p.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> Path:
    return _atomic(path, lambda tmp: _write_synced(tmp, data))


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


TENSORS_SEAL = "husai_sha256"  # metadata key: sha256 of the other metadata + tensor hashes


def damaged_key(keys: Iterable[str], key: str) -> str | None:
    """A key one flipped bit away from `key` (a seal's name, damaged: without this check the
    file would read as unsealed and pass), or None."""
    want = key.encode()
    for k in keys:
        got = k.encode()
        if len(got) == len(want) and (int.from_bytes(got) ^ int.from_bytes(want)).bit_count() == 1:
            return k
    return None


def _tensors_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    body = {
        "metadata": {k: v for k, v in metadata.items() if k != TENSORS_SEAL},
        "tensors": {k: tensor_hash(t) for k, t in tensors.items()},
    }
    return hashlib.sha256(dumps_json(body).encode()).hexdigest()


def save_tensors(
    path: Path,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
    *,
    seal: bool = False,
) -> Path:
    """Save tensors as safetensors, atomically. `seal`: add metadata `husai_sha256` (a hash
    of the other metadata and every tensor), which `load_tensors` checks: a flipped bit in
    the tensor bytes or a metadata value, which safetensors still parses, is then refused."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = None if metadata is None else {k: v for k, v in metadata.items() if k != TENSORS_SEAL}
    if seal:
        meta = {**(meta or {}), TENSORS_SEAL: _tensors_digest(tensors, meta or {})}
    # serialised here and written by Python: an I/O fault (disk full) is then an OSError,
    # not a SafetensorError from inside the Rust writer
    return write_bytes(path, save(tensors, metadata=meta))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file; a missing or corrupt file (or a sealed one that fails its
    seal) is a HusaiError naming it. The metadata comes back without the seal."""
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
    digest = meta.pop(TENSORS_SEAL, None)
    if digest is None and (bad := damaged_key(meta, TENSORS_SEAL)) is not None:
        raise HusaiError(f"{path}: metadata key {bad!r} is a damaged {TENSORS_SEAL!r} (corrupted?)")
    if digest is not None and digest != _tensors_digest(tensors, meta):
        raise HusaiError(f"{path}: does not match its recorded sha256 (corrupted?)")
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
