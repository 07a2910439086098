"""husai: do sparse autoencoders learn the same features under another seed?"""

import os

# OpenMP threads spin briefly, then sleep, while they wait (read once, when torch loads its
# OpenMP runtime, so only where husai is imported before torch, e.g. the CLI). `husai run`
# (default config) on the 2-core machine, alone / beside a competing 2-thread job (fair
# share: 2× alone): OMP_WAIT_POLICY=PASSIVE 59.8 / 100.8 s; GOMP_SPINCOUNT=1000 56.1 /
# 104.2 s; 10000 52.0 / 143.5 s (2.8×); libgomp's default (300000) made one 2-thread step
# 3× slower beside two busy processes and 25–45× at load 15. A user's own OMP_WAIT_POLICY
# or GOMP_SPINCOUNT wins. The results are the same.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from husai.errors import HusaiError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["HusaiError", "__version__"]
