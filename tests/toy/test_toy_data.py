import pytest
import torch

from husai.errors import HusaiError
from husai.toy import make_dataset, split_indices


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_dataset_matches_brute_force(op: str) -> None:
    p = 7
    tokens, labels = make_dataset(p, op)
    assert tokens.shape == (p * p, 3) and labels.shape == (p * p,)
    assert tokens.dtype == labels.dtype == torch.long
    f = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b}[op]
    for a in range(p):
        for b in range(p):
            row = a * p + b
            assert tokens[row].tolist() == [a, b, p]
            assert labels[row].item() == f(a, b) % p


def test_dataset_unknown_op() -> None:
    with pytest.raises(HusaiError, match="div"):
        make_dataset(7, "div")


def test_split_disjoint_covering_deterministic() -> None:
    train, test = split_indices(100, 0.3, seed=5)
    assert len(train) == 30 and len(test) == 70
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(100))
    state = torch.random.get_rng_state()
    again = split_indices(100, 0.3, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert not torch.equal(train, split_indices(100, 0.3, seed=6)[0])


def test_split_empty_side_raises() -> None:
    with pytest.raises(HusaiError, match="train_frac"):
        split_indices(3, 0.1, seed=0)
