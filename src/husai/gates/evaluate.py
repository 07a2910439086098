"""Evaluate a gate policy on a run's metrics.json: per gate pass / fail / missing, with the
metrics.json path and value of every number it read; `gate.json` next to the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from husai.errors import HusaiError
from husai.gates.policy import OPS, PER_SAE, Gate, Policy
from husai.io import config_hash, read_json, sha256_file, write_json
from husai.results import GATE_FILE

# blocks a run may lack (a policy may name them; their gates are then missing, not errors)
OPTIONAL = ("datasets/*/architectures/*/quality/ood/**", "external_benchmarks/**")


def kind_of(dataset: dict[str, Any]) -> set[str]:
    """The selections a data set belongs to: real / control, transcoder, all."""
    if dataset.get("control"):
        return {"all", "control"}
    return {"all", "real"} | ({"transcoder"} if dataset.get("target_hook") else set())


def matches(obj: Any, pattern: str, datasets: str = "all") -> Iterator[tuple[str, Any]]:
    """(path, value) of every leaf `pattern` matches; a `datasets/*` wildcard only over
    the data sets of selection `datasets`."""
    segs = pattern.split("/")

    def walk(x: Any, i: int, path: list[str]) -> Iterator[tuple[str, Any]]:
        if i == len(segs):
            yield "/".join(path), x
            return
        if not isinstance(x, dict):
            return
        keys = sorted(x) if segs[i] == "*" else [segs[i]] if segs[i] in x else []
        for k in keys:
            if path == ["datasets"] and segs[i] == "*":
                if datasets not in kind_of(x[k]):
                    continue
            yield from walk(x[k], i + 1, [*path, k])

    yield from walk(obj, 0, [])


def _compatible(pattern: str, optional: str) -> bool:
    a, b = pattern.split("/"), optional.split("/")
    if b[-1] == "**":
        b = b[:-1]
        a = a[: len(b)] if len(a) >= len(b) else a
    return len(a) == len(b) and all(x == y or "*" in (x, y) for x, y in zip(a, b, strict=True))


def check_paths(policy: Policy, metrics: dict[str, Any]) -> None:
    """HusaiError (one line) for a gate whose metric path matches nothing in metrics.json
    and names no block a run may lack: a typo, not missing data."""
    for g in policy.gates:
        full = PER_SAE + g.metric + "/ci_low" if g.kind == "control" else g.metric
        if next(matches(metrics, full), None) is None and not any(
            _compatible(full, o) for o in OPTIONAL
        ):
            raise HusaiError(
                f"gate {g.name}: metric path {full!r} matches nothing in metrics.json "
                f"(nor an optional block: {', '.join(OPTIONAL)})"
            )


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _at(metrics: dict[str, Any], path: str) -> float | None:
    """The number at a literal path (None if absent or not a number)."""
    return _number(next(matches(metrics, path), (path, None))[1])


def _evidence(g: Gate, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    if g.kind != "control":
        out = []
        for path, v in matches(metrics, g.metric, g.datasets):
            x = _number(v)
            value = None if x is None or g.reference is None else g.reference - x
            out.append({"paths": [path], "values": [x], "value": x if value is None else value})
        return out
    sets = metrics.get("datasets", {})
    out = []
    for c_name, c in sorted(sets.items()):
        if "control" not in kind_of(c):
            continue
        for r_name, r in sorted(sets.items()):
            if r.get("control") or r.get("source") != "toy":
                continue
            if r.get("target_hook") != c.get("target_hook"):
                continue
            for sae in sorted(set(r["architectures"]) & set(c["architectures"])):
                rp = f"datasets/{r_name}/architectures/{sae}/{g.metric}/ci_low"
                cp = f"datasets/{c_name}/architectures/{sae}/{g.metric}/ci_high"
                lo, hi = _at(metrics, rp), _at(metrics, cp)
                value = None if lo is None or hi is None else lo - hi
                row = {"paths": [rp, cp], "values": [lo, hi], "value": value}
                if g.control_ev_floor is not None:
                    ep = f"datasets/{c_name}/architectures/{sae}/quality/mean/explained_variance"
                    ev = _at(metrics, ep)
                    row.update(control_ev=ev, control_ev_path=ep)
                    row["control_learned"] = ev is not None and ev >= g.control_ev_floor
                out.append(row)
    return out


def evaluate_gate(g: Gate, metrics: dict[str, Any]) -> dict[str, Any]:
    """One gate: status pass (every value passes) / fail / missing (nothing to read), its
    evidence (a null value fails: the number could not be computed)."""
    evidence = _evidence(g, metrics)
    for e in evidence:
        e["pass"] = e["value"] is not None and OPS[g.op](float(e["value"]), g.threshold)
        e["pass"] = e["pass"] and e.get("control_learned", True)
    status = "missing" if not evidence else "pass" if all(e["pass"] for e in evidence) else "fail"
    out = {**g.model_dump(mode="json"), "status": status, "evidence": evidence}
    if status == "missing":
        out["reason"] = f"missing input: {g.needs or g.metric} ({g.datasets} data sets)"
    return out


def evaluate(policy: Policy, metrics: dict[str, Any]) -> dict[str, Any]:
    """Every gate's result; `passed`: every required gate passes (a missing one fails)."""
    check_paths(policy, metrics)
    gates = [evaluate_gate(g, metrics) for g in policy.gates]
    failed = [r["name"] for r in gates if r["required"] and r["status"] != "pass"]
    return {"passed": not failed, "failed_required": failed, "gates": gates}


def gate_run(run_dir: Path, policy: Policy) -> dict[str, Any]:
    """Evaluate `policy` on `run_dir`/metrics.json and write `run_dir`/gate.json (the
    policy, its hash, the metrics.json sha256, the results)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise HusaiError(f"{path}: no metrics.json (not a finished `husai run` directory)")
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise HusaiError(f"{path}: metrics.json is not a mapping")
    result = {
        "policy": policy.model_dump(mode="json"),
        "policy_hash": config_hash(policy.model_dump(mode="json")),
        "metrics_sha256": sha256_file(path),
        **evaluate(policy, metrics),
    }
    write_json(Path(run_dir) / GATE_FILE, result)
    return result
