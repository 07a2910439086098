"""Architectures husai can load and analyse but not (yet) train."""

from __future__ import annotations

from torch import Tensor

from husai.errors import HusaiError


class NotTrainableError(HusaiError, NotImplementedError):
    """Training an inference-only architecture (a HusaiError, so the CLI prints one line)."""


class InferenceOnly:
    """Mixin: `loss` raises NotTrainableError instead of training silently wrong."""

    architecture: str

    def loss(self, x_SBD: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotTrainableError(
            f"architecture {self.architecture!r} is inference-only in husai: it can be "
            "loaded and compared, but training it is not implemented yet"
        )
