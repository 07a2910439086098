"""A small transformer for modular arithmetic (Nanda et al. 2023): no LayerNorm, ReLU MLP.

Inputs are 3 tokens [a, b, =]; only the final (`=`) position is read out. Hook points are
named as in `husai.config.hook_names`; "embed" is the token embedding (before the positional
embedding is added, which gives "blocks.0.resid_pre").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from husai.config import ToyModelConfig, hook_names
from husai.errors import HusaiError

Hook = Callable[[Tensor], Tensor]
N_POS = 3


class ToyTransformer(nn.Module):
    """Token + positional embedding, `n_layers` (causal attention, ReLU MLP) blocks, unembed."""

    def __init__(self, cfg: ToyModelConfig, seed: int) -> None:
        super().__init__()
        self.cfg = cfg
        p, d, m = cfg.p, cfg.d_model, cfg.d_mlp
        gen = torch.Generator().manual_seed(seed)

        def param(*shape: int, std: float | None = None) -> nn.Parameter:
            if std is None:
                return nn.Parameter(torch.zeros(*shape))
            return nn.Parameter(torch.randn(*shape, generator=gen) * std)

        s = 1.0 / math.sqrt(d)  # Nanda's init: N(0, 1/d_model); unembed N(0, 1/d_vocab)
        self.W_E = param(p + 1, d, std=s)
        self.W_pos = param(N_POS, d, std=s)
        self.blocks = nn.ModuleList()
        for _ in range(cfg.n_layers):
            blk = nn.Module()
            blk.W_Q, blk.W_K, blk.W_V = param(d, d, std=s), param(d, d, std=s), param(d, d, std=s)
            blk.W_O = param(d, d, std=s)
            blk.W_in, blk.b_in = param(d, m, std=s), param(m)
            blk.W_out, blk.b_out = param(m, d, std=s), param(d)
            self.blocks.append(blk)
        self.W_U = param(d, p, std=1.0 / math.sqrt(p + 1))
        self._names = hook_names(cfg.n_layers)

    @property
    def hook_names(self) -> list[str]:
        """Valid hook names, in forward order."""
        return list(self._names)

    def hook_width(self, name: str) -> int:
        """Width of a hook's activation (d_mlp for mlp_post, else d_model)."""
        self._check_names([name])
        return self.cfg.d_mlp if name.endswith("mlp_post") else self.cfg.d_model

    def _check_names(self, names: object) -> None:
        for name in names:  # type: ignore[attr-defined]
            if name not in self._names:
                raise HusaiError(f"unknown hook {name!r}; valid hooks: {', '.join(self._names)}")

    def forward(self, tokens: Tensor, hooks: dict[str, Hook] | None = None) -> Tensor:
        """Logits [B, p] at the final position; each hook maps its [B, width] answer-position
        activation to the replacement that the rest of the forward pass uses."""
        hooks = hooks or {}
        self._check_names(hooks)
        return self._run(tokens, hooks, full=False, cache=None)

    def run_with_cache(
        self,
        tokens: Tensor,
        names: list[str] | tuple[str, ...] | None = None,
        position: Literal["answer", "all"] = "answer",
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and cached activations: [B, width] ("answer") or [B, 3, width] ("all").

        `names=None` caches every hook point. The "all" path computes every position fully.
        """
        names = self.hook_names if names is None else list(names)
        self._check_names(names)
        if position == "answer":
            cache: dict[str, Tensor] = {}

            def store(name: str) -> Hook:
                def fn(x: Tensor) -> Tensor:
                    cache[name] = x
                    return x

                return fn

            logits = self._run(tokens, {n: store(n) for n in names}, full=False, cache=None)
            return logits, cache
        if position == "all":
            full_cache: dict[str, Tensor] = {}
            logits = self._run(tokens, {}, full=True, cache=full_cache)
            return logits, {n: full_cache[n] for n in names}
        raise HusaiError(f"position must be 'answer' or 'all', got {position!r}")

    def _run(
        self, tokens: Tensor, hooks: dict[str, Hook], full: bool, cache: dict[str, Tensor] | None
    ) -> Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != N_POS:
            raise HusaiError(f"tokens must have shape [batch, {N_POS}], got {list(tokens.shape)}")

        def hook(name: str, x: Tensor) -> Tensor:
            # x is [B, T, w]; hooks see and replace the last (answer) position only.
            if cache is not None:
                cache[name] = x
            fn = hooks.get(name)
            if fn is None:
                return x
            new = fn(x[:, -1])
            if new.shape != x[:, -1].shape:
                raise HusaiError(
                    f"hook {name!r} returned shape {list(new.shape)}, "
                    f"expected {list(x[:, -1].shape)}"
                )
            return torch.cat([x[:, :-1], new.unsqueeze(1)], dim=1)

        # Fast path: block 0's resid_pre is W_E[token] + W_pos[pos], so project the
        # (pos, vocab) table through W_Q/W_K/W_V once and gather rows, instead of per example.
        table = not full and "embed" not in hooks and "blocks.0.resid_pre" not in hooks
        x = tokens if table else hook("embed", F.embedding(tokens, self.W_E)) + self.W_pos
        n = len(self.blocks)
        for layer, blk in enumerate(self.blocks):
            # In the fast path the last block computes the answer position only.
            n_q = N_POS if full or layer < n - 1 else 1
            x = self._block(blk, layer, x, n_q, hook, table and layer == 0)
        return x[:, -1] @ self.W_U

    def _block(
        self, blk: nn.Module, layer: int, x: Tensor, n_q: int, hook: Callable, table: bool
    ) -> Tensor:
        """One block; queries (and everything after attention) at the last n_q positions only.

        With `table`, x is the tokens [B, T] and resid_pre is gathered from the embeddings.
        """
        pre = f"blocks.{layer}."
        H, dh, d = self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model
        if table:
            B, T = x.shape
            rows = (self.W_E.unsqueeze(0) + self.W_pos.unsqueeze(1)).reshape(-1, d)
            idx = x + torch.arange(T) * self.W_E.shape[0]  # row of (pos, token) in `rows`
            xq = F.embedding(idx[:, T - n_q :], rows)
            q = F.embedding(idx[:, T - n_q :], rows @ blk.W_Q)
            k, v = F.embedding(idx, rows @ blk.W_K), F.embedding(idx, rows @ blk.W_V)
        else:
            x = hook(pre + "resid_pre", x)
            B, T, _ = x.shape
            xq = x[:, T - n_q :]
            q, k, v = xq @ blk.W_Q, x @ blk.W_K, x @ blk.W_V
        q = q.view(B, n_q, H, dh).transpose(1, 2)
        k = k.view(B, T, H, dh).transpose(1, 2)
        v = v.view(B, T, H, dh).transpose(1, 2)
        # Broadcast-multiply instead of bmm: with T = 3 the batched matmuls are tiny and slow.
        scores = (q.unsqueeze(3) * k.unsqueeze(2)).sum(-1) / math.sqrt(dh)  # [B, H, n_q, T]
        if n_q > 1:
            qpos = torch.arange(T - n_q, T).unsqueeze(1)
            scores = scores.masked_fill(torch.arange(T) > qpos, float("-inf"))
        z = (scores.softmax(-1).unsqueeze(-1) * v.unsqueeze(2)).sum(3)  # [B, H, n_q, dh]
        z = z.transpose(1, 2).reshape(B, n_q, d)
        attn_out = hook(pre + "attn_out", z @ blk.W_O)
        mid = hook(pre + "resid_mid", xq + attn_out)
        post = hook(pre + "mlp_post", torch.relu(mid @ blk.W_in + blk.b_in))
        mlp_out = hook(pre + "mlp_out", post @ blk.W_out + blk.b_out)
        return hook(pre + "resid_post", mid + mlp_out)
