"""Reports: figures and report.md rendered from a run directory's metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from husai.errors import HusaiError
from husai.integrity import read_sealed
from husai.io import read_json, sha256_file, write_text
from husai.report import figures
from husai.report.coverage import coverage_figures
from husai.report.format import level
from husai.report.functional import functional_figure
from husai.report.gates import gate_lines
from husai.report.markdown import render_markdown
from husai.report.sweep import sweep_figures
from husai.report.variants import shared_rate_figure
from husai.results import GATE_FILE


def in_config_order(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json sorts its keys; put data sets and SAEs back in the config's order."""
    datasets = {}
    for name in metrics.get("dataset_order") or sorted(metrics["datasets"]):
        ds = metrics["datasets"][name]
        order = [s for s in metrics.get("sae_order", []) if s in ds["architectures"]]
        archs = {
            label: ds["architectures"][label] for label in order or sorted(ds["architectures"])
        }
        datasets[name] = {**ds, "architectures": archs}
    return {**metrics, "datasets": datasets}


def _check_intact(run_dir: Path, manifest_path: Path) -> Any:
    """manifest.json matches its seal and metrics.json the sha256 it records (once the run
    has recorded it): a corrupt one is refused, never rendered."""
    manifest, sealed = read_sealed(manifest_path)
    if sealed is False:
        raise HusaiError(f"{manifest_path}: does not match its checksum (corrupted?)")
    digest = manifest.get("artifacts", {}).get("metrics.json")
    if digest is not None and sha256_file(run_dir / "metrics.json") != digest:
        raise HusaiError(
            f"{run_dir / 'metrics.json'}: sha256 does not match {manifest_path} (corrupted?)"
        )
    return manifest


def render(run_dir: Path) -> Path:
    """(Re)draw every figure and report.md of a run directory; returns report.md's path."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise HusaiError(f"{run_dir}: no metrics.json (not a husai run directory?)")
    manifest_path = run_dir / "manifest.json"
    manifest = _check_intact(run_dir, manifest_path) if manifest_path.is_file() else None
    metrics = in_config_order(read_json(run_dir / "metrics.json"))
    fig_dir = run_dir / "figures"
    seeds, ci = metrics["seeds"], level(metrics["metrics_config"]["ci_level"])
    for name, ds in metrics["datasets"].items():
        archs = ds["architectures"]
        for label, arch in archs.items():
            figures.heatmap(
                f"{name}/{label}", arch, seeds, fig_dir / f"pwmcc_heatmap_{name}_{label}.png"
            )
        figures.trained_vs_baselines(archs, fig_dir / f"trained_vs_baselines_{name}.png", ci)
        shared_rate_figure(name, archs, fig_dir / f"shared_rate_curve_{name}.png")
        front = metrics["pareto"][name]
        figures.ev_vs_pwmcc(archs, seeds, front, fig_dir / f"ev_vs_pwmcc_{name}.png")
        if len({a["config"]["d_sae"] for a in archs.values()}) > 1 and "sweep" not in metrics:
            figures.d_sae_trend(name, ds, fig_dir / f"d_sae_trend_{name}.png", ci)
        if any("trajectory" in a for a in archs.values()):
            figures.trajectory(archs, fig_dir / f"trajectory_{name}.png")
        if all("firing_histograms" in a.get("lm_eval", {}) for a in archs.values()):
            figures.firing_histograms(archs, fig_dir / f"firing_{name}.png")
        coverage_figures(name, archs, fig_dir)
        functional_figure(name, archs, fig_dir / f"functional_{name}.png")
    if "sweep" in metrics:
        sweep_figures(metrics, fig_dir)
    if "toy_model" in metrics:
        toy = metrics["toy_model"]
        figures.fourier_spectrum(toy["fourier"], fig_dir / "fourier_spectrum.png")
        figures.training_curve(toy["history"], fig_dir / "training_curve.png")
    gate_path = run_dir / GATE_FILE
    gate = read_json(gate_path) if gate_path.is_file() else None
    gates = gate_lines(gate, sha256_file(run_dir / "metrics.json"))
    return write_text(run_dir / "report.md", render_markdown(metrics, manifest, gates))
