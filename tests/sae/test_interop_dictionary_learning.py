"""dictionary_learning: SAEs trained and saved by the library's own `trainSAE`, loaded by husai."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

dl = pytest.importorskip(
    "dictionary_learning", reason="interop extra not installed (pip install husai[interop])"
)
from dictionary_learning.trainers import (  # noqa: E402
    BatchTopKTrainer,
    GatedSAETrainer,
    JumpReluTrainer,
    StandardTrainer,
    TopKTrainer,
)
from dictionary_learning.training import trainSAE  # noqa: E402
from dictionary_learning.utils import load_dictionary  # noqa: E402

from husai.sae import load  # noqa: E402

D, F, K, STEPS = 8, 24, 3, 10
TRAINERS = {
    "AutoEncoder": (StandardTrainer, {}),
    "AutoEncoderTopK": (TopKTrainer, {"k": K}),
    "BatchTopKSAE": (BatchTopKTrainer, {"k": K, "threshold_start_step": 3}),
    "JumpReluAutoEncoder": (JumpReluTrainer, {}),
    "GatedAutoEncoder": (GatedSAETrainer, {}),
}


def _data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(F, D, generator=g)
    for _ in range(n):
        codes = torch.rand(16, F, generator=g) * (torch.rand(16, F, generator=g) < 0.2)
        yield codes @ feats + 0.3


@pytest.mark.parametrize("dict_class", list(TRAINERS))
def test_dictionary_learning_forward_matches(dict_class: str, tmp_path: Path) -> None:
    trainer, extra = TRAINERS[dict_class]
    cfg = {
        "trainer": trainer, "steps": STEPS, "activation_dim": D, "dict_size": F,
        "layer": 0, "lm_name": "toy", "device": "cpu", "seed": 5, "warmup_steps": 2,
        "lr": 1e-2, **extra,
    }  # fmt: skip
    if trainer is not TopKTrainer and trainer is not BatchTopKTrainer:
        cfg["sparsity_warmup_steps"] = 2
    trainSAE(_data(STEPS + 1), [cfg], steps=STEPS, save_dir=str(tmp_path), device="cpu")
    ae, _ = load_dictionary(str(tmp_path / "trainer_0"), device="cpu")
    ae_raw = type(ae)(D, F, K) if "k" in extra else type(ae)(D, F)
    ae_raw.load_state_dict(torch.load(tmp_path / "trainer_0" / "ae.pt", weights_only=True))
    sae = load(tmp_path / "trainer_0")
    assert sae.seeds == [5]
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(1)) + 0.3
    with torch.no_grad():
        for lib in (ae, ae_raw):  # load_dictionary may renormalise the decoder (same forward)
            f = lib.encode(x)
            assert (sae.encode(x)[0] - f).abs().max() < 1e-5, dict_class
            assert (sae.decode(f.unsqueeze(0))[0] - lib.decode(f)).abs().max() < 1e-5
            assert (sae(x)[0] - lib(x)).abs().max() < 1e-5
            assert (f > 0).any()
        w_dec = ae_raw.W_dec if hasattr(ae_raw, "W_dec") else ae_raw.decoder.weight.T
        assert torch.equal(sae.W_dec[0], w_dec)
