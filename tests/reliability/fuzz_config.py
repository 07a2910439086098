"""Generated configs for `husai run|sweep|calibrate --dry-run`: mutated real configs (wrong
types, out-of-range numbers, NaN/inf, huge ints, unknown keys at every level, wrong nesting,
empty lists, duplicate names, unicode) and broken YAML/TOML text (random bytes, truncations,
tabs, anchors/aliases, billion laughs, deep nesting). Shared by tests/reliability and
benchmarks/fuzz_long.py."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from hypothesis import strategies as st
from typer.testing import CliRunner

from husai.cli import app

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from _tiny import TINY  # noqa: E402

SYNTHETIC = {
    "data": [
        {"name": "syn", "source": "synthetic", "synthetic": {"n_samples": 64, "d": 8}},
        {"name": "toy"},
    ],
    "saes": [{"architecture": "topk", "d_sae": 16, "k": 2, "name": "a"}],
    "seeds": [1, 2],
}


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "configs" / name).read_text())


RUN_BASES = [TINY, SYNTHETIC, {}, _load("frontier.yaml"), _load("transcoder.yaml")]
SWEEP_BASES = [_load("sweep_k.yaml"), _load("sweep_init.yaml")]
CALIBRATE_BASES = [_load("calibrate.yaml"), {}]
COMMANDS = {"run": RUN_BASES, "sweep": SWEEP_BASES, "calibrate": CALIBRATE_BASES}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2, 3, 10**30, -(10**30), 2**63, 2**64 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 0.5, 1.5]),
    st.text(max_size=12),
    st.sampled_from(["", ".", "..", "a/b", "a\\b", "nul\0", "ünïcødé ☃", "topk", "toy", "null"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
unknown_keys = st.one_of(st.sampled_from(["bogus", "K", "params", "sae", "", "☃"]), st.text())


def _paths(x: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a nested config (dict keys, list indices), the root included."""
    out = [prefix]
    if isinstance(x, dict):
        for k, v in x.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out += _paths(v, (*prefix, i))
    return out


def _get(x: Any, path: tuple) -> Any:
    for p in path:
        x = x[p]
    return x


@st.composite
def mutated(draw: st.DrawFn, bases: list[dict[str, Any]]) -> dict[str, Any]:
    """A real config with 1–3 mutations at random places."""
    cfg = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(cfg)
        path = draw(st.sampled_from(paths))
        node = _get(cfg, path)
        kind = draw(
            st.sampled_from(
                ["replace", "unknown_key", "delete", "wrap", "empty", "duplicate", "nest"]
            )
        )
        parent = _get(cfg, path[:-1]) if path else None
        if kind == "replace" and path:
            parent[path[-1]] = draw(values)
        elif kind == "unknown_key" and isinstance(node, dict):
            node[draw(unknown_keys)] = draw(values)
        elif kind == "delete" and path and isinstance(parent, (dict, list)):
            del parent[path[-1]]
        elif kind == "wrap" and path:
            parent[path[-1]] = [node]
        elif kind == "empty" and path:
            parent[path[-1]] = type(node)() if isinstance(node, (list, dict, str)) else []
        elif kind == "duplicate" and isinstance(node, list) and node:
            node.append(copy.deepcopy(node[0]))
        elif kind == "nest" and path:
            parent[path[-1]] = {draw(unknown_keys): node}
        elif isinstance(cfg, dict):
            cfg[draw(unknown_keys)] = draw(values)
    return cfg


