"""Toy model: a small transformer grokked on modular arithmetic, with Fourier validation."""

from husai.toy.data import make_dataset, split_indices
from husai.toy.fourier import (
    embedding_frequency_norms,
    fourier_basis,
    fourier_labels,
    fourier_summary,
    key_frequencies,
    logit_r2,
)
from husai.toy.model import ToyTransformer
from husai.toy.train import load_checkpoint, save_checkpoint, train_toy

__all__ = [
    "ToyTransformer",
    "embedding_frequency_norms",
    "fourier_basis",
    "fourier_labels",
    "fourier_summary",
    "key_frequencies",
    "load_checkpoint",
    "logit_r2",
    "make_dataset",
    "save_checkpoint",
    "split_indices",
    "train_toy",
]
