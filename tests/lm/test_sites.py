"""Site names in the TransformerLens convention: parse, build, reject (no transformers needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from husai.errors import HusaiError
from husai.lm.sites import KINDS, Site, as_site, parse_site, site


@pytest.mark.parametrize("kind", KINDS)
def test_name_round_trip(kind: str) -> None:
    s = site(2, kind, n_layers=3)
    assert parse_site(s.name, n_layers=3) == s == as_site(s, 3) == as_site(s.name)
    assert s.name.startswith("blocks.2.")


def test_transformerlens_names() -> None:
    assert site(0, "resid_pre").name == "blocks.0.hook_resid_pre"
    assert site(5, "resid_post").name == "blocks.5.hook_resid_post"
    assert site(1, "attn_out").name == "blocks.1.hook_attn_out"
    assert site(1, "mlp_in").name == "blocks.1.hook_mlp_in"
    assert site(1, "ln2_normalized").name == "blocks.1.ln2.hook_normalized"
    assert site(1, "mlp_out").name == "blocks.1.hook_mlp_out"
    assert sorted([Site(2, "mlp_out"), Site(0, "resid_post")])[0].layer == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: site(0, "resid"), r"unknown site 'resid' \(valid: resid_pre, "),
        (lambda: parse_site("blocks.0.hook_resid"), r"unknown site 'blocks.0.hook_resid'"),
        (lambda: parse_site("layers.0.hook_resid_post"), "unknown site"),
        (lambda: parse_site("blocks.x.hook_resid_post"), "unknown site"),
        (lambda: site(3, "resid_post", n_layers=3), r"layer 3 out of range \(valid: 0\.\.2\)"),
        (lambda: parse_site("blocks.7.hook_mlp_out", 3), r"layer 7 out of range \(valid: 0\.\.2\)"),
        (lambda: parse_site("blocks.-1.hook_mlp_out"), r"layer -1 out of range \(valid: ≥ 0\)"),
        (lambda: as_site(Site(4, "attn_out"), 2), r"layer 4 out of range \(valid: 0\.\.1\)"),
    ],
)
def test_bad_sites_are_one_line_errors(call, match: str) -> None:
    with pytest.raises(HusaiError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_importing_husai_lm_does_not_import_transformers() -> None:
    """transformers (seconds to import) loads only when a model is loaded from disk."""
    code = "import sys, husai.lm; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
