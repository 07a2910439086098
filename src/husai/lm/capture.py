"""Capture sites' activations with forward hooks, stopping the forward once all are in.

The model runs unchanged (its layer list is never sliced); a hook records its site and,
when every requested site is recorded, raises a private exception that ends the forward
there, so deeper layers, the final norm and the LM head never run. Hooks are removed
in a `finally`, also when the forward fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from husai.errors import HusaiError
from husai.lm.adapters import Adapter
from husai.lm.sites import Site


class _Stop(Exception):
    """Raised by the last hook to end the forward early."""


def _first_tensor(value: Any) -> Tensor:
    return value[0] if isinstance(value, tuple | list) else value


def capture(
    model: nn.Module,
    input_ids: Tensor,
    sites: Sequence[Site | str],
    attention_mask: Tensor | None = None,
    *,
    dtype: torch.dtype | None = torch.float32,
    stop: bool = True,
) -> dict[str, Tensor]:
    """Activations [B, T, D] at `sites` for token ids [B, T], keyed by TransformerLens name.

    `dtype=None` keeps the model's dtype. With `stop=False` the whole forward runs (for
    checks). Runs under `torch.no_grad()` (not inference mode: the tensors may later feed
    training); results stay on the model's device.
    """
    adapter = Adapter(model)
    if input_ids.dim() != 2:
        raise HusaiError(f"token ids must be [batch, tokens], got {tuple(input_ids.shape)}")
    wanted = sorted({adapter.site(s) for s in sites})
    if not wanted:
        raise HusaiError("no sites to capture")
    points: dict[tuple[int, str], tuple[nn.Module, str, list[str]]] = {}
    for s in wanted:
        module, end = adapter.hook_point(s)
        points.setdefault((id(module), end), (module, end, []))[2].append(s.name)

    out: dict[str, Tensor] = {}

    def record(names: list[str], value: Any) -> None:
        t = _first_tensor(value).detach()
        for name in names:
            out[name] = t.to(dtype=dtype or t.dtype, copy=True)
        if stop and len(out) == len(wanted):
            raise _Stop

    handles = []
    try:
        for module, end, names in points.values():
            if end == "input":
                hook = _input_hook(record, names)
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_output_hook(record, names)))
        with torch.no_grad():
            try:
                model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    missing = [s.name for s in wanted if s.name not in out]
    if missing:
        raise HusaiError(f"the forward never reached {', '.join(missing)}")
    return {s.name: out[s.name] for s in wanted}


def _input_hook(record: Any, names: list[str]) -> Any:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        record(names, args[0] if args else kwargs["hidden_states"])

    return hook


def _output_hook(record: Any, names: list[str]) -> Any:
    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        record(names, output)

    return hook
