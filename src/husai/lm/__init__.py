"""Language models: hook sites in TransformerLens names, architecture adapters for
Hugging Face models (Llama and GPT-2 families), hook-and-stop capture, replacements spliced
into the forward (`splice`), offline loading from a local directory or of a packaged model
(SmolLM2). transformers is imported only to
load a model (the `lm` extra)."""

from husai.lm.adapters import FAMILIES, Adapter, family_of
from husai.lm.capture import capture
from husai.lm.load import load_model, load_tokenizer
from husai.lm.packaged import PACKAGED, packaged_model_dir, resolve_model_dir
from husai.lm.sites import KINDS, SUFFIXES, Site, as_site, parse_site, site
from husai.lm.splice import splice

__all__ = [
    "FAMILIES",
    "KINDS",
    "PACKAGED",
    "SUFFIXES",
    "Adapter",
    "Site",
    "as_site",
    "capture",
    "family_of",
    "load_model",
    "load_tokenizer",
    "packaged_model_dir",
    "parse_site",
    "resolve_model_dir",
    "site",
    "splice",
]
