"""Extraction into a store vs the bare forward. Prints numbers and ratios; asserts nothing.

    python benchmarks/bench_extract.py                      # packaged SmolLM2 if installed
    python benchmarks/bench_extract.py --contexts 32 --layer 15 --dtype bfloat16

On the stdlib corpus (contexts of --context-size tokens), at blocks.L.hook_resid_post:
tokens/s of (a) a full forward with output_hidden_states, (b) hook-and-stop `capture` (the
bare forward to layer L), (c) `extract_to_stores` (capture + token policy + shard writes +
hashes), and the ratio (c)/(b) (goal ≥ 0.9). Without the packaged model a random Llama of
SmolLM2's shape (30 × 576) stands in.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from husai.errors import HusaiError
from husai.lm import (
    capture,
    extract_to_stores,
    load_model,
    load_tokenizer,
    resolve_model_dir,
    stdlib_corpus,
    tokenize_contexts,
)


def _model_and_tokenizer():  # noqa: ANN202
    try:
        d = resolve_model_dir("smollm2")
        return load_model(d), load_tokenizer(d), "smollm2"
    except HusaiError:
        import transformers
        from tokenizers import Tokenizer, models, pre_tokenizers

        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
        )  # fmt: skip
        words = sorted({w for doc in stdlib_corpus().documents for w in doc.split()})[:49000]
        vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2, **{w: i + 3 for i, w in enumerate(words)}}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        wrapped = transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
        )
        return transformers.LlamaForCausalLM(cfg).eval(), wrapped, "random llama 30x576"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", type=int, default=32)
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    model, tok, name = _model_and_tokenizer()
    ctx = tokenize_contexts(stdlib_corpus(), tok, args.context_size, n_contexts=args.contexts)
    site = f"blocks.{args.layer}.hook_resid_post"
    batches = ctx.ids.split(args.batch_size)
    capture(model, batches[0], [site])  # warm-up

    t0 = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            model(input_ids=b, output_hidden_states=True, use_cache=False)
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in batches:
        capture(model, b, [site])
    stop = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="husai_bench_store_"))
    try:
        res = extract_to_stores(
            model, ctx, [site], out / "s", model_name=name, dtype=args.dtype,
            batch_size=args.batch_size, contexts_per_shard=4 * args.batch_size,
        )  # fmt: skip
    finally:
        shutil.rmtree(out, ignore_errors=True)
    n = ctx.n_tokens
    print(f"model: {name}; {ctx.n_contexts} contexts x {ctx.context_size} tokens = {n}; {site}")
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"(a) full forward + hidden_states : {n / full:9.1f} tokens/s")
    print(f"(b) hook-and-stop capture        : {n / stop:9.1f} tokens/s  ({full / stop:.2f}x a)")
    print(f"(c) extract_to_stores ({args.dtype:8s}) : {res.tokens_per_s:9.1f} tokens/s")
    print(f"(c)/(b) = {res.tokens_per_s / (n / stop):.2f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
