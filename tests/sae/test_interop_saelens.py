"""sae-lens: SAEs built and saved by the library (`save_model`), loaded by husai; and back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

sae_lens = pytest.importorskip(
    "sae_lens", reason="interop extra not installed (pip install husai[interop])"
)
from husai.sae import load, save  # noqa: E402

D, F, K = 8, 24, 3
CONFIGS = {
    "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
    "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": K}),
    "topk_rescaled": (
        sae_lens.TopKSAE,
        sae_lens.TopKSAEConfig,
        {"k": K, "rescale_acts_by_decoder_norm": True},
    ),
    "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {}),
    "jumprelu_uncentred": (
        sae_lens.JumpReLUSAE,
        sae_lens.JumpReLUSAEConfig,
        {"apply_b_dec_to_input": False},
    ),
    "gated": (sae_lens.GatedSAE, sae_lens.GatedSAEConfig, {}),
}


def _library_sae(name: str):
    cls, cfg_cls, extra = CONFIGS[name]
    lib = cls(cfg_cls(d_in=D, d_sae=F, **extra))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for pname, p in lib.named_parameters():
            scale = 0.5 if pname.startswith("W_") else 0.3
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        if hasattr(lib, "threshold"):
            lib.threshold.copy_(torch.rand(F, generator=g) * 0.5)
    return lib


def _check(husai_sae, lib, x: torch.Tensor) -> None:
    with torch.no_grad():
        f = lib.encode(x)
        assert (husai_sae.encode(x)[0] - f).abs().max() < 1e-5
        assert (husai_sae.decode(f.unsqueeze(0))[0] - lib.decode(f)).abs().max() < 1e-5
        assert (husai_sae(x)[0] - lib(x)).abs().max() < 1e-5
        assert (f > 0).any() and (f == 0).any()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_saelens_forward_matches(name: str, tmp_path: Path) -> None:
    lib = _library_sae(name)
    lib.save_model(tmp_path / name)
    sae = load(tmp_path / name)
    assert sae.architecture == {"standard": "relu"}.get(name, name.split("_")[0])
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(1))
    _check(sae, lib, x)
    if "rescaled" not in name:  # rescaling is folded into the weights, changing row norms
        assert torch.equal(sae.W_dec[0], lib.W_dec.detach())
    # and back: husai's save is read by sae-lens's own loader with the same forward
    save(sae, tmp_path / "husai")
    _check(sae, sae_lens.SAE.load_from_disk(tmp_path / "husai"), x)
