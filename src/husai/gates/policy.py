"""A release-gate policy: named gates, each a comparison of metrics.json numbers with a
threshold.

A gate's `metric` is a path into metrics.json, segments separated by '/' (JSON-pointer
style: keys such as `shared_fraction@0.5` hold dots), `*` matching any key at its level.
Kinds:
- `bound`: every value the path matches, compared with `threshold`;
- `drop`: `reference − value` compared with `threshold` (e.g. 1 − EV);
- `control`: a random-model control: `metric` is an interval path relative to an SAE
  config (`consistency/pwmcc/trained_minus_random`); for each real toy data set and each
  control data set (`control: random_init`) with the same target hook and SAE label, the
  value is real `ci_low` − control `ci_high` (≥ 0: the intervals do not overlap, the real
  model's SAEs are resolved above the re-initialised model's).
`datasets` restricts which data sets a `datasets/*` wildcard matches: `real` (not a
control), `transcoder` (a real set with `target_hook`), `control`, `all`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from husai.config import Strict, check_name, parse_config, read_config_file
from husai.errors import HusaiError

OPS = {">=": float.__ge__, ">": float.__gt__, "<=": float.__le__, "<": float.__lt__}
TRAINED_MINUS_RANDOM = "consistency/pwmcc/trained_minus_random"
PER_SAE = "datasets/*/architectures/*/"


class Gate(Strict):
    """One gate: which numbers, how compared, whether a release needs it."""

    name: str = Field(description="gate name (unique in the policy)")
    kind: Literal["bound", "drop", "control"] = Field(description="bound | drop | control")
    metric: str = Field(description="'/'-separated metrics.json path, '*' = any key")
    op: Literal[">=", ">", "<=", "<"] = Field(">=", description="value OP threshold passes")
    threshold: float = Field(description="the number the value is compared with")
    reference: float | None = Field(None, description="drop: value = reference − metric")
    datasets: Literal["real", "transcoder", "control", "all"] = Field(
        "real", description="data sets a `datasets/*` wildcard matches"
    )
    required: bool = Field(True, description="a release needs this gate to pass")
    description: str = Field("", description="what the gate means, in words")
    needs: str = Field("", description="the run input its evidence comes from (when missing)")
    control_ev_floor: float | None = Field(
        None,
        description="control: the control SAEs' seed-mean EV must reach this, else the row "
        "fails (an SAE that learned nothing on the random model is no control)",
    )

    @model_validator(mode="after")
    def _check(self) -> Gate:
        check_name("gate name", self.name)
        if not self.metric or any(not s for s in self.metric.split("/")):
            raise ValueError(f"gate {self.name}: metric path {self.metric!r} has an empty segment")
        if self.control_ev_floor is not None and self.kind != "control":
            raise ValueError(f"gate {self.name}: `control_ev_floor` goes with kind control")
        if (self.kind == "drop") != (self.reference is not None):
            raise ValueError(
                f"gate {self.name}: `reference` goes with kind drop (and drop needs it)"
            )
        return self


class Policy(Strict):
    gates: tuple[Gate, ...] = Field(description="the gates, in report order")

    @model_validator(mode="after")
    def _check(self) -> Policy:
        names = [g.name for g in self.gates]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"gates: need at least one gate, with distinct names (got {names})")
        return self


DEFAULT_POLICY = Policy(
    gates=(
        Gate(
            name="trained_gt_random",
            kind="bound",
            metric=PER_SAE + TRAINED_MINUS_RANDOM + "/ci_low",
            threshold=0.0,
            description="every SAE config on every real data set: trained − matched random "
            "PWMCC (symmetric max-|cos|, higher = more consistent), seed-bootstrap lower "
            "bound ≥ 0",
        ),
        Gate(
            name="ev_drop",
            kind="drop",
            metric=PER_SAE + "quality/mean/explained_variance",
            reference=1.0,
            op="<=",
            threshold=0.05,
            description="EV drop = 1 − explained variance (seed mean, on the SAEs' training "
            "rows; a transcoder's against its target): the share of variance the "
            "reconstruction loses, ≤ 0.05, for every SAE config on every real data set",
        ),
        Gate(
            name="transcoder_arm",
            needs="a transcoder data set (`target_hook`, source toy)",
            kind="bound",
            metric=PER_SAE + TRAINED_MINUS_RANDOM + "/ci_low",
            threshold=0.0,
            datasets="transcoder",
            description="the run has a transcoder data set (`target_hook`), and its "
            "trained − random PWMCC lower bound is ≥ 0 for every SAE config",
        ),
        Gate(
            name="ood_drop",
            needs="a data set with an `ood` split (toy: test or operands; lm: an lm.ood corpus)",
            kind="bound",
            metric=PER_SAE + "quality/ood/explained_variance_drop/mean",
            op="<=",
            threshold=0.1,
            description="OOD drop = EV on the training rows (an LM set: its held-out tokens) "
            "− EV on the data set's `ood` rows (seed mean of the per-seed differences) ≤ 0.1, "
            "for every SAE config",
        ),
        Gate(
            name="random_model_control",
            needs="a `control: random_init` data set (source toy)",
            kind="control",
            metric=TRAINED_MINUS_RANDOM,
            threshold=0.0,
            datasets="control",
            control_ev_floor=0.5,
            description="the real model's trained − random PWMCC lower bound minus the "
            "re-initialised model's (a `control: random_init` data set) upper bound ≥ 0: "
            "SAEs on an untrained model must not look as consistent; the control SAEs' EV "
            "must be ≥ 0.5 (one that learned nothing passes vacuously)",
        ),
        Gate(
            name="external_benchmarks",
            needs="an `external_benchmarks` block in metrics.json",
            kind="bound",
            metric="external_benchmarks/*/delta/ci_low",
            threshold=0.0,
            required=False,
            description="external-benchmark deltas (an `external_benchmarks` block, "
            "{name: {delta: interval}}): lower bound ≥ 0; husai computes none yet, so "
            "missing and not required",
        ),
    )
)


def load_policy(path: Path | None) -> Policy:
    """A YAML / TOML policy file (`gates: [...]`), or the default; one-line HusaiError."""
    if path is None:
        return DEFAULT_POLICY
    try:
        return parse_config(read_config_file(path), Policy)
    except HusaiError as e:
        raise HusaiError(f"{path}: {str(e).removeprefix('config: ')}") from None
