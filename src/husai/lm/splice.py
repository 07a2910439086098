"""Splice replacements into a language model's forward: sites' activations replaced by
`fn(activation)` (an SAE's reconstruction, zeros, the mean, …), the logits returned.

Each site is replaced where the adapter's hook point holds it — a module's output by a
forward hook returning the new output (a tuple keeps its other elements), a module's input
by a forward pre-hook returning new args — so that everything downstream reads the
replacement. One exception: `resid_mid` has no module boundary in a Hugging Face block
(the block keeps the residual in a local variable, and the second norm's input only feeds
the MLP), so it is replaced through the attention output: `attn_out' = fn(r) − resid_pre`
with r = resid_pre + attn_out, and the block's own sum gives fn(r) (up to float rounding)
to both the MLP and the residual stream. `mlp_in` and `ln2_normalized` are, as in
TransformerLens, what the MLP reads only: replacing them leaves the residual stream alone.

`positions` ([B, T], bool or 0/1) limits the replacement to those tokens (elsewhere the activation
is kept); None replaces every position. A fn that returns its argument itself changes
nothing, exactly. Hooks fire in forward order; they are removed in a `finally`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from husai.errors import HusaiError
from husai.lm.adapters import Adapter
from husai.lm.sites import KINDS, Site, site

Replacement = Callable[[Tensor], Tensor]


def forward_order(s: Site) -> tuple[int, int]:
    """Where a site comes in a block's forward (layer, then KINDS' order)."""
    return s.layer, KINDS.index(s.kind)


def splice(
    model: nn.Module,
    input_ids: Tensor,
    replacements: Mapping[Site | str, Replacement],
    attention_mask: Tensor | None = None,
    *,
    positions: Tensor | None = None,
) -> Tensor:
    """Logits [B, T, V] of the model on token ids [B, T] with each site's activation
    [B, T, D] replaced by `fn(activation)` (same shape; cast to the activation's dtype).

    An empty mapping runs the clean model. Runs under `torch.no_grad()`."""
    adapter = Adapter(model)
    if input_ids.dim() != 2:
        raise HusaiError(f"token ids must be [batch, tokens], got {tuple(input_ids.shape)}")
    if positions is not None and positions.shape != input_ids.shape:
        raise HusaiError(
            f"positions must be [batch, tokens] like the ids {tuple(input_ids.shape)}, "
            f"got {tuple(positions.shape)}"
        )
    todo = sorted(((adapter.site(k), fn) for k, fn in replacements.items()), key=_order)
    handles: list[Any] = []
    try:
        for s, fn in todo:
            handles += _register(adapter, s, _replacer(s, fn, positions))
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out.logits


def _order(item: tuple[Site, Replacement]) -> tuple[int, int]:
    return forward_order(item[0])


def _replacer(s: Site, fn: Replacement, positions: Tensor | None) -> Replacement:
    """fn checked (shape), cast, and applied only at `positions`."""

    def apply(a: Tensor) -> Tensor:
        new = fn(a)
        if new is a:
            return a
        if not isinstance(new, Tensor) or new.shape != a.shape:
            got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
            raise HusaiError(
                f"the replacement at {s.name} gave {got}, the activation is {tuple(a.shape)}"
            )
        new = new.to(dtype=a.dtype, device=a.device)
        if positions is not None:
            new = torch.where(positions.to(a.device, torch.bool).unsqueeze(-1), new, a)
        return new

    return apply


def _register(adapter: Adapter, s: Site, apply: Replacement) -> list[Any]:
    if s.kind == "resid_mid":
        return _register_resid_mid(adapter, s, apply)
    module, end = adapter.hook_point(s)
    if end == "input":
        return [module.register_forward_pre_hook(_input_hook(apply), with_kwargs=True)]
    return [module.register_forward_hook(_output_hook(apply))]


def _register_resid_mid(adapter: Adapter, s: Site, apply: Replacement) -> list[Any]:
    """resid_mid = resid_pre + attn_out, replaced through the attention output."""
    block, _ = adapter.hook_point(site(s.layer, "resid_pre"))
    attn, _ = adapter.hook_point(site(s.layer, "attn_out"))
    seen: dict[str, Tensor] = {}

    def pre(a: Tensor) -> Tensor:
        seen["resid_pre"] = a
        return a

    def post(attn_out: Tensor) -> Tensor:
        resid_pre = seen.pop("resid_pre")
        mid = resid_pre + attn_out
        new = apply(mid)
        return attn_out if new is mid else new - resid_pre

    return [
        block.register_forward_pre_hook(_input_hook(pre), with_kwargs=True),
        attn.register_forward_hook(_output_hook(post)),
    ]


def _input_hook(apply: Replacement) -> Any:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if args:
            new = apply(args[0])
            return None if new is args[0] else ((new, *args[1:]), kwargs)
        new = apply(kwargs["hidden_states"])
        return None if new is kwargs["hidden_states"] else (args, {**kwargs, "hidden_states": new})

    return hook


def _output_hook(apply: Replacement) -> Any:
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        if isinstance(output, tuple | list):
            new = apply(output[0])
            return None if new is output[0] else type(output)((new, *output[1:]))
        new = apply(output)
        return None if new is output else new

    return hook
