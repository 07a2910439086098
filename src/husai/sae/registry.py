"""Architecture registry: cfg.json's `architecture` name → SAE class.

A new architecture is one module in `husai/sae/` with an `@register`ed class: every module
of the package except the infrastructure ones below is imported (and so registered) here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from husai.sae.base import SAE

REGISTRY: dict[str, type[SAE]] = {}
T = TypeVar("T", bound="type[SAE]")


def register(cls: T) -> T:
    REGISTRY[cls.architecture] = cls
    return cls


NOT_ARCHITECTURES = {
    "base",
    "registry",
    "io",
    "trainer",
    "formats",
    "resample",
    "l0_target",
    "regularise",
}


def _load_builtin() -> None:
    import importlib
    import pkgutil
    from pathlib import Path

    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name not in NOT_ARCHITECTURES and not mod.name.startswith("_"):
            importlib.import_module(f"husai.sae.{mod.name}")


_load_builtin()
