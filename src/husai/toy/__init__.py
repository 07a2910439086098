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
from husai.toy.structure import (
    class_mean_structure,
    distinct_directions,
    embedding_structure,
    fourier_fit,
    fourier_row_labels,
    fourier_structure,
    recovery_against,
    structure_summary,
)
from husai.toy.train import load_checkpoint, save_checkpoint, train_checkpoint, train_toy

__all__ = [
    "ToyTransformer",
    "class_mean_structure",
    "distinct_directions",
    "embedding_frequency_norms",
    "embedding_structure",
    "fourier_basis",
    "fourier_fit",
    "fourier_labels",
    "fourier_row_labels",
    "fourier_structure",
    "fourier_summary",
    "key_frequencies",
    "load_checkpoint",
    "logit_r2",
    "make_dataset",
    "recovery_against",
    "save_checkpoint",
    "split_indices",
    "structure_summary",
    "train_checkpoint",
    "train_toy",
]
