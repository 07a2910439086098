"""Text, offline: corpora and fixed-length token contexts.

A corpus is an ordered tuple of documents (text) or one stream of token ids:

- `.txt`: documents separated by one or more blank lines (a file with no blank line is one
  document); lines inside a document are kept as they are;
- `.jsonl`: one JSON object per line, its `text_field` (default `text`) a document; blank
  lines are skipped;
- pre-tokenised ids: `.safetensors` (tensor `input_ids`, or the file's only tensor) or
  `.npy` (read with `allow_pickle=False`), integer ids; a 2-D array is read row by row
  into one stream;
- `stdlib_corpus()`: the embedded default, needing no download — the Python standard
  library's documentation (`pydoc_data.topics.topics`, its values in sorted key order) and
  optionally the module docstrings of the stdlib's own sources (read with `ast`, never
  imported; sorted by path). It differs between Python versions: `Corpus.hash` names it.

Contexts (`tokenize_contexts`): documents are tokenised without special tokens, then
concatenated in order with a separator token between them (the tokenizer's EOS by
default), and the stream is cut into consecutive pieces of `context_size − 1` tokens with
the BOS token prepended (`prepend_bos=True`), or of `context_size` tokens
(`prepend_bos=False`); a last partial piece is dropped. The tokenizer's own BOS policy is
never used, so the same contexts come out whatever its defaults (SmolLM2's tokenizer adds
no BOS; its `bos_token` is `<|im_start|>`; GPT-2's is `<|endoftext|>`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from husai.errors import HusaiError
from husai.io import tensor_hash

TEXT_SUFFIXES = (".txt", ".jsonl")
ID_SUFFIXES = (".safetensors", ".npy")
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages"}


@dataclass(frozen=True)
class Corpus:
    """Documents in order (`documents`) or one stream of token ids (`ids`), and a name."""

    name: str
    documents: tuple[str, ...] = ()
    ids: Tensor | None = field(default=None, compare=False)

    @property
    def hash(self) -> str:
        """sha256 of the content (documents length-prefixed, or the ids' tensor hash)."""
        if self.ids is not None:
            return hashlib.sha256(f"ids:{tensor_hash(self.ids)}".encode()).hexdigest()
        h = hashlib.sha256(b"docs:")
        for doc in self.documents:
            b = doc.encode()
            h.update(f"{len(b)}:".encode())
            h.update(b)
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.documents) if self.ids is None else int(self.ids.numel())


def stdlib_corpus(*, docstrings: bool = False) -> Corpus:
    """The Python standard library's documentation: pydoc's topics (≈ 465k characters,
    ≈ 113k SmolLM2 tokens on Python 3.11), plus with `docstrings=True` the docstrings
    (module, class, function) of the stdlib's sources, one document per file (parsed with
    `ast`, a few seconds)."""
    from pydoc_data.topics import topics

    docs = [topics[k].strip() for k in sorted(topics)]
    name = "python-stdlib-docs"
    if docstrings:
        docs += _module_docstrings(Path(sysconfig.get_paths()["stdlib"]))
        name += "+docstrings"
    return Corpus(name=name, documents=tuple(d for d in docs if d))


_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
STDLIB_CODE = "stdlib-code"  # the built-in OOD corpus's name (`stdlib_code_corpus`)


