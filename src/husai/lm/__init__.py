"""Language models: hook sites in TransformerLens names, architecture adapters for
Hugging Face models (Llama and GPT-2 families), hook-and-stop capture, offline loading
from a local directory. transformers is needed only to load a model (the `lm` extra)."""

from husai.lm.adapters import FAMILIES, Adapter, family_of
from husai.lm.capture import capture
from husai.lm.load import load_model
from husai.lm.sites import KINDS, SUFFIXES, Site, as_site, parse_site, site

__all__ = [
    "FAMILIES",
    "KINDS",
    "SUFFIXES",
    "Adapter",
    "Site",
    "as_site",
    "capture",
    "family_of",
    "load_model",
    "parse_site",
    "site",
]
