"""`husai` options generated from the config models, so their defaults and choices are the
models' own; and the config reference printed by `husai run --help`."""

from __future__ import annotations

import copy
import inspect
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

F = TypeVar("F", bound=Callable[..., Any])
NULL = "null"


def cli_type(ann: Any) -> tuple[Any, Callable[[str], Any], str | None]:
    """(the type typer parses, the conversion of a given value for pydantic, a metavar) of a
    field: plain int / float / str / bool / Literal as they are; optional and tuple fields
    as text (`null` = None; a tuple comma-separated), which pydantic validates."""
    args = get_args(ann)
    if get_origin(ann) in (Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        conv = cli_type(inner)[1]
        name = getattr(inner, "__name__", "value")
        return str, lambda v: None if v.lower() in (NULL, "none") else conv(v), f"<{name}|{NULL}>"
    if get_origin(ann) is tuple:
        name = getattr(args[0], "__name__", "value") if args else "value"
        return str, lambda v: [x.strip() for x in v.split(",")], f"<{name},...>"
    if ann in (int, float, str, bool) or get_origin(ann) is Literal:
        return ann, lambda v: v, None
    return str, lambda v: v, None


def cli_default(value: Any) -> Any:
    """A default as the command line would give it (shown by --help, never passed on)."""
    if value is None:
        return NULL
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return value


def config_options(
    fields: dict[str, FieldInfo], choices: dict[str, tuple[str, ...]] | None = None
) -> Callable[[F], F]:
    """Add one option per config field to a command `f(ctx, ..., **fields)`: the field's
    description as help, its pydantic default as the shown default (`choices`: a str field's
    allowed values). `given(ctx, fields)` then returns only the options given on the command
    line, so a field's default is always the config model's own."""

    def wrap(f: F) -> F:
        sig = inspect.signature(f, eval_str=True)
        fixed = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        extra = []
        for name, field in fields.items():
            ann = field.annotation
            if choices and name in choices:
                ann = Literal[choices[name]]  # type: ignore[valid-type]
            cli, _, metavar = cli_type(ann)
            opt = typer.Option(
                f"--{name.replace('_', '-')}", help=field.description, metavar=metavar
            )
            default = cli_default(field.get_default(call_default_factory=True))
            kind = inspect.Parameter.KEYWORD_ONLY
            extra.append(
                inspect.Parameter(name, kind, default=default, annotation=Annotated[cli, opt])
            )
        f.__signature__ = sig.replace(parameters=[*fixed, *extra])  # type: ignore[attr-defined]
        return f

    return wrap


def given(
    ctx: typer.Context, fields: dict[str, FieldInfo], values: dict[str, Any]
) -> dict[str, Any]:
    """The config-field options that were given on the command line, converted for pydantic."""
    out = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)  # typer's vendored click: compare by name
        if name in fields and source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            out[name] = cli_type(fields[name].annotation)[1](value)
    return out


def config_reference() -> str:
    """Every RunConfig field with its default and description (for `husai run --help`);
    an architecture's own SAE fields name the architectures that have them."""
    from husai.config import DataConfig, RunConfig, SAEConfig, SweepConfig
    from husai.sae.registry import REGISTRY, field_owners

    lines: list[str] = []

    def short(item: BaseModel) -> dict[str, Any]:
        keys = ("name", "architecture", "source")
        return {k: getattr(item, k) for k in keys if getattr(item, k, None) is not None}

    def line(name: str, field: FieldInfo) -> str:
        if field.is_required():
            return f"{name} (required): {field.description or ''}"
        default = field.get_default(call_default_factory=True)
        if isinstance(default, tuple) and default and isinstance(default[0], BaseModel):
            default = [short(d) for d in default]
        return f"{name} = {default!r}: {field.description or ''}"

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if model is SAEConfig and name == "params":
                for own, archs in field_owners().items():
                    f = REGISTRY[archs[0]].Params.model_fields[own]
                    lines.append(line(f"{prefix}{own} ({', '.join(archs)})", f))
            elif isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
            else:
                lines.append(line(prefix + name, field))

    walk(RunConfig, "")
    walk(DataConfig, "data[].")
    walk(SAEConfig, "saes[].")
    walk(SweepConfig, "sweep.")
    return "\n\n".join(lines)


def sae_fields() -> dict[str, FieldInfo]:
    """train-sae's options: SAEConfig's shared fields (but the trajectory, which `husai run`
    records), then every architecture's own fields (one definition per name, tested)."""
    from husai.config import SAEConfig
    from husai.sae.registry import REGISTRY, field_owners

    shared = SAEConfig.model_fields.items()
    out = {n: f for n, f in shared if n not in ("params", "trajectory_every_epochs")}
    for name, archs in field_owners().items():
        out[name] = f = copy.copy(REGISTRY[archs[0]].Params.model_fields[name])
        f.description = f"({', '.join(archs)}) {f.description}"
    return out


def architectures() -> tuple[str, ...]:
    from husai.sae.registry import REGISTRY

    return tuple(sorted(REGISTRY))


SAE_FIELDS = sae_fields()


def synthetic_fields() -> dict[str, FieldInfo]:
    from husai.synthetic import SyntheticConfig

    return dict(SyntheticConfig.model_fields)


SYNTHETIC_FIELDS = synthetic_fields()
