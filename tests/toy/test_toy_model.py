import pytest
import torch
import torch.nn.functional as F

from husai.config import ToyModelConfig, hook_names
from husai.errors import HusaiError
from husai.toy import ToyTransformer, make_dataset

P = 13


def _model(n_layers: int, seed: int = 0) -> ToyTransformer:
    return ToyTransformer(ToyModelConfig(p=P, n_layers=n_layers, d_model=32, d_mlp=48), seed)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return make_dataset(P, "add")[0]


@pytest.mark.parametrize("n_layers", [1, 2])
def test_identity_hooks_leave_logits_unchanged(n_layers: int, tokens: torch.Tensor) -> None:
    model = _model(n_layers)
    assert model.hook_names == hook_names(n_layers)
    seen: dict[str, tuple[int, ...]] = {}

    def ident(name: str):
        def fn(x: torch.Tensor) -> torch.Tensor:
            seen[name] = tuple(x.shape)
            return x

        return fn

    base = model(tokens)
    hooked = model(tokens, {n: ident(n) for n in model.hook_names})
    assert base.shape == (P * P, P)
    torch.testing.assert_close(hooked, base, rtol=1e-5, atol=1e-5)
    for name in model.hook_names:
        assert seen[name] == (P * P, model.hook_width(name))


@pytest.mark.parametrize("n_layers", [1, 2])
def test_hooks_replace_activations(n_layers: int, tokens: torch.Tensor) -> None:
    model = _model(n_layers)
    last = f"blocks.{n_layers - 1}.resid_post"
    zeroed = model(tokens, {last: torch.zeros_like})
    assert torch.equal(zeroed, torch.zeros_like(zeroed))  # unembed of 0 is 0
    shifted = model(tokens, {"blocks.0.mlp_post": lambda x: x + 1.0})
    assert not torch.allclose(shifted, model(tokens))
    # Splicing in the cached activation itself reproduces the clean logits.
    logits, cache = model.run_with_cache(tokens, ["blocks.0.mlp_post"])
    spliced = model(tokens, {"blocks.0.mlp_post": lambda x: cache["blocks.0.mlp_post"]})
    torch.testing.assert_close(spliced, logits)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_answer_and_all_caches_agree(n_layers: int, tokens: torch.Tensor) -> None:
    model = _model(n_layers, seed=3)
    logits_a, ans = model.run_with_cache(tokens)
    logits_all, full = model.run_with_cache(tokens, position="all")
    torch.testing.assert_close(logits_a, logits_all, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(tokens), logits_all, rtol=1e-5, atol=1e-5)
    assert set(ans) == set(full) == set(model.hook_names)
    for name in model.hook_names:
        width = model.hook_width(name)
        assert ans[name].shape == (P * P, width)
        assert full[name].shape == (P * P, 3, width)
        torch.testing.assert_close(ans[name], full[name][:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_fast_path_gradients_match_full_path(n_layers: int, tokens: torch.Tensor) -> None:
    model = _model(n_layers, seed=1)
    labels = make_dataset(P, "add")[1]
    F.cross_entropy(model(tokens), labels).backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    F.cross_entropy(model._run(tokens, {}, full=True, cache=None), labels).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(fast[name], param.grad, rtol=1e-4, atol=1e-6)


def test_unknown_hook_raises(tokens: torch.Tensor) -> None:
    model = _model(1)
    with pytest.raises(HusaiError, match=r"'blocks\.0\.nope'.*blocks\.0\.mlp_post"):
        model(tokens, {"blocks.0.nope": lambda x: x})
    with pytest.raises(HusaiError, match="blocks.1.resid_post"):
        model.run_with_cache(tokens, ["blocks.1.resid_post"])
    with pytest.raises(HusaiError, match="shape"):
        model(tokens, {"embed": lambda x: x[:, :3]})


def test_init_is_seeded() -> None:
    a, b, c = _model(1, seed=0), _model(1, seed=0), _model(1, seed=1)
    for (name, pa), pb, pc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if pa.abs().sum() > 0:
            assert not torch.equal(pa, pc), name
