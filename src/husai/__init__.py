"""husai: do sparse autoencoders learn the same features under another seed?"""

import os

# OpenMP threads sleep rather than spin while they wait (read once, when torch loads its
# OpenMP runtime, so only where husai is imported before torch, e.g. the CLI): on the 2-core
# machine shared with other jobs, spinning threads made a 2-thread TopK step 25–45× slower
# (1.5–2.2 s vs 33–85 ms at load 15; benchmarks/bench_train.py). The results are the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from husai.errors import HusaiError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["HusaiError", "__version__"]
