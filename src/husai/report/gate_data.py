"""report.md lines for the release gates' data of a data set: a random-model control
and the SAEs' explained variance on out-of-distribution rows (`quality.ood`)."""

from __future__ import annotations

from typing import Any

from husai import results as R
from husai.report.format import interval

OOD_ROWS = {
    "test": "the toy model's test-split pairs (seen by neither the model nor the SAEs)",
    "operands": "the same hook at the a and b token positions",
}


def gate_data_lines(name: str, ds: dict[str, Any]) -> list[str]:
    lines = []
    if ds.get("control"):
        lines += [
            f"Random-model control: the toy architecture with re-initialised, untrained "
            f"weights (init seed {ds['control_seed']}), same hook, position and split; its "
            "SAEs are trained and scored like the real model's (no downstream). `husai gate` "
            "compares its trained − random PWMCC with the real data sets'.",
            "",
        ]
    for label, arch in ds["architectures"].items():
        ood = arch["quality"].get("ood")
        if ood is None:
            continue
        ev_ood = ood["ci"]["explained_variance"]
        lm = ds["source"] == "lm"
        rows = (
            f"the tokens of the corpus `{ood['kind']}` at the same site"
            if lm
            else f"{ood['kind']}: {OOD_ROWS[ood['kind']]}"
        )
        ref = ("the held-out tokens", "held-out") if lm else ("the training rows", "training")
        lines.append(
            f"- **{label}** on OOD rows ({rows}, {ood['n']} "
            f"rows): EV {interval(ev_ood)} vs {interval(R.ev(arch))} on {ref[0]}; "
            f"EV drop (per seed, {ref[1]} − OOD; higher = worse) "
            f"{interval(ood['explained_variance_drop'])}. Source: `metrics.json` → "
            f"`datasets.{name}.architectures.{label}.quality.ood`."
        )
    return lines + [""] if lines and lines[-1] else lines
