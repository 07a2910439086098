"""Architecture registry: cfg.json's `architecture` name → SAE class.

A new architecture is one module plus one `@register` line; loading dispatches here.
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


def _load_builtin() -> None:
    from husai.sae import gated, jumprelu, relu, topk  # noqa: F401  (registers on import)


_load_builtin()
