"""Language-model SAEs: trained by husai on an activation store, saved with the store's LM
metadata, loaded by sae-lens's own `SAE.load_from_disk` with the same forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

sae_lens = pytest.importorskip(
    "sae_lens", reason="interop extra not installed (pip install husai[interop])"
)
from _sae_truth import arch_config  # noqa: E402

from husai.errors import HusaiError  # noqa: E402
from husai.io import read_json  # noqa: E402
from husai.sae import load, save, save_seeds, store_lm_metadata, train_sae  # noqa: E402
from husai.store import StoreWriter, TokenPolicy  # noqa: E402

D, F = 8, 24
HOOK = "blocks.1.hook_resid_post"
META = {"model_name": "tiny-llama", "context_size": 16, "prepend_bos": True, "corpus": "docs"}


def _store(path: Path, normalize: str):
    w = StoreWriter(
        path,
        d=D,
        hook_name=HOOK,
        n_shards=2,
        metadata=META,
        policy=TokenPolicy(normalize=normalize),  # type: ignore[arg-type]
    )
    g = torch.Generator().manual_seed(0)
    for k in range(2):
        w.write(k, torch.randn(200, D, generator=g) * 3 + 1)
    return w.finish()


def _x() -> torch.Tensor:
    return torch.randn(64, D, generator=torch.Generator().manual_seed(1)) * 3 + 1


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
@pytest.mark.parametrize("normalize", ["none", "expected_average_only_in"])
def test_lm_sae_loads_in_saelens(arch: str, normalize: str, tmp_path: Path) -> None:
    store = _store(tmp_path / "store", normalize)
    lm = store_lm_metadata(store)
    cfg = arch_config(arch, d_sae=F, k=3, epochs=2, batch_size=64)
    sae, info = train_sae(cfg, store.load_all(), [0, 1])
    dirs = save_seeds(sae, tmp_path / "saes", info, lm_metadata=lm)
    x = _x()
    for s, d in enumerate(dirs):
        raw = read_json(d / "cfg.json")
        lib = sae_lens.SAE.load_from_disk(d)
        assert lib.cfg.architecture() == arch and lib.cfg.normalize_activations == normalize
        m = lib.cfg.metadata
        assert (m.model_name, m.hook_name, m.context_size, m.prepend_bos) == (
            "tiny-llama",
            HOOK,
            16,
            True,
        )
        assert m.seqpos_slice == [1, None] and m.dataset_path == "docs"  # drop_first default
        with torch.no_grad():
            f = lib.encode(x)
            assert torch.allclose(sae.encode(x)[s], f, atol=1e-5)
            codes = f.unsqueeze(0).expand(2, -1, -1)
            assert torch.allclose(sae.decode(codes)[s], lib.decode(f), atol=1e-5)
            assert (f > 0).any() and (f == 0).any()
        if normalize == "none":
            assert "norm_scaling_factor" not in raw and store.scale == 1.0
            continue
        # the recorded scale undoes the normalisation: sae-lens's fold gives the raw-input SAE
        assert raw["norm_scaling_factor"] == store.scale != 1.0
        lib.fold_activation_norm_scaling_factor(raw["norm_scaling_factor"])
        with torch.no_grad():
            f_raw = lib.encode(x)
            assert torch.allclose(f_raw, sae.encode(x * store.scale)[s], atol=1e-4)
            out = sae.decode(sae.encode(x * store.scale))[s] / store.scale
            assert torch.allclose(lib.decode(f_raw), out, atol=1e-4)
        # and husai reads its own save back with the metadata
        back = load(d)
        assert back.lm_metadata == lm and back.hook_name == HOOK


def test_toy_sae_cfg_is_unchanged_and_bad_metadata_refused(tmp_path: Path) -> None:
    sae, _ = train_sae(arch_config("topk", d_sae=F, k=3, epochs=1), _x(), [0])
    raw = read_json(save(sae, tmp_path / "toy") / "cfg.json")
    assert "model_name" not in raw and raw["normalize_activations"] == "none"
    assert load(tmp_path / "toy").lm_metadata is None
    bad = {"model_name": "m", "context_size": 8, "prepend_bos": True}
    with pytest.raises(HusaiError, match="missing normalize_activations"):
        save(sae, tmp_path / "b1", lm_metadata=bad)
    with pytest.raises(HusaiError, match="needs a positive norm_scaling_factor"):
        save(
            sae,
            tmp_path / "b2",
            lm_metadata={**bad, "normalize_activations": "expected_average_only_in"},
        )
    sae.hook_name = "blocks.0.hook_resid_post"
    with pytest.raises(HusaiError, match="differs"):
        save(
            sae,
            tmp_path / "b3",
            lm_metadata={**bad, "normalize_activations": "none", "hook_name": HOOK},
        )
