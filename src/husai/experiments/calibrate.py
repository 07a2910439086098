"""`husai calibrate`: adaptive L0 calibration of a TopK-family SAE (issue 5).

Search: the SAE (`sae`) is trained at every candidate k with `search_seeds`, all as one
`husai run` in `search/`. Each k gets its trained − random PWMCC (max-|cos|, higher = more
consistent) with a seed-bootstrap BCa CI; its lower bound is the conservative score. The
selected k maximises that lower bound among the ks whose mean explained variance ≥ `ev_floor`.
Confirm: the selected k and `control_k` are retrained with `confirm_seeds` (and
`confirm_epochs`), as a second run in `confirm/`; the improvement is PWMCC(selected) −
PWMCC(control) over the same seed pairs, with a paired seed-bootstrap BCa CI (resample seeds;
both configs share the seeds, and the matched random baseline is the same for both because
d_sae is). Writes calibration.json, figures/ and report.md beside the two run directories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from husai.config import (
    ActivationConfig,
    DataConfig,
    MetricsConfig,
    RunConfig,
    SAEConfig,
    Strict,
    ToyConfig,
    format_error,
)
from husai.errors import HusaiError
from husai.experiments.aggregate import best_lower_bound, paired_gain, verdict
from husai.io import provenance, write_json
from husai.results import matrix, metric, minus, quality, trained


class CalibrateConfig(Strict):
    """`husai calibrate`: choose k by the lower CI bound of trained − random PWMCC."""

    toy: ToyConfig = ToyConfig()
    activations: ActivationConfig = ActivationConfig()
    data: DataConfig = Field(DataConfig(), description="the one activation set calibrated on")
    sae: SAEConfig = Field(SAEConfig(), description="the SAE; k is replaced by each candidate")
    candidates: tuple[int, ...] = Field((8, 16, 32, 64, 128), min_length=2)
    search_seeds: tuple[int, ...] = Field((42, 123, 456, 789, 1011), min_length=3)
    ev_floor: float = Field(0.9, description="minimum mean explained variance of a candidate")
    control_k: int = Field(32, gt=0, description="the k the selected one is compared with")
    confirm_seeds: tuple[int, ...] = Field(
        (42, 123, 456, 789, 1011, 2022, 3033, 4044), min_length=3
    )
    confirm_epochs: int | None = Field(None, gt=0, description="null = the SAE's epochs")
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _check(self) -> CalibrateConfig:
        from husai.sae.registry import REGISTRY

        if not REGISTRY[self.sae.architecture].uses_k:
            raise ValueError(f"calibrate chooses k: {self.sae.architecture} has no k")
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError("candidates must be distinct")
        every = sorted({*self.candidates, self.control_k})  # any confirm pair is among these
        for stage, ks, seeds, epochs in (
            ("search", list(self.candidates), self.search_seeds, None),
            ("confirm", every, self.confirm_seeds, self.confirm_epochs),
        ):
            try:  # both runs are valid before the search starts
                self.run_config(ks, seeds, epochs)
            except ValidationError as e:
                raise ValueError(f"{stage} run: {format_error(e, '')}") from None
        return self

    def run_config(self, ks: list[int], seeds: tuple[int, ...], epochs: int | None) -> RunConfig:
        update: dict[str, Any] = {"epochs": epochs} if epochs else {}
        saes = [self.sae.with_fields(**update, k=k, name=f"k{k}", target_l0=None) for k in ks]
        return RunConfig.model_validate(
            {
                "toy": self.toy,
                "activations": self.activations,
                "data": (self.data,),
                "saes": tuple(saes),
                "seeds": seeds,
                "metrics": self.metrics,
            }
        )


def select_k(rows: list[dict[str, Any]], ev_floor: float) -> dict[str, Any]:
    """The row maximising the lower CI bound of trained − random among rows with `ev` ≥
    ev_floor (ties: smaller k)."""
    best = best_lower_bound(
        rows,
        lower=lambda r: r["trained_minus_random"]["ci_low"],
        feasible=lambda r: r["ev"] >= ev_floor,
        tie=lambda r: -r["k"],
    )
    if best is None:
        best_ev = max(r["ev"] for r in rows)
        raise HusaiError(f"no candidate k reaches ev_floor {ev_floor} (best EV {best_ev:.3f})")
    return best


def _rows(metrics: dict[str, Any], data: str, ks: list[int]) -> list[dict[str, Any]]:
    out = []
    for k in ks:
        arch = metrics["datasets"][data]["architectures"][f"k{k}"]
        pw = metric(arch, "pwmcc")
        out.append(
            {
                "k": k,
                "pwmcc": pw["trained"],
                "random": pw["random"]["mean"],
                "trained_minus_random": minus(arch),
                "ev": quality(arch)["explained_variance"],
                "l0": quality(arch)["l0"],
                "source": f"search/metrics.json → datasets.{data}.architectures.k{k}",
            }
        )
    return out


def plan_lines(
    cfg: CalibrateConfig, out: Path, executor: str = "inline", **engine: Any
) -> list[str]:
    """`husai calibrate --dry-run`: the search run's pre-flight checks, and the plan."""
    from husai.experiments.plan import plan_lines as run_plan
    from husai.experiments.plan import preflight

    search = cfg.run_config(list(cfg.candidates), cfg.search_seeds, None)
    preflight(search, Path(out) / "search", executor, **engine)
    ks = ", ".join(map(str, cfg.candidates))
    return [
        f"config OK: search k ∈ {{{ks}}} × {len(cfg.search_seeds)} seeds, then the selected k "
        f"and control k = {cfg.control_k} × {len(cfg.confirm_seeds)} seeds, executor {executor}",
        *run_plan(search, Path(out) / "search", executor)[1:],
    ]


