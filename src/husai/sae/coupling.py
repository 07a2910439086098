"""Are a configuration's seeds independent? The protocol of issue 13, read off the config.

A seed is *independent* when its initialisation and data order come from its own generator
and its training sees nothing of the other seeds. Agreement between independent seeds is
features that come back; agreement between coupled seeds (a shared reference, a joint
penalty) is imposed by training and reported as coupled. A data-anchored init (`init: data`)
keeps the seeds independent in this sense but can make them agree before any training, so
it counts only when the measured at-init agreement is within the protocol's tolerance of
random (husai.experiments.evaluate.protocol_block measures it).
"""

from __future__ import annotations

from typing import Any

from husai.sae.config import SAEConfig
from husai.sae.registry import REGISTRY

COUPLINGS = {
    "reference": "consistency_penalty reference: every seed is pulled towards one shared "
    "reference decoder",
    "assignment": "consistency_penalty assignment: every seed is pulled towards one shared "
    "reference decoder (one-to-one)",
    "joint": "consistency_penalty joint: the seeds' decoders are pulled towards each other",
}
DATA_ANCHORED = (
    "{what}: decoder rows start at sampled data rows (each seed its own sample), which "
    "can agree across seeds before training: counts only if the at-init agreement is "
    "within the tolerance of random"
)


def seed_coupling(cfg: SAEConfig) -> dict[str, Any]:
    """{"independent": no training coupling between seeds, "couplings": why not (texts),
    "caveats": what the at-init baseline must clear (a data-anchored init)}."""
    couplings = []
    if cfg.consistency_penalty != "none" and cfg.consistency_lambda > 0:
        couplings.append(COUPLINGS[cfg.consistency_penalty])
    caveats = []
    if cfg.init == "data":
        caveats.append(DATA_ANCHORED.format(what="init data"))
    if REGISTRY[cfg.architecture].data_anchored:
        caveats.append(DATA_ANCHORED.format(what=f"architecture {cfg.architecture}"))
    return {"independent": not couplings, "couplings": couplings, "caveats": caveats}
