"""Release gates: a policy of pass / fail / missing checks on a run's metrics.json."""

from husai.gates.evaluate import GATE_FILE, evaluate, gate_run
from husai.gates.policy import DEFAULT_POLICY, Gate, Policy, load_policy

__all__ = ["DEFAULT_POLICY", "GATE_FILE", "Gate", "Policy", "evaluate", "gate_run", "load_policy"]
