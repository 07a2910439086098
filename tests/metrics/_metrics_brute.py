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


def best_permutation(sim: list[list[float]]) -> tuple[int, ...]:
    """Rows→cols assignment maximising the total (square or n_rows <= n_cols), by enumeration."""
    n_r, n_c = len(sim), len(sim[0])
    return max(permutations(range(n_c), n_r), key=lambda p: sum(sim[i][p[i]] for i in range(n_r)))


def pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    vx = sum((v - mx) ** 2 for v in x)
    vy = sum((v - my) ** 2 for v in y)
    if vx == 0 or vy == 0:
        return 0.0
    return sum((u - mx) * (v - my) for u, v in zip(x, y, strict=True)) / math.sqrt(vx * vy)


def shared_latents(ea, da, eb, db, t: float) -> int:
    """Paulo & Belrose shared latents of square SAEs, by enumerating matchings."""
    n = len(ea)
    se = [[abs_cos(ea[i], eb[j]) for j in range(n)] for i in range(n)]
    sd = [[abs_cos(da[i], db[j]) for j in range(n)] for i in range(n)]
    pe, pd = best_permutation(se), best_permutation(sd)
    return sum(pe[i] == pd[i] and se[i][pe[i]] > t and sd[i][pd[i]] > t for i in range(n))


def subspace(a: np.ndarray, b: np.ndarray, r: int) -> float:
    """Mean cos² of principal angles between top-r right singular subspaces (numpy + scipy)."""
    from scipy.linalg import subspace_angles

    def top(x):
        x = np.asarray(x, dtype=np.float64)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return np.linalg.svd(x, full_matrices=False)[2][:r].T

    return float(np.mean(np.cos(subspace_angles(top(a), top(b))) ** 2))


def quality(x: np.ndarray, x_hat: np.ndarray, codes: np.ndarray) -> dict[str, float]:
    """MSE, explained variance (SST about the per-dimension mean), mean L0, dead fraction."""
    n, d = len(x), len(x[0])
    sse = sum((float(x_hat[i][j]) - float(x[i][j])) ** 2 for i in range(n) for j in range(d))
    mean = [sum(float(x[i][j]) for i in range(n)) / n for j in range(d)]
    sst = sum((float(x[i][j]) - mean[j]) ** 2 for i in range(n) for j in range(d))
    f = len(codes[0])
    fires = [sum(float(codes[i][k]) != 0 for i in range(n)) for k in range(f)]
    return {
        "mse": sse / (n * d),
        "explained_variance": 1 - sse / sst,
        "l0": sum(fires) / n,
        "dead_fraction": sum(c == 0 for c in fires) / f,
    }


def next_token_ce(logits, ids, mask) -> float:
    """Mean −log softmax(logits[b, t])[ids[b, t + 1]] over t with tokens t, t + 1 real."""
    total, n = 0.0, 0
    for b in range(len(ids)):
        for t in range(len(ids[b]) - 1):
            if not (mask[b][t] and mask[b][t + 1]):
                continue
            row = [float(v) for v in logits[b][t]]
            top = max(row)
            lse = top + math.log(sum(math.exp(v - top) for v in row))
            total += lse - row[int(ids[b][t + 1])]
            n += 1
    return total / n


def next_token_kl(clean, spliced, mask) -> float:
    """Mean Σ_v p log(p / q) of the softmaxes at every real position."""
    total, n = 0.0, 0
    for b in range(len(clean)):
        for t in range(len(clean[b])):
            if not mask[b][t]:
                continue
            p, q = ([math.exp(float(v)) for v in row] for row in (clean[b][t], spliced[b][t]))
            zp, zq = sum(p), sum(q)
            terms = zip(p, q, strict=True)
            total += sum(pi / zp * math.log((pi / zp) / (qi / zq)) for pi, qi in terms)
            n += 1
    return total / n


def dense_fraction(codes: np.ndarray, threshold: float) -> float:
    """Latents whose firing frequency (nonzero rows / rows) exceeds the threshold, / latents."""
    n, f = len(codes), len(codes[0])
    freq = [sum(float(codes[i][k]) != 0 for i in range(n)) / n for k in range(f)]
    return sum(q > threshold for q in freq) / f


def firing_histogram(codes: np.ndarray, edges: list[float]) -> dict:
    """Live latents per frequency bin [10^e_i, 10^e_i+1) (last bin closed, below the first
    edge into the first bin), dead latents apart; a loop over latents and bins."""
    n, f = len(codes), len(codes[0])
    per_bin, dead = [0] * (len(edges) - 1), 0
    for k in range(f):
        fires = sum(float(codes[i][k]) != 0 for i in range(n))
        if fires == 0:
            dead += 1
            continue
        q = fires / n
        for b in range(len(edges) - 1):
            last = b == len(edges) - 2
            above = b == 0 or q >= 10.0 ** edges[b]
            if above and (last or q < 10.0 ** edges[b + 1]):
                per_bin[b] += 1
                break
    return {"log10_edges": edges, "counts": per_bin, "dead": dead, "n_latents": f, "n_rows": n}
