"""Experiments: configs run by one engine (today: the `husai run` pipeline)."""

from husai.experiments.run import run

__all__ = ["run"]
