"""EleutherAI sparsify layout: `cfg.json` + `sae.safetensors` (one SAE per directory).

Tensors: `encoder.weight` [d_sae, d_in], `encoder.bias` [d_sae], `W_dec` [d_sae, d_in]
(stored as is — no transpose), `b_dec` [d_in]. sparsify's forward is
codes = TopK_k(ReLU(encoder(x − b_dec))), x̂ = codes W_dec + b_dec: husai's TopK exactly.
A transcoder (`transcode: true`; d_out = d_in) does not centre its input: it loads as a husai
transcoder (b_dec is only the output's bias).
Refused: `activation: groupmax` and a skip connection (`W_skip`), which husai cannot express.
The seed is read from a `seed<N>` directory name (sparsify's multi-seed runs), else 0.
"""

from __future__ import annotations

import re
from pathlib import Path

from husai.errors import HusaiError
from husai.io import load_tensors, read_json
from husai.sae.base import SAE
from husai.sae.formats.common import Spec, build, check_tensors
from husai.sae.formats.files import CFG_FILE, SPARSIFY_WEIGHTS_FILE

SPEC: Spec = {
    "encoder.weight": ("F", "D"),
    "encoder.bias": ("F",),
    "W_dec": ("F", "D"),
    "b_dec": ("D",),
}
SEED_DIR = re.compile(r"seed_?(\d+)")


def load(path: Path) -> SAE:
    """Read one sparsify SAE directory into a one-seed husai TopK SAE."""
    path = Path(path)
    cfg_file, weights_file = path / CFG_FILE, path / SPARSIFY_WEIGHTS_FILE
    cfg = read_json(cfg_file)
    if not isinstance(cfg, dict):
        raise HusaiError(f"{cfg_file}: expected a JSON object")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise HusaiError(f"{cfg_file}: activation {activation!r} is not supported (only topk)")
    tensors, _ = load_tensors(weights_file)
    if cfg.get("skip_connection") or "W_skip" in tensors:
        raise HusaiError(f"{weights_file}: skip connections (W_skip) are not supported")
    t = check_tensors(tensors, SPEC, weights_file)
    w = {"W_enc": t["encoder.weight"], "b_enc": t["encoder.bias"], "W_dec": t["W_dec"]}
    w["b_dec"] = t["b_dec"]
    if "d_in" in cfg and cfg["d_in"] != w["W_dec"].shape[1]:
        raise HusaiError(
            f"{cfg_file}: d_in {cfg['d_in']} does not match W_dec {tuple(w['W_dec'].shape)}"
        )
    if cfg.get("num_latents") not in (None, 0, w["W_dec"].shape[0]):  # 0: expansion_factor
        raise HusaiError(
            f"{cfg_file}: num_latents {cfg['num_latents']!r} does not match W_dec "
            f"{tuple(w['W_dec'].shape)}"
        )
    m = SEED_DIR.fullmatch(path.resolve().name)
    k = cfg.get("k", 32)
    if not isinstance(k, int) or isinstance(k, bool):  # 8.5 or "8" is not silently 8
        raise HusaiError(f"{cfg_file}: k must be an integer, got {k!r}")
    seed = int(m.group(1)) if m else 0
    return build("topk", w, weights_file, seed=seed, transcoder=bool(cfg.get("transcode")), k=k)
