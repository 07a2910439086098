"""Sparse autoencoders: architectures on one base, one trainer, SAELens-layout save/load.

Each architecture is one module of `husai.sae.architectures` (its `Params` model of
hyperparameters beside its class); `SAEConfig` (husai.sae.config) holds the fields they
share and the architecture's `params`. Every architecture is also a transcoder (input x at
one hook, target y at another): `train_sae(cfg, x, seeds, y_ND=y)`,
`build_sae(cfg, d_in, seeds, d_out=...)`.
Consistency-regularised training (`consistency_penalty`, husai.sae.regularise):
`train_sae(cfg, x, seeds, reference=R)`; without R, the "reference" and "assignment" modes
train `regularise.train_reference`'s default. `save_seeds(sae, out_dir, info)` writes every
seed of an ensemble to `out_dir/seed_<n>/`; an SAE trained on a language model's
activation store carries `lm_metadata=store_lm_metadata(store)` into cfg.json's SAELens keys.

An SAE object is an ensemble of seeds with stacked weights (`W_dec` [S, d_sae, d_out]);
`load(path)` gives a one-seed ensemble, and `sae.saelens_weights()` its weights in
SAELens's names and shapes (`W_enc` [d_in, d_sae], `W_dec` [d_sae, d_in], `b_enc` [d_sae],
`b_dec` [d_in], + `threshold` for JumpReLU); `saelens_weights(index=s)` for seed s of an
ensemble.
"""

from husai.sae.base import SAE
from husai.sae.config import SAEConfig
from husai.sae.io import find_saes, load, save, save_seeds, store_lm_metadata
from husai.sae.registry import REGISTRY, register
from husai.sae.trainer import build_sae, train_sae

__all__ = [
    "REGISTRY",
    "SAE",
    "SAEConfig",
    "build_sae",
    "find_saes",
    "load",
    "register",
    "save",
    "save_seeds",
    "store_lm_metadata",
    "train_sae",
]
