"""The rooms' layering (shared/DESIGN.md): each room imported alone in a fresh interpreter
pulls in only the rooms it may depend on, and no module imports another room's private
names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import husai

SRC = Path(husai.__file__).parent
ROOMS = {
    "toy",
    "sae",
    "metrics",
    "experiments",
    "report",
    "activations",
    "synthetic",
    "config",
    "cli",
    "results",
    "lm",
    "store",
    "gates",
}
# room → rooms it must never import (directly or through another module)
FORBIDDEN = {
    "report": {"metrics", "sae", "experiments", "toy", "lm", "gates"},
    "metrics": {"sae", "toy", "experiments", "report", "lm"},
    "results": {"metrics", "sae", "toy", "experiments", "report", "config", "lm"},
    "sae": {"experiments", "report", "toy", "lm"},
    "toy": {"experiments", "report", "lm"},
    "lm": {"experiments", "report", "sae", "metrics", "toy", "cli"},
    "store": {"lm", "experiments", "report", "sae", "metrics", "toy", "cli", "config"},
    "gates": {"experiments", "report", "toy", "lm", "cli"},
}


def _loaded_rooms(module: str) -> set[str]:
    """Rooms (husai.<room>) in sys.modules after importing `module` alone."""
    code = (
        f"import sys, json; import {module}; "
        "print(json.dumps(sorted({m.split('.')[1] for m in sys.modules "
        "if m.startswith('husai.') and m.count('.') >= 1})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imported_alone_pulls_in_no_forbidden_room(room: str) -> None:
    loaded = _loaded_rooms(f"husai.{room}")
    assert room in loaded
    assert not (loaded & FORBIDDEN[room]), f"husai.{room} imports {loaded & FORBIDDEN[room]}"


def test_husai_sae_imports_first() -> None:
    """`import husai.sae` in a fresh interpreter, before anything else, and builds an SAE."""
    code = (
        "import husai.sae as s; from husai.config import SAEConfig; "
        "m = s.build_sae(SAEConfig(), 8, [1, 2]); print(tuple(m.W_dec.shape))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 1024, 8)"


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "husai" or len(parts) < 2:
        return None
    return parts[1]


def _private_imports(rel: str, source: str) -> list[str]:
    """In module `rel` (e.g. husai.report.format): `from husai.<other room>... import _name`,
    or an import of a private module of another room."""
    own = _room(rel)
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods, names = [node.module], [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            mods, names = [a.name for a in node.names], []
        else:
            continue
        for mod in mods:
            room = _room(mod)
            if room is None or room == own or room not in ROOMS:
                continue
            if any(p.startswith("_") for p in mod.split(".")[2:]):
                bad.append(f"{rel}: imports private module {mod}")
            bad += [f"{rel}: imports {mod}.{n}" for n in names if n.startswith("_")]
    return bad


def test_no_room_imports_another_rooms_private_names() -> None:
    bad = []
    for p in sorted(SRC.rglob("*.py")):
        rel = ".".join(p.relative_to(SRC.parent).with_suffix("").parts)
        bad += _private_imports(rel, p.read_text())
    assert not bad, "\n".join(bad)


def test_private_import_check_can_fail() -> None:
    """The AST check above sees both kinds of private import, and allows a room's own."""
    src = (
        "from husai.metrics._probe import check_threshold\n"
        "from husai.config import _probe\n"
        "import husai.sae._x\n"
        "from husai.report.figures import _save\n"
    )
    assert len(_private_imports("husai.report.markdown", src)) == 3
    assert _private_imports("husai.metrics.stats", src.splitlines()[0]) == []
