"""Published cross-seed consistency of LM SAEs, for the report's comparison table.

These are the studies' own numbers as they report them (not recomputed here); `metric`
names the husai metric of the same family, and `variant` says how the study's differs;
None: not recorded here.
"""

from __future__ import annotations

from typing import Any

REFERENCES: list[dict[str, Any]] = [
    {
        "study": "Song et al. 2025",
        "model": "Pythia-160m",
        "site": "resid_post, layer 8",
        "width": "16k",
        "seeds": 3,
        "architecture": "TopK",
        "value": "PW-MCC ≈ 0.80",
        "metric": "hungarian_mcc",
        "variant": "one-to-one (Hungarian) matching on *signed* cosine; husai's hungarian_mcc "
        "matches on |cos| (≥ the signed score for the same decoders)",
    },
    {
        "study": "Paulo & Belrose 2025",
        "model": "Pythia-160m",
        "site": "MLP, layer 6",
        "width": "32k",
        "seeds": 9,
        "architecture": "TopK",
        "value": "≈ 42% shared latents",
        "metric": "shared_latent_rate",
        "variant": "same partner under the encoder and the decoder Hungarian matchings, both "
        "|cos| > 0.7 — as husai's shared_latent_rate",
    },
    {
        "study": "Paulo & Belrose 2025",
        "model": "Llama-3-8B",
        "site": None,
        "width": "131k",
        "seeds": None,
        "architecture": "TopK",
        "value": "≈ 30% shared latents",
        "metric": "shared_latent_rate",
        "variant": "as above",
    },
]