def calibrate(cfg: CalibrateConfig, out: Path, **run_kwargs: Any) -> dict[str, Any]:
    """Search, select, confirm; returns (and writes) calibration.json's content."""
    from husai.lock import directory_lock

    out = Path(out)
    with directory_lock(out, "calibrate"):
        return _calibrate(cfg, out, **run_kwargs)


def _calibrate(cfg: CalibrateConfig, out: Path, **run_kwargs: Any) -> dict[str, Any]:
    from husai.experiments.run import run

    ks = list(cfg.candidates)
    search = run(cfg.run_config(ks, cfg.search_seeds, None), out / "search", **run_kwargs)
    rows = _rows(search, cfg.data.name, ks)
    chosen = select_k(rows, cfg.ev_floor)
    pair = [chosen["k"]] if chosen["k"] == cfg.control_k else [chosen["k"], cfg.control_k]
    confirm_cfg = cfg.run_config(pair, cfg.confirm_seeds, cfg.confirm_epochs)
    confirm = run(confirm_cfg, out / "confirm", **run_kwargs)
    archs = confirm["datasets"][cfg.data.name]["architectures"]
    improvement = paired_gain(
        matrix(archs[f"k{chosen['k']}"]),
        matrix(archs[f"k{cfg.control_k}"]),
        cfg.metrics,
    )
    result = {
        "metric": "pwmcc (max-|cos|, symmetrised; higher = more consistent)",
        "rule": f"max lower CI bound of trained − random PWMCC subject to EV ≥ {cfg.ev_floor}",
        "search": rows,
        "selected_k": chosen["k"],
        "control_k": cfg.control_k,
        "confirm": {
            f"k{k}": {
                "pwmcc": trained(archs[f"k{k}"]),
                "trained_minus_random": minus(archs[f"k{k}"]),
                "ev": quality(archs[f"k{k}"])["explained_variance"],
                "source": f"confirm/metrics.json → datasets.{cfg.data.name}.architectures.k{k}",
            }
            for k in pair
        },
        "improvement_selected_minus_control": improvement,
        "level": cfg.metrics.ci_level,
        "verdict": "same" if chosen["k"] == cfg.control_k else verdict(improvement),
        "seeds": {"search": list(cfg.search_seeds), "confirm": list(cfg.confirm_seeds)},
    }
    write_json(out / "calibration.json", result)
    write_json(
        out / "manifest.json",
        {"config": cfg.model_dump(mode="json"), "provenance": provenance()},
    )
    from husai.report.calibration import render_calibration

    render_calibration(out, result)
    return result
