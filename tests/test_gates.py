"""`husai gate`: the policy evaluator on crafted metrics.json dicts (checked by hand), the
CLI on tiny runs (exit 0 / 1 / 2), and the gates' data (random-model control, OOD rows)."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from husai.cli import app
from husai.config import parse_run_config
from husai.errors import HusaiError
from husai.gates import DEFAULT_POLICY, Policy, evaluate

runner = CliRunner()


def _arch(lo: float, hi: float, ev: float) -> dict:
    tmr = {"mean": (lo + hi) / 2, "ci_low": lo, "ci_high": hi}
    return {
        "consistency": {"pwmcc": {"trained_minus_random": tmr}},
        "quality": {"mean": {"explained_variance": ev}},
    }


def _metrics() -> dict:
    return {
        "datasets": {
            "toy": {"source": "toy", "architectures": {"topk": _arch(0.1, 0.3, 0.97)}},
            "rand": {
                "source": "toy",
                "control": "random_init",
                "architectures": {"topk": _arch(-0.05, 0.05, 0.99)},
            },
            "mlp": {
                "source": "toy",
                "target_hook": "blocks.0.mlp_out",
                "architectures": {"topk": _arch(-0.01, 0.2, 0.9)},
            },
        }
    }


def _by_name(result: dict) -> dict:
    return {g["name"]: g for g in result["gates"]}


def test_default_policy_on_a_crafted_run() -> None:
    r = _by_name(evaluate(DEFAULT_POLICY, _metrics()))
    # trained − random lower bounds of the real sets: mlp −0.01 < 0 fails; the control excluded
    tgr = r["trained_gt_random"]
    assert tgr["status"] == "fail"
    assert [(e["paths"][0].split("/")[1], e["value"], e["pass"]) for e in tgr["evidence"]] == [
        ("mlp", -0.01, False),
        ("toy", 0.1, True),
    ]
    # EV drop = 1 − EV: 0.1 (mlp) fails, 0.03 (toy) passes
    assert [round(e["value"], 6) for e in r["ev_drop"]["evidence"]] == [0.1, 0.03]
    assert r["transcoder_arm"]["status"] == "fail"
    assert len(r["transcoder_arm"]["evidence"]) == 1
    # control: real ci_low 0.1 − control ci_high 0.05 = 0.05 ≥ 0 (mlp has no control of its own)
    ctl = r["random_model_control"]
    assert ctl["status"] == "pass" and len(ctl["evidence"]) == 1
    assert ctl["evidence"][0]["value"] == pytest.approx(0.05)
    assert ctl["evidence"][0]["control_ev"] == 0.99 and ctl["evidence"][0]["control_learned"]
    assert r["ood_drop"]["status"] == "missing" and "ood" in r["ood_drop"]["reason"]
    assert r["external_benchmarks"]["status"] == "missing"
    res = evaluate(DEFAULT_POLICY, _metrics())
    assert not res["passed"]
    assert res["failed_required"] == ["trained_gt_random", "ev_drop", "transcoder_arm", "ood_drop"]


def test_a_control_that_learned_nothing_fails_the_control_gate() -> None:
    m = _metrics()
    m["datasets"]["rand"]["architectures"]["topk"]["quality"]["mean"]["explained_variance"] = -0.02
    ctl = _by_name(evaluate(DEFAULT_POLICY, m))["random_model_control"]
    row = ctl["evidence"][0]
    # the intervals separate (0.1 − 0.05 ≥ 0), but the control SAEs' EV −0.02 < 0.5
    assert row["value"] == pytest.approx(0.05) and not row["control_learned"]
    assert ctl["status"] == "fail" and not row["pass"]
    with pytest.raises(ValueError, match="control_ev_floor"):
        Policy.model_validate(
            {
                "gates": [
                    {
                        "name": "g",
                        "kind": "bound",
                        "metric": "a",
                        "threshold": 0,
                        "control_ev_floor": 0.5,
                    }
                ]
            }
        )


def test_a_null_value_fails_and_optional_gates_do_not_decide() -> None:
    m = _metrics()
    m["datasets"]["toy"]["architectures"]["topk"]["quality"]["mean"]["explained_variance"] = None
    g = {
        "name": "ev",
        "kind": "bound",
        "metric": "datasets/toy/architectures/*/quality/mean/explained_variance",
        "threshold": 0.5,
    }
    r = evaluate(Policy.model_validate({"gates": [g]}), m)
    assert r["gates"][0]["status"] == "fail" and not r["passed"]
    opt = {**g, "required": False}
    assert evaluate(Policy.model_validate({"gates": [opt]}), m)["passed"]


def test_a_metric_path_that_matches_nothing_is_an_error() -> None:
    g = {
        "name": "x",
        "kind": "bound",
        "metric": "datasets/*/architectures/*/quality/mean/evv",
        "threshold": 0,
    }
    with pytest.raises(HusaiError, match="gate x: metric path .* matches nothing"):
        evaluate(Policy.model_validate({"gates": [g]}), _metrics())


@pytest.fixture
def plain(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run's metrics.json (gate.json is not written into the shared run)."""
    (tmp_path / "run").mkdir()
    shutil.copy(tiny_run / "metrics.json", tmp_path / "run")
    return tmp_path / "run"


