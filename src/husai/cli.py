"""The `husai` command line: thin commands over the library."""

from __future__ import annotations

import copy
import functools
import inspect
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from husai.errors import HusaiError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Do sparse autoencoders learn the same features under another seed?",
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(f: F) -> F:
    """Print a HusaiError as one line and exit with status 2."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except HusaiError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


# -- options generated from the config models ---------------------------------------------
NULL = "null"


def _cli_type(ann: Any) -> tuple[Any, Callable[[str], Any], str | None]:
    """(the type typer parses, the conversion of a given value for pydantic, a metavar) of a
    field: plain int / float / str / bool / Literal as they are; optional and tuple fields
    as text (`null` = None; a tuple comma-separated), which pydantic validates."""
    args = get_args(ann)
    if get_origin(ann) in (Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        conv = _cli_type(inner)[1]
        name = getattr(inner, "__name__", "value")
        return str, lambda v: None if v.lower() in (NULL, "none") else conv(v), f"<{name}|{NULL}>"
    if get_origin(ann) is tuple:
        name = getattr(args[0], "__name__", "value") if args else "value"
        return str, lambda v: [x.strip() for x in v.split(",")], f"<{name},...>"
    if ann in (int, float, str, bool) or get_origin(ann) is Literal:
        return ann, lambda v: v, None
    return str, lambda v: v, None


def _cli_default(value: Any) -> Any:
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
            cli, _, metavar = _cli_type(ann)
            opt = typer.Option(
                f"--{name.replace('_', '-')}", help=field.description, metavar=metavar
            )
            default = _cli_default(field.get_default(call_default_factory=True))
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
            out[name] = _cli_type(fields[name].annotation)[1](value)
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


def _progress() -> tuple[Progress, Callable[[str, int, int], None]]:
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(label: str, i: int, n: int) -> None:
        if label not in tasks:
            what = "SAE jobs done" if label == "jobs" else f"train SAE {label}"
            tasks[label] = bar.add_task(what, total=n)
        bar.update(tasks[label], completed=i)

    return bar, update


def _stdout() -> Console:
    """Standard output; wide enough for the tables when it is not a terminal."""
    c = Console()
    return c if c.is_terminal else Console(width=160)


def _rich_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title)
    for col in header:
        t.add_column(col)
    for r in rows:
        t.add_row(*r)
    return t


def _summary_table(metrics: dict[str, Any]) -> Table:
    """The run's results, one row per data set / SAE (columns from husai.report.tables)."""
    from husai.report.tables import COLUMNS, columns, known_extras, rows

    header: list[str] = []
    body: list[list[str]] = []
    for name, ds in metrics["datasets"].items():
        first = next(iter(ds["architectures"].values()))
        extra = known_extras(first)[:1]  # downstream accuracy or recovery MCC
        cols = [
            ("data / SAE", lambda label, _, name=name: f"{name}/{label}"),
            *columns("pwmcc", "pwmcc_random", "delta", "hungarian", "ev", "l0", "dead"),
            ("acc (spliced) / recovery", COLUMNS[extra[0]][1] if extra else lambda *_: "—"),
        ]
        header, part = rows(ds["architectures"], cols)
        body += part
    return _rich_table(
        "husai: cross-seed consistency (decoder rows; higher = more consistent)", header, body
    )


EXECUTOR_HELP = "where the SAE jobs run: inline (this process) | process (local pool) | ray"


def _run_pipeline(
    config: Path | None,
    out: Path | None,
    cache_dir: Path | None,
    quiet: bool,
    executor: str,
    workers: int | None,
    address: str | None,
    sweep: bool = False,
) -> None:
    """`husai run` / `husai sweep`: run the pipeline, print the summary table and timings."""
    from husai.config import load_run_config
    from husai.experiments.run import run as run_all
    from husai.experiments.run import sweep as run_sweep

    cfg = load_run_config(config)
    run_pipeline = run_sweep if sweep else run_all
    out = out or Path("runs") / (config.stem if config else "default")
    t0 = time.perf_counter()
    engine = {"executor": executor, "workers": workers, "address": address}
    if quiet:
        metrics = run_pipeline(cfg, out, cache_dir=cache_dir, **engine)
    else:
        bar, update = _progress()
        with bar:
            metrics = run_pipeline(
                cfg, out, cache_dir=cache_dir, progress=update, toy_progress=True, **engine
            )
    from husai.io import read_json

    manifest = read_json(out / "manifest.json")
    out_console = _stdout()
    from husai.report import in_config_order

    out_console.print(_summary_table(in_config_order(metrics)))
    jobs = manifest["jobs"]
    out_console.print(
        f"jobs: {len(jobs['ran'])} ran ({jobs['executor']}, {jobs['workers']} worker(s)), "
        f"{len(jobs['skipped'])} already done"
    )
    out_console.print(
        "stage wall times (s): "
        + ", ".join(f"{t['stage']} {t['seconds']:.1f}" for t in manifest["timings_seconds"])
        + f"; total {time.perf_counter() - t0:.1f}"
    )
    out_console.print(f"report: {out / 'report.md'}")


