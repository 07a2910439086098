"""Sparse autoencoders: architectures on one base, one trainer, SAELens-layout save/load.

Every architecture is also a transcoder (input x at one hook, target y at another):
`train_sae(cfg, x, seeds, y_ND=y)`, `build_sae(cfg, d_in, seeds, d_out=...)`.
Consistency-regularised training (`consistency_penalty`, husai.sae.regularise):
`train_sae(cfg, x, seeds, reference=R)`, R e.g. from `regularise.train_reference`.
"""

import husai.config  # noqa: F401  (first: config → registry → architectures → base)
from husai.sae.base import SAE
from husai.sae.io import find_saes, load, save
from husai.sae.registry import REGISTRY, register
from husai.sae.trainer import build_sae, train_sae

__all__ = [
    "REGISTRY",
    "SAE",
    "build_sae",
    "find_saes",
    "load",
    "register",
    "save",
    "train_sae",
]