def _write(tmp: Path, policy: dict) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


EV = "datasets/*/architectures/*/quality/mean/explained_variance"


def test_gate_exits_0_on_a_passing_run_and_1_on_a_failing_one(plain: Path, tmp_path: Path) -> None:
    lenient = {"gates": [{"name": "ev", "kind": "bound", "metric": EV, "threshold": 0.1}]}
    r = runner.invoke(app, ["gate", str(plain), "--policy", str(_write(tmp_path, lenient))])
    assert r.exit_code == 0, r.output
    gate = json.loads((plain / "gate.json").read_text())
    assert gate["passed"] and gate["gates"][0]["status"] == "pass"
    assert len(gate["metrics_sha256"]) == 64 and gate["policy"]["gates"][0]["threshold"] == 0.1
    strict = {"gates": [{**lenient["gates"][0], "threshold": 0.999}]}
    r = runner.invoke(app, ["gate", str(plain), "--policy", str(_write(tmp_path, strict))])
    assert r.exit_code == 1 and "FAIL: ev" in r.output


def test_default_policy_fails_a_plain_run_naming_the_missing_inputs(plain: Path) -> None:
    r = runner.invoke(app, ["gate", str(plain)])
    assert r.exit_code == 1
    gate = _by_name(json.loads((plain / "gate.json").read_text()))
    for name in ("transcoder_arm", "ood_drop", "random_model_control"):
        assert gate[name]["status"] == "missing" and name in r.output
        assert "missing input" in gate[name]["reason"]


