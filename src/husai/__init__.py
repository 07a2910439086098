"""husai: do sparse autoencoders learn the same features under another seed?"""

import os

# OpenMP threads spin briefly, then sleep, while they wait (read once, when torch loads its
# OpenMP runtime, so only where husai is imported before torch, e.g. the CLI). Measured on
# the 2-core machine, one 5-seed toy TopK step (benchmarks/bench_train.py's geometry): idle,
# 9.9–10.1 ms with libgomp's default spinning, 15.8–16.5 ms with OMP_WAIT_POLICY=PASSIVE,
# 10.3–11.6 ms with GOMP_SPINCOUNT=10000; beside two busy processes, 32 ms default, 22–34 ms
# PASSIVE, 20–27 ms at 10000, and 123 ms at 100000 (at load 15, unbounded spinning was
# 25–45× slower). A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins. Same results.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from husai.errors import HusaiError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["HusaiError", "__version__"]