def stdlib_code_corpus(max_chars: int) -> Corpus:
    """The Python code of the stdlib's sources (sorted by path, tests skipped), one document
    per file, with docstrings and comments stripped (`ast.unparse` of the tree without its
    docstrings): code, where `stdlib_corpus` is documentation prose. Files are read until
    the documents hold ≥ `max_chars` characters (or the stdlib ends)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    total = 0
    for p in sorted(root.rglob("*.py")):
        if total >= max_chars:
            break
        if _SKIP_DIRS & set(p.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(p.read_bytes())
            for n in ast.walk(tree):
                if isinstance(n, _DOC_NODES) and ast.get_docstring(n) is not None:
                    n.body = n.body[1:] or [ast.Pass()]
            code = ast.unparse(tree).strip()
        except (SyntaxError, ValueError, OSError, RecursionError):
            continue
        if code:
            docs.append(code)
            total += len(code)
    if not docs:
        raise HusaiError(f"{root}: no Python sources for the {STDLIB_CODE} corpus")
    return Corpus(name=f"python-{STDLIB_CODE}", documents=tuple(docs))


def _module_docstrings(root: Path) -> list[str]:
    """One document per source file: its module, class and function docstrings in source
    order, separated by blank lines (files are parsed, never imported)."""
    out = []
    for p in sorted(root.rglob("*.py")):
        if _SKIP_DIRS & set(p.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(p.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        nodes = sorted(
            (n for n in ast.walk(tree) if isinstance(n, _DOC_NODES)),
            key=lambda n: getattr(n, "lineno", 0),  # the module (no lineno) first
        )
        docs = [d.strip() for n in nodes if (d := ast.get_docstring(n)) and d.strip()]
        if docs:
            out.append("\n\n".join(docs))
    return out


def read_corpus(paths: str | Path | Sequence[str | Path], *, text_field: str = "text") -> Corpus:
    """A user corpus from `.txt` / `.jsonl` files (documents in file order, then in order
    inside each file) or one pre-tokenised ids file (`.safetensors` / `.npy`)."""
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not paths:
        raise HusaiError("no corpus files given")
    for p in paths:
        if not p.is_file():
            raise HusaiError(f"{p}: corpus file not found")
    if any(p.suffix in ID_SUFFIXES for p in paths):
        if len(paths) != 1:
            raise HusaiError("a pre-tokenised corpus is one file (.safetensors or .npy)")
        ids = read_token_ids(paths[0])
        return Corpus(name=paths[0].name, ids=ids)
    docs: list[str] = []
    for p in paths:
        if p.suffix == ".txt":
            docs += _txt_documents(p)
        elif p.suffix == ".jsonl":
            docs += _jsonl_documents(p, text_field)
        else:
            valid = ", ".join(TEXT_SUFFIXES + ID_SUFFIXES)
            raise HusaiError(f"{p}: unknown corpus format {p.suffix!r} (valid: {valid})")
    if not docs:
        raise HusaiError(f"{', '.join(map(str, paths))}: empty corpus (no text)")
    return Corpus(name="+".join(p.name for p in paths), documents=tuple(docs))


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise HusaiError(f"{p}: cannot read the corpus file ({type(e).__name__}: {e})") from None


def _txt_documents(p: Path) -> list[str]:
    docs, current = [], []
    for line in _read_text(p).splitlines():
        if line.strip():
            current.append(line)
        elif current:
            docs.append("\n".join(current))
            current = []
    if current:
        docs.append("\n".join(current))
    return docs


def _jsonl_documents(p: Path, text_field: str) -> list[str]:
    docs = []
    for i, line in enumerate(_read_text(p).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise HusaiError(f"{p}:{i}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or text_field not in obj:
            raise HusaiError(f"{p}:{i}: no {text_field!r} field")
        if not isinstance(obj[text_field], str):
            raise HusaiError(f"{p}:{i}: field {text_field!r} is not a string")
        if obj[text_field].strip():
            docs.append(obj[text_field])
    return docs


def read_token_ids(p: Path) -> Tensor:
    """Integer token ids [n] (int64) from a `.safetensors` or `.npy` file (no pickles)."""
    p = Path(p)
    if p.suffix == ".safetensors":
        from husai.io import load_tensors

        tensors, _ = load_tensors(p)
        if "input_ids" in tensors:
            t = tensors["input_ids"]
        elif len(tensors) == 1:
            t = next(iter(tensors.values()))
        else:
            raise HusaiError(f"{p}: no 'input_ids' tensor (found: {sorted(tensors)})")
    elif p.suffix == ".npy":
        import numpy as np

        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise HusaiError(f"{p}: not a readable .npy array of ids ({e})") from None
        if not np.issubdtype(arr.dtype, np.integer):
            raise HusaiError(f"{p}: token ids must be integers, got {arr.dtype}")
        t = torch.from_numpy(arr.astype(np.int64))
    else:
        raise HusaiError(f"{p}: token ids must be .safetensors or .npy")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise HusaiError(f"{p}: token ids must be integers, got {t.dtype}")
    t = t.reshape(-1).to(torch.int64)
    if not len(t):
        raise HusaiError(f"{p}: empty corpus (no token ids)")
    if int(t.min()) < 0:
        raise HusaiError(f"{p}: negative token ids")
    return t


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of a tokenizer's definition (a fast tokenizer's JSON, else its vocabulary)
    and its special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = backend.to_str()
    else:
        spec = json.dumps(sorted(tokenizer.get_vocab().items()))
    special = json.dumps(
        {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    )
    return hashlib.sha256(f"{spec}\n{special}".encode()).hexdigest()


@dataclass(frozen=True)
class Contexts:
    """Token ids [n_contexts, context_size] and how they were made (`metadata()`)."""

    ids: Tensor
    context_size: int
    prepend_bos: bool
    bos_token_id: int | None
    separator_token_id: int | None
    corpus_name: str
    corpus_hash: str
    tokenizer_hash: str
    n_documents: int  # documents tokenised (all, or until the budget was reached)

    @property
    def n_contexts(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.ids.numel())

    def metadata(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus_name,
            "corpus_hash": self.corpus_hash,
            "tokenizer_hash": self.tokenizer_hash,
            "context_size": self.context_size,
            "prepend_bos": self.prepend_bos,
            "bos_token_id": self.bos_token_id,
            "separator_token_id": self.separator_token_id,
            "n_contexts": self.n_contexts,
            "n_documents": self.n_documents,
            "contexts_hash": tensor_hash(self.ids),
        }


_DEFAULT = object()


def tokenize_contexts(
    corpus: Corpus,
    tokenizer: Any,
    context_size: int,
    *,
    prepend_bos: bool = True,
    n_contexts: int | None = None,
    max_tokens: int | None = None,
    separator: Any = _DEFAULT,
    chunk: int = 256,
) -> Contexts:
    """Fixed-length contexts [n, context_size] (int64) from `corpus`, in corpus order.

    The budget is `n_contexts`, or `max_tokens` // context_size contexts, or all the corpus
    holds; tokenisation stops once it is met. `separator` is the token id put between
    documents (default: the tokenizer's EOS; None: nothing). A corpus shorter than one
    context is an error."""
    if context_size < 2:
        raise HusaiError(f"context_size must be ≥ 2, got {context_size}")
    if n_contexts is not None and max_tokens is not None:
        raise HusaiError("give n_contexts or max_tokens, not both")
    if max_tokens is not None:
        n_contexts = max_tokens // context_size
    if n_contexts is not None and n_contexts < 1:
        raise HusaiError(f"the token budget holds no context of {context_size} tokens")
    bos = tokenizer.bos_token_id
    if prepend_bos and bos is None:
        raise HusaiError("prepend_bos: the tokenizer has no BOS token (use prepend_bos=False)")
    sep = tokenizer.eos_token_id if separator is _DEFAULT else separator
    body = context_size - 1 if prepend_bos else context_size
    need = None if n_contexts is None else n_contexts * body

    if corpus.ids is not None:
        stream, n_docs = corpus.ids.reshape(-1).to(torch.int64), 1
        if len(tokenizer) and int(stream.max()) >= len(tokenizer):
            raise HusaiError(
                f"{corpus.name}: token id {int(stream.max())} out of the tokenizer's "
                f"vocabulary ({len(tokenizer)} tokens)"
            )
    else:
        if not corpus.documents:
            raise HusaiError(f"{corpus.name}: empty corpus (no documents)")
        stream, n_docs = _token_stream(corpus.documents, tokenizer, sep, need, chunk)
    n_avail = len(stream) // body
    if n_avail < 1:
        raise HusaiError(
            f"{corpus.name}: {len(stream)} tokens, shorter than one context of "
            f"{context_size} tokens"
        )
    n = n_avail if n_contexts is None else min(n_contexts, n_avail)
    pieces = stream[: n * body].reshape(n, body)
    if prepend_bos:
        pieces = torch.cat([torch.full((n, 1), bos, dtype=torch.int64), pieces], dim=1)
    return Contexts(
        ids=pieces.contiguous(),
        context_size=context_size,
        prepend_bos=prepend_bos,
        bos_token_id=bos,
        separator_token_id=sep,
        corpus_name=corpus.name,
        corpus_hash=corpus.hash,
        tokenizer_hash=tokenizer_hash(tokenizer),
        n_documents=n_docs,
    )


def _token_stream(
    docs: Iterable[str], tokenizer: Any, sep: int | None, need: int | None, chunk: int
) -> tuple[Tensor, int]:
    """Documents' ids concatenated with `sep` between them, until `need` tokens."""
    docs = list(docs)
    out: list[int] = []
    n_docs = 0
    for start in range(0, len(docs), chunk):
        batch = docs[start : start + chunk]
        encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            if out and sep is not None:
                out.append(int(sep))
            out.extend(ids)
            n_docs += 1
            if need is not None and len(out) >= need:
                return torch.tensor(out, dtype=torch.int64), n_docs
    return torch.tensor(out, dtype=torch.int64), n_docs