@pytest.mark.parametrize(
    ("gate", "msg"),
    [
        ({"name": "g", "kind": "median", "metric": EV, "threshold": 0}, "gates.0.kind"),
        ({"name": "g", "kind": "bound", "metric": EV + "s", "threshold": 0}, "matches nothing"),
        ({"name": "g", "kind": "drop", "metric": EV, "threshold": 0}, "reference"),
        ({"name": "g", "kind": "bound", "metric": EV, "threshold": 0, "x": 1}, "gates.0.x"),
    ],
)
def test_a_bad_policy_is_one_line_exit_2(plain: Path, tmp_path: Path, gate: dict, msg: str):
    r = runner.invoke(
        app, ["gate", str(plain), "--policy", str(_write(tmp_path, {"gates": [gate]}))]
    )
    assert r.exit_code == 2 and msg in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_gate_data_random_model_control_and_ood(
    tiny_run: Path, tiny_dict: dict, tmp_path: Path
) -> None:
    from husai.experiments import run

    cfg = copy.deepcopy(tiny_dict)
    cfg["saes"] = [{**cfg["saes"][0], "epochs": 2}]
    cfg["seeds"] = [1, 2]
    cfg["data"] = [{"name": "toy", "ood": "operands"}, {"name": "rand", "control": "random_init"}]
    m = run(parse_run_config(cfg), tmp_path / "run", cache_dir=tiny_run.parent / "cache")
    toy, rand = m["datasets"]["toy"], m["datasets"]["rand"]
    assert rand["control"] == "random_init" and rand["control_seed"] == 0
    assert "structure" not in rand["architectures"]["topk"]  # no downstream on the real model
    assert "downstream_accuracy" not in rand["architectures"]["topk"]["quality"]["mean"]
    ood = toy["architectures"]["topk"]["quality"]["ood"]
    assert toy["ood"] == "operands" and ood["n"] == 2 * toy["n"]  # a and b positions
    drop = ood["explained_variance_drop"]
    ev_in = toy["architectures"]["topk"]["quality"]["per_seed"]
    for s, d in drop["per_seed"].items():
        assert d == pytest.approx(
            ev_in[s]["explained_variance"] - ood["per_seed"][s]["explained_variance"]
        )
    report = (tmp_path / "run" / "report.md").read_text()
    assert (
        "Random-model control" in report and "datasets.toy.architectures.topk.quality.ood" in report
    )
    r = runner.invoke(app, ["gate", str(tmp_path / "run")])
    gate = _by_name(json.loads((tmp_path / "run" / "gate.json").read_text()))
    assert gate["ood_drop"]["status"] != "missing"
    assert gate["random_model_control"]["status"] != "missing"
    assert r.exit_code == (
        0 if all(g["status"] == "pass" for g in gate.values() if g["required"]) else 1
    )


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        ({"data": [{"name": "t", "ood": "test"}]}, "ood test needs activations.split train"),
        (
            {"data": [{"name": "t", "ood": "operands"}], "activations": {"position": "all"}},
            "needs activations.position answer",
        ),
        (
            {"data": [{"name": "s", "source": "synthetic", "control": "random_init"}]},
            "control needs source 'toy'",
        ),
    ],
)
def test_bad_gate_data_config_is_one_line(extra: dict, msg: str) -> None:
    with pytest.raises(HusaiError, match=msg):
        parse_run_config(extra)


def test_run_writes_gate_json_and_the_report_shows_it(tiny_run: Path, tmp_path: Path) -> None:
    """`husai run` evaluates the default policy into gate.json; report.md's release-gate
    table shows every gate's status and evidence as gate.json has them; `husai gate
    --policy` re-evaluates and redraws the section; a stale gate.json is not shown."""
    gate = json.loads((tiny_run / "gate.json").read_text())
    assert (
        gate["metrics_sha256"]
        == hashlib.sha256((tiny_run / "metrics.json").read_bytes()).hexdigest()
    )
    report = (tiny_run / "report.md").read_text()
    section = report.split("## Release gates", 1)[1].split("## ", 1)[0]
    for g in gate["gates"]:
        row = next(r for r in section.splitlines() if r.startswith(f"| `{g['name']}` |"))
        assert f"**{g['status']}**" in row
        for e in g["evidence"][:1]:
            assert f"`{e['paths'][0]}`" in row
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    lenient = {"gates": [{"name": "ev", "kind": "bound", "metric": EV, "threshold": 0.1}]}
    r = runner.invoke(app, ["gate", str(run), "--policy", str(_write(tmp_path, lenient))])
    assert r.exit_code == 0, r.output
    section = (run / "report.md").read_text().split("## Release gates", 1)[1]
    assert "every required gate passes" in section and "| `ev` | yes | **pass** |" in section
    from husai.report.gates import gate_lines

    lines = gate_lines(json.loads((run / "gate.json").read_text()), "0" * 64)
    assert any("stale" in line for line in lines)
