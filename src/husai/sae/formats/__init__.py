"""On-disk SAE layouts: detection and dispatch to one reader per format.

Formats: "saelens" (alias "husai": husai writes SAELens's layout), "sparsify" (EleutherAI),
"dictionary_learning" (saprmarks). Each is identified by the files in `files.LAYOUTS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from husai.errors import HusaiError
from husai.sae.base import SAE
from husai.sae.formats import dictionary_learning, saelens, sparsify
from husai.sae.formats.files import DL_CONFIG_FILE, LAYOUTS

READERS: dict[str, Callable[[Path], SAE]] = {
    "saelens": saelens.load,
    "sparsify": sparsify.load,
    "dictionary_learning": dictionary_learning.load,
}
ALIASES = {"husai": "saelens"}
SKIP_DIRS = {"best"}  # sparsify's copy of the best checkpoint, next to its run config.json


def layout_of(path: Path) -> str | None:
    """The format whose marker files are all in directory `path`, or None."""
    return next(
        (f for f, files in LAYOUTS.items() if all((path / n).is_file() for n in files)), None
    )


def _describe_expected() -> str:
    return "; ".join(f"{f}: {' + '.join(files)}" for f, files in LAYOUTS.items())


def detect(path: Path) -> str:
    """The format of SAE directory `path` (an `ae*.pt` file is dictionary_learning)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        return "dictionary_learning"
    if not path.is_dir():
        raise HusaiError(f"{path}: not an SAE directory")
    fmt = layout_of(path)
    if fmt is not None:
        return fmt
    present = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    if not present:
        raise HusaiError(f"{path}: empty directory, no SAE files")
    inside = find_saes(path, missing_ok=True)
    if inside:
        raise HusaiError(
            f"{path}: a run directory holding {len(inside)} SAEs, not one SAE "
            f"(e.g. {inside[0]}); expand it with husai.sae.find_saes"
        )
    raise HusaiError(
        f"{path}: unknown SAE layout (found {', '.join(present[:8])}"
        f"{', …' if len(present) > 8 else ''}; expected {_describe_expected()})"
    )


def read(path: Path, format: str | None = None) -> SAE:
    """Load one SAE; `format` None auto-detects."""
    if format is None:
        format = detect(path)
    name = ALIASES.get(format, format)
    if name not in READERS:
        known = ", ".join(sorted([*READERS, *ALIASES]))
        raise HusaiError(f"unknown SAE format {format!r} (known: {known})")
    if not Path(path).exists():
        raise HusaiError(f"{path}: not an SAE directory")
    return READERS[name](Path(path))


def _natural(p: Path) -> list[int | str]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", str(p))]


def find_saes(path: Path, *, missing_ok: bool = False) -> list[Path]:
    """Every SAE directory at or under `path`, in natural order (seed2 before seed10).

    An SAE directory is not searched further; hidden folders, and the `best/` copy that
    sparsify keeps next to a run's config.json, are skipped.
    """
    path = Path(path)
    if not path.is_dir():
        raise HusaiError(f"{path}: not a directory")
    found: list[Path] = []
    stack = [path]
    while stack:
        d = stack.pop()
        if layout_of(d) is not None:
            found.append(d)
            continue
        run_config = (d / DL_CONFIG_FILE).is_file()
        for sub in d.iterdir():
            if sub.is_dir() and not sub.name.startswith("."):
                if not (run_config and sub.name in SKIP_DIRS):
                    stack.append(sub)
    if not found and not missing_ok:
        raise HusaiError(f"{path}: no SAE directories found (expected {_describe_expected()})")
    return sorted(found, key=_natural)