ConfigArg = Annotated[Path | None, typer.Argument(help="YAML/TOML config (default: built-in)")]
OutOpt = Annotated[Path | None, typer.Option(help="run directory (default: runs/<config name>)")]
CacheOpt = Annotated[Path | None, typer.Option(help="toy-model cache (default: ~/.cache/husai)")]
QuietOpt = Annotated[bool, typer.Option(help="no progress bars")]
ExecutorOpt = Annotated[str, typer.Option(help=EXECUTOR_HELP)]
WorkersOpt = Annotated[
    int | None, typer.Option(help="parallel jobs for process / local ray (default: CPU cores)")
]
AddressOpt = Annotated[
    str | None,
    typer.Option(help="existing Ray cluster (run directory on a shared file system)"),
]


@app.command(
    help="Run the main job: grok the toy model (or reuse it), extract activations, train SAEs "
    "over seeds, measure consistency vs random baselines, write metrics, figures and report.\n\n"
    "CONFIG is an optional YAML or TOML file overriding any default below (nested keys, "
    "e.g. `toy: {model: {p: 59}}`, `saes: [{architecture: topk, k: 16}]`).\n\n"
    "Config fields (name = default: meaning):\n\n" + config_reference(),
)
@user_errors
def run(
    config: ConfigArg = None,
    out: OutOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    executor: ExecutorOpt = "inline",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
) -> None:
    _run_pipeline(config, out, cache_dir, quiet, executor, workers, address)


@app.command(
    help="Run a sweep: `husai run` on a config with a `sweep` block ({base: {SAE fields}, "
    "grid: {field: list of values, ...}}), whose cartesian product gives the SAE configurations "
    "(labels like topk_k8_d512). The report adds PWMCC and explained variance against each "
    "swept field, with the data set's effective rank marked on the d_sae axis. Jobs already "
    "done in the run directory are skipped; see configs/sweep_k.yaml, configs/sweep_dsae.yaml."
)
@user_errors
def sweep(
    config: Annotated[Path, typer.Argument(help="YAML/TOML config with a `sweep` block")],
    out: OutOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    executor: ExecutorOpt = "inline",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
) -> None:
    _run_pipeline(config, out, cache_dir, quiet, executor, workers, address, sweep=True)


@app.command(
    help="Adaptive L0 calibration: train a TopK-family SAE at every candidate k, select the "
    "k with the highest lower CI bound of trained − random PWMCC subject to an EV floor, then "
    "retrain it and a control k with more seeds and report the improvement with a CI. CONFIG "
    "fields: toy, activations, data (one set), sae, candidates, search_seeds, ev_floor, "
    "control_k, confirm_seeds, confirm_epochs, metrics (see configs/calibrate.yaml)."
)
@user_errors
def calibrate(
    config: ConfigArg = None,
    out: OutOpt = None,
    cache_dir: CacheOpt = None,
    executor: ExecutorOpt = "inline",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
) -> None:
    from husai.config import parse_config, read_config_file
    from husai.experiments.calibrate import CalibrateConfig
    from husai.experiments.calibrate import calibrate as run_calibration

    data = read_config_file(config) if config else {}
    cfg = parse_config(data, CalibrateConfig)
    out = out or Path("runs") / (config.stem if config else "calibrate")
    t0 = time.perf_counter()
    result = run_calibration(
        cfg, out, cache_dir=cache_dir, executor=executor, workers=workers, address=address
    )
    imp = result["improvement_selected_minus_control"]
    _stdout().print(
        f"selected k = {result['selected_k']}; PWMCC improvement over k = "
        f"{result['control_k']}: {imp['mean']:+.3f} [{imp['ci_low']:+.3f}, {imp['ci_high']:+.3f}]"
        f"; total {time.perf_counter() - t0:.1f} s; report: {out / 'report.md'}"
    )


