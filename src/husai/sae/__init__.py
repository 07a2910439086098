"""Sparse autoencoders: architectures on one base, one trainer, SAELens-layout save/load."""

from husai.sae.base import SAE
from husai.sae.io import load, save
from husai.sae.registry import REGISTRY, register
from husai.sae.trainer import build_sae, train_sae

__all__ = ["REGISTRY", "SAE", "build_sae", "load", "register", "save", "train_sae"]