def toml_text(data: Any) -> str:
    """A minimal TOML writer: every top-level key as one inline value (None is dropped)."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return (
                "nan"
                if math.isnan(v)
                else ("inf" if v > 0 else "-inf")
                if math.isinf(v)
                else repr(v)
            )
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v if x is not None) + "]"
        if isinstance(v, dict):
            items = [f"{json.dumps(str(k))} = {val(x)}" for k, x in v.items() if x is not None]
            return "{" + ", ".join(items) + "}"
        return json.dumps(str(v))

    if not isinstance(data, dict):
        return f"x = {val(data)}\n"
    return "".join(f"{json.dumps(str(k))} = {val(v)}\n" for k, v in data.items() if v is not None)


BILLION_LAUGHS = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "toy: {model: {p: *i}}\nsaes: *i\n"
)
SPECIAL_TEXTS = [
    BILLION_LAUGHS,
    "[" * 3000,
    "a:\n" + "".join(" " * i + "- \n" for i in range(2000)),
    "{" * 3000 + "}" * 3000,
    "toy:\n\tmodel: {p: 23}\n",
    "x = [" * 2000,
    "a = 1\na = 2\n",
    "&a [*a]",
    "!!python/object/apply:os.system ['touch /tmp/husai_pwned']\n",
    "saes: !!python/name:os.system\n",
    "\ufeffseeds: [1, 2]\n",
    "\0\0\0",
    "--- 1\n--- 2\n",
    "",
    "~",
    "- 1\n- 2\n",
]


@st.composite
def broken_text(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, file bytes) of broken YAML/TOML."""
    kind = draw(st.sampled_from(["bytes", "truncate", "tabs", "special", "anchors"]))
    suffix = draw(st.sampled_from([".yaml", ".toml", ".yml"]))
    if kind == "bytes":
        return suffix, draw(st.binary(max_size=200))
    if kind == "special":
        text = draw(st.sampled_from(SPECIAL_TEXTS))
        return suffix, text.encode()
    base = draw(st.sampled_from(RUN_BASES))
    text = toml_text(base) if suffix == ".toml" else yaml.safe_dump(base, allow_unicode=True)
    if kind == "truncate":
        return suffix, text.encode()[: draw(st.integers(0, len(text.encode())))]
    if kind == "tabs":
        return suffix, text.replace("  ", "\t", draw(st.integers(1, 5))).encode()
    anchor = draw(st.sampled_from(["&x", "*x", "*y", "&x {}", "<<: *x", "!!binary", "!!set"]))
    lines = text.splitlines()
    i = draw(st.integers(0, max(0, len(lines) - 1)))
    lines.insert(i, draw(st.sampled_from(["", "  "])) + anchor)
    return suffix, "\n".join(lines).encode()


def write_config(path: Path, data: dict[str, Any], fmt: str) -> Path:
    if fmt == "toml":
        path = path.with_suffix(".toml")
        path.write_text(toml_text(data))
    else:
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


class FastRunner(CliRunner):
    """CliRunner over the click command built once (typer rebuilds it per invoke, ~70 % of
    a dry run's time); the command is the same object `husai` runs."""

    command = None

    def invoke(self, app_: Any, *args: Any, **kwargs: Any) -> Any:
        import typer.main
        import typer.testing

        if FastRunner.command is None:
            FastRunner.command = typer.main.get_command(app_)
        with mock.patch.object(typer.testing, "_get_command", lambda _: FastRunner.command):
            return super().invoke(app_, *args, **kwargs)


runner = FastRunner()


def _listing(out: Path) -> list[Path] | None:
    return sorted(out.rglob("*")) if out.exists() else None


def invoke(command: str, config: Path, out: Path, *extra: str) -> int:
    """`husai COMMAND CONFIG --out OUT --dry-run EXTRA…`'s exit code. AssertionError unless
    it is 0, or 2 with one `error:` line, without an uncaught exception, and --out is
    untouched."""
    before = _listing(out)
    res = runner.invoke(app, [command, str(config), "--out", str(out), "--dry-run", *extra])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"uncaught {type(res.exception).__name__}: {res.exception}")
    assert res.exit_code in (0, 2), (res.exit_code, res.output)
    if res.exit_code == 2:
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert _listing(out) == before, "a dry run wrote into --out"
    return res.exit_code