@app.command("train-model")
@user_errors
def train_model(
    out: Annotated[Path, typer.Option(help="checkpoint directory")],
    config: Annotated[
        Path | None, typer.Argument(help="run config (its `toy` section is used)")
    ] = None,
) -> None:
    """Train the modular-arithmetic toy model and write a checkpoint."""
    from husai.config import load_run_config
    from husai.toy import train_checkpoint

    summary = train_checkpoint(load_run_config(config).toy, out, progress=True)
    f = summary["fourier"]
    typer.echo(
        f"{out}: test acc {summary['test_acc']:.4f}, key frequencies {f['key_frequencies']}, "
        f"logit R² {f['logit_r2']:.3f}, Fourier check {'passed' if f['passed'] else 'FAILED'}"
    )


@app.command()
@user_errors
def extract(
    model_dir: Annotated[Path, typer.Argument(help="toy-model checkpoint directory")],
    out: Annotated[Path, typer.Option(help="activation file (.safetensors)")],
    hook: Annotated[str, typer.Option(help="hook point")] = "blocks.0.resid_post",
    position: Annotated[str, typer.Option(help="answer | all")] = "answer",
    split: Annotated[str, typer.Option(help="all | train | test")] = "all",
) -> None:
    """Extract a hook's activations from a toy-model checkpoint into a safetensors file."""
    from husai.activations import extract_to_file

    acts = extract_to_file(model_dir, out, hook, position, split)
    typer.echo(f"{out}: {tuple(acts.shape)} activations of {hook} ({position}, {split})")


def _sae_fields() -> dict[str, FieldInfo]:
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


def _architectures() -> tuple[str, ...]:
    from husai.sae.registry import REGISTRY

    return tuple(sorted(REGISTRY))


SAE_FIELDS = _sae_fields()


@app.command("train-sae")
@user_errors
@config_options(SAE_FIELDS, choices={"architecture": _architectures()})
def train_sae_cmd(
    ctx: typer.Context,
    activations: Annotated[Path, typer.Argument(help="activation file (.safetensors)")],
    out: Annotated[Path, typer.Option(help="directory; one seed_<n>/ per seed")],
    seeds: Annotated[str, typer.Option(help="comma-separated")] = "42,123,456,789,1011",
    **fields: Any,
) -> None:
    """Train one SAE configuration over several seeds (together) on an activation file.
    Options not given take the config's defaults (`husai run --help`, saes[])."""
    from pydantic import ValidationError

    from husai.activations import load_activations
    from husai.config import SAEConfig, format_error
    from husai.sae import save_seeds, train_sae

    try:
        cfg = SAEConfig.model_validate(given(ctx, SAE_FIELDS, fields))
        seed_list = [int(s) for s in seeds.split(",")]
    except ValidationError as e:
        raise HusaiError(format_error(e)) from None
    except ValueError:
        raise HusaiError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    x, _ = load_activations(activations)
    sae, info = train_sae(cfg, x, seed_list)
    save_seeds(sae, out, info)
    typer.echo(f"{out}: {len(seed_list)} {cfg.architecture} SAEs ({x.shape[1]}→{sae.d_sae})")


def _compare_table(res: dict[str, Any], n: int) -> Table:
    rows = res["rows_compared"]
    t = Table(
        title=f"{n} SAEs, d_in {res['d_in']}: {rows}-row consistency "
        "(every score: higher = more consistent)"
    )
    for col in ("metric", "trained mean [95% CI]", "random", "Δ [95% CI]", "variant"):
        t.add_column(col)
    for key, v in res.items():
        if isinstance(v, dict) and "trained" in v:
            tr, d = v["trained"], v["trained_minus_random"]
            t.add_row(
                key,
                f"{tr['mean']:.3f} [{tr['ci_low']:.3f}, {tr['ci_high']:.3f}]",
                f"{v['random']['mean']:.3f}",
                f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]",
                v["variant"],
            )
    return t


def _matrix_table(res: dict[str, Any], key: str, labels: list[str]) -> Table:
    t = Table(title=f"{key} per pair (trained; random mean {res[key]['random']['mean']:.3f})")
    t.add_column("")
    for lab in labels:
        t.add_column(lab)
    for lab, row in zip(labels, res[key]["matrix"], strict=True):
        t.add_row(lab, *(f"{v:.3f}" for v in row))
    return t


