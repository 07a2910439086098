"""The learning-rate schedule (husai.sae.schedule): the lr at each step, in the trainer."""

from __future__ import annotations

import math

import pytest
import torch

from husai.config import SAEConfig
from husai.sae import train_sae
from husai.sae import trainer as trainer_module
from husai.sae.schedule import lr_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_lr(t: int, T: int, lr: float, schedule: str, W: int, m: float) -> float:
    """The documented formula, written out step by step."""
    if t < W:
        return lr * (t + 1) / (W + 1)
    if schedule == "constant":
        return lr
    p = (t - W) / (T - W)
    if schedule == "linear":
        return lr * (m + (1 - m) * (1 - p))
    return lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * p)))


def _lrs(cfg: SAEConfig, T: int) -> list[float]:
    """The lr an optimiser under the schedule holds at each of T steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = lr_scheduler(opt, cfg, T)
    out = []
    for _ in range(T):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(
    ("schedule", "W", "m"),
    [("constant", 0, 0.0), ("constant", 4, 0.0), ("cosine", 0, 0.0), ("cosine", 3, 0.1),
     ("linear", 0, 0.0), ("linear", 5, 0.25), ("cosine", 30, 0.0)],
)  # fmt: skip
def test_lr_at_every_step_matches_the_formula(schedule: str, W: int, m: float) -> None:
    T, lr = 20, 2e-3
    cfg = SAEConfig(lr=lr, lr_schedule=schedule, lr_warmup_steps=W, lr_min_fraction=m)
    got = _lrs(cfg, T)
    for t in range(T):
        assert got[t] == pytest.approx(brute_lr(t, T, lr, schedule, W, m), rel=1e-12), t


def test_lr_by_hand() -> None:
    """A few values worked out on paper (T = 10)."""
    cos = _lrs(SAEConfig(lr=1.0, lr_schedule="cosine", lr_warmup_steps=2), 10)
    assert cos[0] == pytest.approx(1 / 3) and cos[1] == pytest.approx(2 / 3)
    assert cos[2] == 1.0 and cos[6] == pytest.approx(0.5)  # p = 4/8: half way down
    lin = _lrs(SAEConfig(lr=1.0, lr_schedule="linear", lr_min_fraction=0.5), 10)
    assert lin[0] == 1.0 and lin[5] == pytest.approx(0.75) and lin[9] == pytest.approx(0.55)
    assert _lrs(SAEConfig(lr=3e-4), 10) == [3e-4] * 10  # the default: exactly lr


def _record_lrs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    seen: list[float] = []
    step = trainer_module.train_step

    def recording(sae, opt, *args, **kw):
        seen.append(opt.param_groups[0]["lr"])
        return step(sae, opt, *args, **kw)

    monkeypatch.setattr(trainer_module, "train_step", recording)
    return seen


def test_train_sae_steps_at_the_scheduled_lr(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    seen = _record_lrs(monkeypatch)
    cfg = SAEConfig(d_sae=12, k=2, epochs=3, batch_size=40, lr=1e-2, lr_schedule="cosine",
                    lr_warmup_steps=4, lr_min_fraction=0.1)  # fmt: skip
    train_sae(cfg, x, [1])
    T = 3 * 5
    assert seen == pytest.approx([brute_lr(t, T, 1e-2, "cosine", 4, 0.1) for t in range(T)])
    seen.clear()
    train_sae(cfg.with_fields(lr_schedule="constant", lr_warmup_steps=0, lr_min_fraction=0), x, [1])
    assert seen == [1e-2] * T


def test_scheduled_seeds_stay_independent() -> None:
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(1))
    cfg = SAEConfig(d_sae=16, k=3, epochs=3, batch_size=50, lr=5e-3, lr_schedule="linear",
                    lr_warmup_steps=5)  # fmt: skip
    ens, _ = train_sae(cfg, x, [1, 2])
    alone, _ = train_sae(cfg, x, [2])
    for name, p in alone.named_parameters():
        assert torch.allclose(getattr(ens, name)[1], p[0], atol=1e-5), name
    plain, _ = train_sae(cfg.with_fields(lr_schedule="constant", lr_warmup_steps=0), x, [2])
    assert not torch.allclose(plain.W_dec, alone.W_dec, atol=1e-3)  # the schedule acted
