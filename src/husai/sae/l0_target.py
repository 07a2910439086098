"""L0 targeting for the penalty architectures (relu, jumprelu, gated): `target_l0`.

Their sparsity is set by a penalty weight, not by k, so matching L0 across architectures
needs a different weight per architecture and data set. With `target_l0` set, every
L0_EVERY steps the trainer measures each seed's mean L0 on its current batch (inference
codes) and moves that seed's weight in log space:
log λ ← log λ + RATE · (log(1 + L0) − log(1 + target)), until the last step. It tracks
to the end because L0 keeps drifting at a fixed weight (JumpReLU's thresholds keep rising):
a controller frozen after 3/4 of training, or with a rate decaying to 0, ended at ~70% of
the target. The achieved L0 is measured after training, like every architecture's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from husai.sae.base import SAE

L0_EVERY = 5
RATE = 0.1


def adapting(step: int, total: int) -> bool:
    return step % L0_EVERY == 0


@torch.no_grad()
def adapt_coefficient(sae: SAE, x_SBD: Tensor, target: float) -> None:
    """One controller update of the per-seed penalty weight `sae.coefficient` [S]."""
    l0_S = (sae.encode(x_SBD) > 0).sum(-1).float().mean(-1)
    error_S = torch.log1p(l0_S) - torch.log1p(torch.tensor(float(target)))
    step_S = RATE * error_S
    sae.coefficient.mul_(step_S.exp())
