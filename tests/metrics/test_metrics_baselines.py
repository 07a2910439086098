import pytest
import torch

from husai.errors import HusaiError
from husai.metrics import pairwise, random_dictionaries, random_dictionaries_like


def test_deterministic_unit_rows_and_no_global_rng():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = random_dictionaries(3, 64, 16, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = random_dictionaries(3, 64, 16, seed=7)
    c = random_dictionaries(3, 64, 16, seed=8)
    assert len(a) == 3 and all(x.shape == (64, 16) and x.dtype == torch.float32 for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], a[1])
    for x in a:
        torch.testing.assert_close(x.norm(dim=1), torch.ones(64))


def test_random_pwmcc_band():
    """Measured: 5 random 1024x128 dictionaries give pwmcc 0.297-0.301 over 10 pairs."""
    r = pairwise(random_dictionaries(5, 1024, 128, seed=0), hungarian=False)
    vals = r["pwmcc"]["values"]
    assert len(vals) == 10
    assert all(0.28 < v < 0.32 for v in vals)
    assert all(v == 0.0 for v in r["shared_fraction"][0.5]["values"])


@pytest.mark.parametrize("args", [(0, 4, 4), (2, -1, 4), (2, 4, 1.5)])
def test_bad_sizes(args):
    with pytest.raises(HusaiError):
        random_dictionaries(*args, seed=0)


def test_dictionaries_of_any_shapes_come_in_order_from_one_generator():
    """Equal shapes give `random_dictionaries`; each dictionary is the next draw of one
    generator, so a prefix of the shapes gives a prefix of the dictionaries."""
    equal = random_dictionaries_like([(16, 8)] * 3, seed=5)
    assert all(
        torch.equal(a, b) for a, b in zip(equal, random_dictionaries(3, 16, 8, 5), strict=True)
    )
    mixed = random_dictionaries_like([(16, 8), (9, 8), (4, 3)], seed=5)
    assert [tuple(d.shape) for d in mixed] == [(16, 8), (9, 8), (4, 3)]
    assert torch.equal(mixed[0], equal[0])
    g = torch.Generator().manual_seed(5)
    for d in mixed:
        draw = torch.randn(*d.shape, generator=g)
        torch.testing.assert_close(d, draw / draw.norm(dim=1, keepdim=True), rtol=0, atol=0)
    with pytest.raises(HusaiError, match="no shapes"):
        random_dictionaries_like([], seed=0)
    with pytest.raises(HusaiError, match="n_latents"):
        random_dictionaries_like([(4, 2), (0, 2)], seed=0)
