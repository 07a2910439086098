"""Independent, deliberately naive reference implementations (python loops, float64)."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np


def abs_cos(u: np.ndarray, v: np.ndarray) -> float:
    nu = math.sqrt(sum(float(x) ** 2 for x in u))
    nv = math.sqrt(sum(float(x) ** 2 for x in v))
    if nu == 0 or nv == 0:
        return 0.0
    return abs(sum(float(x) * float(y) for x, y in zip(u, v, strict=True))) / (nu * nv)


def best(a: np.ndarray, b: np.ndarray) -> tuple[list[float], list[float]]:
    ba = [max(abs_cos(u, v) for v in b) for u in a]
    bb = [max(abs_cos(u, v) for u in a) for v in b]
    return ba, bb


def pwmcc(a: np.ndarray, b: np.ndarray) -> float:
    ba, bb = best(a, b)
    return 0.5 * (sum(ba) / len(ba) + sum(bb) / len(bb))


def shared(a: np.ndarray, b: np.ndarray, t: float) -> float:
    ba, bb = best(a, b)
    return 0.5 * (sum(x > t for x in ba) / len(ba) + sum(x > t for x in bb) / len(bb))


def hungarian(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) > len(b):
        a, b = b, a
    k = len(a)
    return max(
        sum(abs_cos(a[i], b[p[i]]) for i in range(k)) / k for p in permutations(range(len(b)), k)
    )
