"""sae-lens transcoders: saved by the library (`save_model`), loaded by husai; and back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

sae_lens = pytest.importorskip(
    "sae_lens", reason="interop extra not installed (pip install husai[interop])"
)
from _sae_truth import arch_config  # noqa: E402
from sae_lens.saes.sae import SAEMetadata  # noqa: E402

from husai.sae import build_sae, load, save  # noqa: E402

D, F, D_OUT = 8, 24, 5
HOOKS = {"hook_name": "blocks.0.hook_resid_mid", "hook_name_out": "blocks.0.hook_mlp_out"}
CLASSES = {
    "transcoder": (sae_lens.Transcoder, sae_lens.TranscoderConfig, "relu"),
    "jumprelu_transcoder": (
        sae_lens.JumpReLUTranscoder,
        sae_lens.JumpReLUTranscoderConfig,
        "jumprelu",
    ),
}


def _random(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if name.startswith("W_") else 0.3))
            if name == "threshold":
                p.copy_(torch.rand(p.shape, generator=g) * 0.5)


def _check(husai_tc, lib, x: torch.Tensor) -> None:
    with torch.no_grad():
        f = lib.encode(x)
        assert (husai_tc.encode(x)[0] - f).abs().max() < 1e-5
        assert (husai_tc(x)[0] - lib(x)).abs().max() < 1e-5
        assert (f > 0).any() and (f == 0).any() and lib(x).shape == (len(x), D_OUT)


def _x() -> torch.Tensor:
    return torch.randn(64, D, generator=torch.Generator().manual_seed(1)) + 0.5


@pytest.mark.parametrize("name", list(CLASSES))
def test_saelens_transcoder_loads_in_husai_and_back(name: str, tmp_path: Path) -> None:
    cls, cfg_cls, arch = CLASSES[name]
    meta = SAEMetadata(**HOOKS)
    lib = cls(cfg_cls(d_in=D, d_sae=F, d_out=D_OUT, apply_b_dec_to_input=False, metadata=meta))
    _random(lib)
    lib.save_model(tmp_path / name)
    tc = load(tmp_path / name)
    assert tc.architecture == arch and tc.transcoder and (tc.d_in, tc.d_out) == (D, D_OUT)
    assert (tc.hook_name, tc.hook_name_out) == tuple(HOOKS.values())
    assert torch.equal(tc.W_dec[0], lib.W_dec.detach())
    _check(tc, lib, _x())
    save(tc, tmp_path / "husai")
    back = sae_lens.SAE.load_from_disk(tmp_path / "husai")
    assert type(back) is cls and back.cfg.metadata.hook_name_out == HOOKS["hook_name_out"]
    _check(tc, back, _x())


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "batchtopk", "matryoshka"])
def test_husai_transcoders_load_in_saelens(arch: str, tmp_path: Path) -> None:
    tc = build_sae(arch_config(arch, d_sae=F, k=3), D, [0], d_out=D_OUT)
    _random(tc)
    save(tc, tmp_path / arch, **HOOKS)
    lib = sae_lens.SAE.load_from_disk(tmp_path / arch)
    want = {"relu": "Transcoder"}.get(arch, "JumpReLUTranscoder")
    assert type(lib).__name__ == want and lib.cfg.d_out == D_OUT
    assert lib.cfg.metadata.hook_name == HOOKS["hook_name"]
    assert lib.cfg.metadata.hook_name_out == HOOKS["hook_name_out"]
    _check(tc, lib, _x())
