"""Architecture adapters: where each site lives in a Hugging Face model's modules.

A family names its decoder layers and, inside a layer, its attention, second norm and MLP
(read from transformers 5.x's `modeling_llama.py` / `modeling_gpt2.py`):

| family | layers | attention | second norm | MLP |
|---|---|---|---|---|
| llama (`LlamaForCausalLM`) | `model.layers` | `self_attn` | `post_attention_layernorm` | `mlp` |
| gpt2 (`GPT2LMHeadModel`) | `transformer.h` | `attn` | `ln_2` | `mlp` |

A site is then one module and one end of it: the module's input (first positional
argument) or its output (the tensor, or the first element of a tuple: attention modules
return `(attn_output, attn_weights)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from husai.errors import HusaiError
from husai.lm.sites import Site, as_site

End = Literal["input", "output"]


@dataclass(frozen=True)
class Family:
    """Module names of one architecture family (attributes of its base model / layers)."""

    layers: str
    attn: str
    ln2: str
    mlp: str


FAMILIES = {
    "llama": Family(layers="layers", attn="self_attn", ln2="post_attention_layernorm", mlp="mlp"),
    "gpt2": Family(layers="h", attn="attn", ln2="ln_2", mlp="mlp"),
}


def family_of(model: nn.Module) -> str:
    """The family of a transformers model, from its config's `model_type`."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise HusaiError(
            f"unsupported model type {model_type!r} ({type(model).__name__}; "
            f"supported: {', '.join(sorted(FAMILIES))})"
        )
    return model_type


class Adapter:
    """A model's sites → (module, end). Works on the causal LM or its base model."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.family = family_of(model)
        self._names = FAMILIES[self.family]
        base = getattr(model, "base_model", model)
        layers = getattr(base, self._names.layers, None)
        if not isinstance(layers, nn.ModuleList):
            raise HusaiError(
                f"{type(model).__name__}: no decoder layers at '{self._names.layers}' "
                f"for the {self.family} family"
            )
        self.layers = layers

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    def site(self, value: Site | str) -> Site:
        """A site checked against this model's layers."""
        return as_site(value, self.n_layers)

    def hook_point(self, value: Site | str) -> tuple[nn.Module, End]:
        """The module whose input or output holds the site's activation."""
        s = self.site(value)
        layer = self.layers[s.layer]
        names = self._names
        return {
            "resid_pre": (layer, "input"),
            "attn_out": (getattr(layer, names.attn), "output"),
            "resid_mid": (getattr(layer, names.ln2), "input"),
            "mlp_in": (getattr(layer, names.ln2), "input"),
            "ln2_normalized": (getattr(layer, names.mlp), "input"),
            "mlp_out": (getattr(layer, names.mlp), "output"),
            "resid_post": (layer, "output"),
        }[s.kind]