@app.command()
@user_errors
def compare(
    sae_dirs: Annotated[list[Path], typer.Argument(help="SAE directories (SAELens layout)")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the result as JSON")
    ] = None,
    figures: Annotated[
        Path | None,
        typer.Option(help="directory for the heatmap/histogram PNGs (default: next to --json)"),
    ] = None,
    encoder: Annotated[
        bool, typer.Option("--encoder", help="compare encoder rows instead of decoder rows")
    ] = False,
    activations: Annotated[
        Path | None,
        typer.Option(help="husai activation file: firing frequencies and activation MCC"),
    ] = None,
    exclude_dead: Annotated[
        bool,
        typer.Option("--exclude-dead", help="drop latents that never fire (needs --activations)"),
    ] = False,
    latents_csv: Annotated[
        Path | None,
        typer.Option("--latents-csv", help="per-latent table: best-match |cos| per other SAE"),
    ] = None,
    shared_threshold: Annotated[
        float, typer.Option(help="|cos| threshold of the shared-latent rate")
    ] = 0.7,
    subspace_rank: Annotated[
        int | None, typer.Option(help="principal directions compared (default min(d,n)//2)")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="husai | saelens | sparsify | dictionary_learning (default: detect)"
        ),
    ] = None,
) -> None:
    """Consistency of any set of saved SAEs (same d_in), with matched random baselines."""
    from husai.experiments.compare import compare as compare_saes
    from husai.experiments.compare import write_comparison

    cmp = compare_saes(
        sae_dirs,
        encoder=encoder,
        activations=activations,
        exclude_dead=exclude_dead,
        shared_threshold=shared_threshold,
        subspace_rank=subspace_rank,
        fmt=fmt,
    )
    res, labels = cmp.summary, cmp.labels
    out = _stdout()
    out.print(_compare_table(res, len(sae_dirs)))
    for key in ("pwmcc", "hungarian_mcc", "shared_latent_rate"):
        out.print(_matrix_table(res, key, labels))
    dead = res["dead_latents"]
    if dead["excluded"]:
        out.print(
            "dead latents excluded before matching: "
            + ", ".join(
                f"{lab} {k}" for lab, k in zip(labels, dead["dropped_per_sae"], strict=True)
            )
        )
    if "firing" in res:
        out.print(
            f"firing on {res['firing']['n_tokens']} tokens: "
            + ", ".join(
                f"{lab} mean freq {f['mean_firing_frequency']:.4f}, {f['n_dead']} dead"
                for lab, f in zip(labels, res["firing"]["per_sae"], strict=True)
            )
        )
    for path in write_comparison(cmp, json_out=json_out, latents_csv=latents_csv, figures=figures):
        typer.echo(f"wrote {path}")


def _synthetic_fields() -> dict[str, FieldInfo]:
    from husai.synthetic import SyntheticConfig

    return dict(SyntheticConfig.model_fields)


SYNTHETIC_FIELDS = _synthetic_fields()


@app.command()
@user_errors
@config_options(SYNTHETIC_FIELDS)
def synthetic(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="activation file to write (.safetensors)")],
    **fields: Any,
) -> None:
    """Write synthetic activations with known ground-truth features (tensor `features`)."""
    from pydantic import ValidationError

    from husai.config import format_error
    from husai.synthetic import SyntheticConfig, load_ground_truth, max_coherence, write_synthetic

    try:
        cfg = SyntheticConfig.model_validate(given(ctx, SYNTHETIC_FIELDS, fields))
    except ValidationError as e:
        raise HusaiError(format_error(e, "synthetic")) from None
    write_synthetic(cfg, out)
    truth = load_ground_truth(out)
    typer.echo(
        f"{out}: {cfg.n_samples} × {cfg.d} activations ({cfg.regime}), {cfg.n_features} true "
        f"features (max |cos| {max_coherence(truth):.3f})"
    )


@app.command()
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="a `husai run` directory")]) -> None:
    """Re-render a run directory's figures and report.md from its metrics.json."""
    from husai.report import render

    typer.echo(f"wrote {render(run_dir)}")


def main() -> None:  # pragma: no cover - console-script entry
    sys.exit(app())
