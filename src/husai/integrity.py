"""Detecting corrupted artifacts: self-checked JSON records, file hashes, one-line notes.

A record is *sealed* by adding the sha256 of its canonical JSON (without the seal) under
one key; a truncated record no longer parses, a bit-flipped one that still parses no
longer matches its seal, and one that parses to the same record is no longer canonical.
Derived files (caches, job outputs) that fail a check are recomputed after one `note:`
line on stderr; inputs and reports are refused (HusaiError).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from husai.io import damaged_key, dumps_json, read_json, sha256_file

SEAL = "record_sha256"


def _digest(record: dict[str, Any], key: str) -> str:
    return canonical_sha256({k: v for k, v in record.items() if k != key})


def canonical_sha256(obj: Any) -> str:
    """sha256 of `obj`'s canonical JSON; "" (which matches no seal) when it has none (NaN or
    ±inf: a damaged record husai never wrote)."""
    try:
        return hashlib.sha256(dumps_json(obj).encode()).hexdigest()
    except ValueError:
        return ""


def seal(record: dict[str, Any], key: str = SEAL) -> dict[str, Any]:
    """`record` with the sha256 of its canonical JSON under `key`."""
    return {**{k: v for k, v in record.items() if k != key}, key: _digest(record, key)}


def seal_ok(record: Any, key: str = SEAL) -> bool | None:
    """Whether a record matches its seal; None when it has none (an older husai wrote it),
    False when a key is one flipped bit from the seal's name."""
    if not isinstance(record, dict):
        return False
    if key not in record:
        return False if damaged_key(record, key) is not None else None
    return record[key] == _digest(record, key)


def read_sealed(path: Path, key: str = SEAL) -> tuple[Any, bool | None]:
    """(record, seal_ok) of a sealed JSON file; a file that is not its record's canonical
    JSON (e.g. a flipped last digit of a float that parses to the same number) fails too.
    A file that does not parse is a HusaiError naming it."""
    record = read_json(path)
    ok = seal_ok(record, key)
    if ok and dumps_json(record) != Path(path).read_text():
        ok = False
    return record, ok


def file_hashes(root: Path, files: list[str]) -> dict[str, str]:
    """sha256 of each file (paths relative to `root`)."""
    return {rel: sha256_file(Path(root) / rel) for rel in files}


def first_mismatch(root: Path, hashes: dict[str, str]) -> str | None:
    """The first file (relative to `root`) missing or differing from its recorded hash."""
    for rel, digest in sorted(hashes.items()):
        f = Path(root) / rel
        if not f.is_file() or sha256_file(f) != digest:
            return rel
    return None


def note(message: str) -> None:
    """One line on stderr: something was found corrupt and is being recomputed."""
    print(f"note: {message}", file=sys.stderr, flush=True)
