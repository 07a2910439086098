"""Experiments: configs run by one engine. `run` is the `husai run` / `husai sweep`
pipeline; `run_jobs` runs content-hashed `Job`s inline, in a process pool or on Ray."""

from husai.experiments.engine import Job, run_jobs
from husai.experiments.run import run

__all__ = ["Job", "run", "run_jobs"]
