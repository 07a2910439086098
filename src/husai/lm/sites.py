"""Hook sites in TransformerLens names: `blocks.L.hook_resid_post`, ….

A site is a layer and a kind. The kinds and what they hold, for a pre-norm block
(resid_mid = resid_pre + attn_out, resid_post = resid_mid + mlp_out):

- `resid_pre`: the block's input;
- `attn_out`: the attention sublayer's output (after its output projection);
- `resid_mid`: the residual stream between attention and MLP;
- `mlp_in`: TransformerLens's `hook_mlp_in`, the MLP sublayer's input *before* its norm
  (equal to `resid_mid`, as in TransformerLens);
- `ln2_normalized`: TransformerLens's `ln2.hook_normalized`, what the MLP itself reads
  (after the second norm) — the input of an MLP transcoder;
- `mlp_out`: the MLP's output;
- `resid_post`: the block's output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from husai.errors import HusaiError

# kind → the TransformerLens name's suffix after `blocks.L.`
SUFFIXES = {
    "resid_pre": "hook_resid_pre",
    "attn_out": "hook_attn_out",
    "resid_mid": "hook_resid_mid",
    "mlp_in": "hook_mlp_in",
    "ln2_normalized": "ln2.hook_normalized",
    "mlp_out": "hook_mlp_out",
    "resid_post": "hook_resid_post",
}
KINDS = tuple(SUFFIXES)
_KIND_OF = {suffix: kind for kind, suffix in SUFFIXES.items()}
_NAME = re.compile(r"blocks\.(-?\d+)\.(.+)")


@dataclass(frozen=True, order=True)
class Site:
    """One hook site: `layer` (0-based) and `kind` (one of KINDS)."""

    layer: int
    kind: str

    @property
    def name(self) -> str:
        """The TransformerLens hook name, e.g. `blocks.3.hook_resid_post`."""
        return f"blocks.{self.layer}.{SUFFIXES[self.kind]}"

    def __str__(self) -> str:
        return self.name


def _check_layer(layer: int, n_layers: int | None, what: str) -> None:
    if layer < 0 or (n_layers is not None and layer >= n_layers):
        valid = f"0..{n_layers - 1}" if n_layers is not None else "≥ 0"
        raise HusaiError(f"{what}: layer {layer} out of range (valid: {valid})")


def site(layer: int, kind: str, n_layers: int | None = None) -> Site:
    """A Site from a layer and a short kind (`resid_post`, …), checked against `n_layers`."""
    if kind not in SUFFIXES:
        raise HusaiError(f"unknown site {kind!r} (valid: {', '.join(KINDS)})")
    _check_layer(layer, n_layers, f"site {kind!r}")
    return Site(layer, kind)


def parse_site(name: str, n_layers: int | None = None) -> Site:
    """A Site from a TransformerLens name (`blocks.3.hook_resid_post`), checked against
    `n_layers` when given."""
    m = _NAME.fullmatch(name.strip())
    if m is None or m.group(2) not in _KIND_OF:
        raise HusaiError(f"unknown site {name!r} (valid: blocks.L.<{'|'.join(SUFFIXES.values())}>)")
    layer = int(m.group(1))
    _check_layer(layer, n_layers, f"site {name!r}")
    return Site(layer, _KIND_OF[m.group(2)])


def as_site(value: Site | str, n_layers: int | None = None) -> Site:
    """A Site, a TransformerLens name, checked against `n_layers`."""
    if isinstance(value, Site):
        return site(value.layer, value.kind, n_layers)
    return parse_site(value, n_layers)
