"""The `husai` command line: thin commands over the library."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from husai.cli.options import (
    architectures,
    config_options,
    config_reference,
    given,
    sae_fields,
    synthetic_fields,
)
from husai.cli.output import compare_table, matrix_table, progress, stdout, summary_table
from husai.errors import HusaiError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Do sparse autoencoders learn the same features under another seed?",
)
F = TypeVar("F", bound=Callable[..., Any])


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def user_errors(f: F) -> F:
    """Print a HusaiError or an OS fault (disk full, read-only) as one line and exit with
    status 2; Ctrl-C or SIGTERM: one line, exit status 130."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)  # a clean stop, as Ctrl-C gives
        try:
            return f(*args, **kwargs)
        except HusaiError as e:
            typer.echo(f"error: {one_line(str(e))}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo(INTERRUPTED, err=True)
            raise typer.Exit(130) from None
        except OSError as e:  # disk full, read-only or unwritable directory, I/O error
            if os.environ.get("HUSAI_TRACEBACK"):
                raise
            typer.echo(f"error: {one_line(os_error_line(e))}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


INTERRUPTED = (
    "interrupted: finished jobs and files are kept, nothing half-written is reused; "
    "rerun the same command to resume"
)


def one_line(msg: str) -> str:
    """`msg` with unprintable characters escaped (a key like '\\r' in a config cannot break
    the line)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in msg)


def os_error_line(e: OSError) -> str:
    """One line for an operating-system fault: what failed, on which file."""
    where = f"{e.filename}: " if e.filename else ""
    what = e.strerror or str(e) or type(e).__name__
    hint = {28: " (free some space, then rerun to resume)", 30: " (choose a writable --out)"}
    return f"{where}{what}{hint.get(e.errno or 0, '')}"


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
    dry_run: bool = False,
) -> None:
    """`husai run` / `husai sweep`: run the pipeline, print the summary table and timings
    (`dry_run`: the config and the pre-flight checks only, then the plan)."""
    from husai.config import load_run_config
    from husai.experiments.run import run as run_all
    from husai.experiments.run import sweep as run_sweep

    cfg = load_run_config(config)
    run_pipeline = run_sweep if sweep else run_all
    out = out or Path("runs") / (config.stem if config else "default")
    if dry_run:
        from husai.experiments.plan import plan_lines, preflight, require_sweep

        if sweep:
            require_sweep(cfg)
        preflight(cfg, out, executor, workers, address)
        for line in plan_lines(cfg, out, executor):
            typer.echo(line)
        return
    t0 = time.perf_counter()
    engine = {"executor": executor, "workers": workers, "address": address}
    if quiet:
        metrics = run_pipeline(cfg, out, cache_dir=cache_dir, **engine)
    else:
        bar, update = progress()
        with bar:
            metrics = run_pipeline(
                cfg, out, cache_dir=cache_dir, progress=update, toy_progress=True, **engine
            )
    from husai.io import read_json

    manifest = read_json(out / "manifest.json")
    out_console = stdout()
    from husai.report import in_config_order

    out_console.print(summary_table(in_config_order(metrics)))
    for name, e in manifest.get("lm_extraction", {}).items():
        out_console.print(
            f"lm data {name}: {e['tokens_forward']} tokens through the model "
            f"({e['tokens_per_s']:.0f} tokens/s, {e['seconds']:.1f} s; "
            f"{e['shards_written']} shards written, {e['shards_kept']} reused), "
            f"{sum(e['tokens_stored'].values())} stored"
        )
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
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="validate the config and the pre-flight checks (executor options, --out), print "
        "the plan (data sets × SAE configs × seeds, jobs already done in --out), run nothing; "
        "exit 0 = ready, 2 = one-line error",
    ),
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
    dry_run: DryRunOpt = False,
) -> None:
    _run_pipeline(config, out, cache_dir, quiet, executor, workers, address, dry_run=dry_run)


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
    dry_run: DryRunOpt = False,
) -> None:
    _run_pipeline(config, out, cache_dir, quiet, executor, workers, address, True, dry_run)


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
    dry_run: DryRunOpt = False,
) -> None:
    from husai.config import parse_config, read_config_file
    from husai.experiments.calibrate import CalibrateConfig, plan_lines
    from husai.experiments.calibrate import calibrate as run_calibration

    data = read_config_file(config) if config else {}
    cfg = parse_config(data, CalibrateConfig)
    out = out or Path("runs") / (config.stem if config else "calibrate")
    if dry_run:
        for line in plan_lines(cfg, out, executor, workers=workers, address=address):
            typer.echo(line)
        return
    t0 = time.perf_counter()
    result = run_calibration(
        cfg, out, cache_dir=cache_dir, executor=executor, workers=workers, address=address
    )
    imp = result["improvement_selected_minus_control"]
    stdout().print(
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
    out: Annotated[
        Path, typer.Option(help="toy: activation file (.safetensors); --model: store directory")
    ],
    model_dir: Annotated[
        Path | None, typer.Argument(help="toy-model checkpoint directory (without --model)")
    ] = None,
    hook: Annotated[str, typer.Option(help="toy: hook point")] = "blocks.0.resid_post",
    position: Annotated[str, typer.Option(help="toy: answer | all")] = "answer",
    split: Annotated[str, typer.Option(help="toy: all | train | test")] = "all",
    model: Annotated[
        str | None,
        typer.Option(help="language model: `smollm2` (packaged) or a local HF model directory"),
    ] = None,
    layer: Annotated[
        list[int] | None, typer.Option(help="--model: layer (0-based); repeat for several")
    ] = None,
    site: Annotated[
        list[str] | None,
        typer.Option(help="--model: site kind, e.g. resid_post (default), mlp_out; repeatable"),
    ] = None,
    text: Annotated[
        Path | None,
        typer.Option(help="--model: corpus .txt / .jsonl / ids file (default: stdlib docs)"),
    ] = None,
    context_size: Annotated[int, typer.Option(help="--model: tokens per context")] = 128,
    max_tokens: Annotated[int | None, typer.Option(help="--model: token budget")] = None,
    n_contexts: Annotated[int | None, typer.Option(help="--model: context budget")] = None,
    dtype: Annotated[str, typer.Option(help="--model: float32 | bfloat16 | float16")] = "float32",
    batch_size: Annotated[int, typer.Option(help="--model: contexts per forward")] = 8,
    device: Annotated[str, typer.Option(help="--model: cpu | cuda | auto")] = "auto",
    drop_first: Annotated[
        bool, typer.Option("--drop-first/--keep-first", help="--model: drop position 0")
    ] = True,
    drop_bos: Annotated[
        bool, typer.Option("--drop-bos/--keep-bos", help="--model: drop every BOS token")
    ] = True,
    outlier_factor: Annotated[
        float | None, typer.Option(help="--model: outlier = norm > factor × context median")
    ] = None,
    outliers: Annotated[str, typer.Option(help="--model: drop | clip")] = "drop",
    normalize: Annotated[
        str, typer.Option(help="--model: none | expected_average_only_in")
    ] = "none",
) -> None:
    """Extract activations: a toy-model checkpoint's hook into a safetensors file, or
    (--model) a language model's layers × sites into one activation store per hook."""
    if model is None:
        if model_dir is None:
            raise HusaiError("give a toy-model checkpoint directory or --model")
        from husai.activations import extract_to_file

        acts = extract_to_file(model_dir, out, hook, position, split)
        typer.echo(f"{out}: {tuple(acts.shape)} activations of {hook} ({position}, {split})")
        return
    if model_dir is not None:
        raise HusaiError("give a toy-model checkpoint directory or --model, not both")
    from husai.lm.from_names import extract_model, summary_lines
    from husai.store import TokenPolicy

    policy = TokenPolicy(
        drop_first=drop_first,
        drop_bos=drop_bos,
        outlier_factor=outlier_factor,
        outliers=outliers,  # type: ignore[arg-type]
        normalize=normalize,  # type: ignore[arg-type]
    )
    from husai.lock import directory_lock

    with directory_lock(out, "extract"):
        result = extract_model(
            model,
            layer or [],
            site or ["resid_post"],
            out,
            text=text,
            context_size=context_size,
            n_contexts=n_contexts,
            max_tokens=max_tokens,
            dtype=dtype,
            batch_size=batch_size,
            device=device,
            policy=policy,
        )
    for line in summary_lines(result):
        typer.echo(line)


SAE_FIELDS = sae_fields()


@app.command("train-sae")
@user_errors
@config_options(SAE_FIELDS, choices={"architecture": architectures()})
def train_sae_cmd(
    ctx: typer.Context,
    activations: Annotated[
        Path,
        typer.Argument(help="activation file (.safetensors) or activation store (directory)"),
    ],
    out: Annotated[Path, typer.Option(help="directory; one seed_<n>/ per seed")],
    seeds: Annotated[str, typer.Option(help="comma-separated")] = "42,123,456,789,1011",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "cpu",
    **fields: Any,
) -> None:
    """Train one SAE configuration over several seeds (together) on an activation file, or
    streamed from an activation store (`husai extract --model …`; its hook and LM metadata go
    into cfg.json). Options not given take the config's defaults (`husai run --help`,
    saes[])."""
    from pydantic import ValidationError

    from husai.config import SAEConfig, format_error

    try:
        cfg = SAEConfig.model_validate(given(ctx, SAE_FIELDS, fields))
        seed_list = [int(s) for s in seeds.split(",")]
    except ValidationError as e:
        raise HusaiError(format_error(e)) from None
    except ValueError:
        raise HusaiError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    from husai.lock import directory_lock

    with directory_lock(out, "train-sae"):
        _train_and_save(cfg, activations, out, seed_list, device)


def _train_and_save(
    cfg: Any, activations: Path, out: Path, seed_list: list[int], device: str
) -> None:
    from husai.activations import load_activations
    from husai.sae import save_seeds, train_sae
    from husai.sae.io import store_lm_metadata
    from husai.store import ActivationStore

    if activations.is_dir():
        store = ActivationStore(activations)
        meta = store_lm_metadata(store) if "model_name" in store.metadata else None
        sae, info = train_sae(cfg, store, seed_list, device=device)
        sae = sae.cpu()
        sae.hook_name = store.hook_name
        save_seeds(sae, out, info, {"store_content_hash": store.content_hash}, lm_metadata=meta)
        what = f"{store.n_tokens} rows of {store.hook_name}"
    else:
        x, _ = load_activations(activations)
        sae, info = train_sae(cfg, x, seed_list, device=device)
        save_seeds(sae.cpu(), out, info)
        what = f"{len(x)} rows"
    typer.echo(
        f"{out}: {len(seed_list)} {cfg.architecture} SAEs ({sae.d_in}→{sae.d_sae}) on {what}"
    )


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
    out = stdout()
    out.print(compare_table(res, len(sae_dirs)))
    for key in ("pwmcc", "hungarian_mcc", "shared_latent_rate"):
        out.print(matrix_table(res, key, labels))
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


@app.command()
@user_errors
def consensus(
    sae_dirs: Annotated[
        list[Path], typer.Argument(help="SAE directories, or one folder of them (a run's)")
    ],
    out: Annotated[Path, typer.Option(help="directory for the consensus SAE (SAELens layout)")],
    min_seeds: Annotated[
        int | None,
        typer.Option(help="export groups found in at least this many SAEs (max(2, ⌈N/2⌉))"),
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="|cos| a matched pair of decoder rows needs to be grouped")
    ] = 0.7,
    activations: Annotated[
        Path | None,
        typer.Option(help="activation file: refit the encoder, EV/L0/dead (default: the run's)"),
    ] = None,
    refit_epochs: Annotated[
        int, typer.Option(help="epochs of the encoder refit (decoder frozen)")
    ] = 5,
) -> None:
    """Consensus dictionary: latents matched across seeds, exported as one SAE."""
    from husai.cli.consensus import print_consensus
    from husai.experiments.consensus import check_out_dir, write_consensus
    from husai.experiments.consensus import consensus as build

    check_out_dir(out)
    res = build(
        sae_dirs,
        min_seeds,
        threshold=threshold,
        activations=activations,
        refit_epochs=refit_epochs,
    )
    print_consensus(res.summary)
    for path in write_consensus(res, out):
        typer.echo(f"wrote {path}")


SYNTHETIC_FIELDS = synthetic_fields()


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
def gate(
    run_dir: Annotated[Path, typer.Argument(help="a `husai run` directory")],
    policy: Annotated[
        Path | None,
        typer.Option(help="gate policy, YAML/TOML `gates: [...]` (default: HUSAI's gates)"),
    ] = None,
) -> None:
    """Evaluate release gates on a run's metrics.json: per gate pass / fail / missing with
    its evidence path, written to RUN_DIR/gate.json; exit 0 when every required gate
    passes, 1 otherwise (2: a bad policy or run directory)."""
    from husai.cli.gate_table import gate_table
    from husai.gates import GATE_FILE, gate_run, load_policy

    result = gate_run(run_dir, load_policy(policy))
    stdout().print(gate_table(result))
    typer.echo(f"wrote {run_dir / GATE_FILE}")
    if (run_dir / "report.md").is_file():  # its release-gate section shows this policy's
        from husai.report import render

        typer.echo(f"wrote {render(run_dir)}")
    if not result["passed"]:
        raise typer.Exit(1)


@app.command()
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="a `husai run` directory")]) -> None:
    """Re-render a run directory's figures and report.md from its metrics.json."""
    from husai.report import render

    typer.echo(f"wrote {render(run_dir)}")


def main() -> None:  # pragma: no cover - console-script entry
    sys.exit(app())
