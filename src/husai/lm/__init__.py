"""Language models: hook sites in TransformerLens names, architecture adapters for
Hugging Face models (Llama and GPT-2 families), hook-and-stop capture, replacements spliced
into the forward (`splice`), offline loading from a local directory or of a packaged model
(SmolLM2), corpora and token contexts, extraction into sharded activation stores
(`husai.store`). transformers is imported only to
load a model (the `lm` extra)."""

from husai.lm.adapters import FAMILIES, Adapter, family_of
from husai.lm.capture import capture
from husai.lm.corpus import (
    STDLIB_CODE,
    Contexts,
    Corpus,
    read_corpus,
    read_token_ids,
    stdlib_code_corpus,
    stdlib_corpus,
    tokenize_contexts,
    tokenizer_hash,
)
from husai.lm.extract import ExtractResult, extract_to_stores, model_hash, store_paths
from husai.lm.load import load_model, load_tokenizer
from husai.lm.packaged import PACKAGED, packaged_model_dir, resolve_model_dir
from husai.lm.sites import KINDS, SUFFIXES, Site, as_site, parse_site, site
from husai.lm.splice import splice

__all__ = [
    "FAMILIES",
    "KINDS",
    "PACKAGED",
    "STDLIB_CODE",
    "SUFFIXES",
    "Adapter",
    "Contexts",
    "Corpus",
    "ExtractResult",
    "Site",
    "as_site",
    "capture",
    "extract_to_stores",
    "family_of",
    "load_model",
    "load_tokenizer",
    "model_hash",
    "packaged_model_dir",
    "parse_site",
    "read_corpus",
    "read_token_ids",
    "resolve_model_dir",
    "site",
    "splice",
    "stdlib_code_corpus",
    "stdlib_corpus",
    "store_paths",
    "tokenize_contexts",
    "tokenizer_hash",
]
