"""Architecture registry: cfg.json's `architecture` name → SAE class.

Every module of `husai.sae.architectures` is an architecture: it is imported (and so its
`@register`ed class registered) here. A new architecture is one new file there.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from husai.sae.base import SAE

REGISTRY: dict[str, type[SAE]] = {}
T = TypeVar("T", bound="type[SAE]")


def register(cls: T) -> T:
    REGISTRY[cls.architecture] = cls
    return cls


def field_owners() -> dict[str, tuple[str, ...]]:
    """Every architecture's own config field → the architectures that have it."""
    owners: dict[str, tuple[str, ...]] = {}
    for name in sorted(REGISTRY):
        for field in REGISTRY[name].Params.model_fields:
            owners[field] = (*owners.get(field, ()), name)
    return owners


def _load_builtin() -> None:
    from husai.sae import architectures

    for mod in sorted(pkgutil.iter_modules(architectures.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{architectures.__name__}.{mod.name}")


_load_builtin()
