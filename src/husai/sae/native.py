"""Native kernels compiled on first use with the machine's C++ compiler: a row-wise top-k,
its gradients' counting sort, and JumpReLU's activation (forward and backward, one pass
each, where torch's ops take about ten over the [S, B, F] pre-activations).

torch has no fast top-k for k ≪ F on the CPU (torch.topk is a per-row partial sort), and
the threshold-then-select pass in torch ops (`husai.sae.sparse_ops.topk_rows`) still walks
the [R, F] pre-activations five times and sorts its candidates globally. The top-k does
the same selection per row in one parallel loop, in cache: the maxima of G = min(F, 4k)
strided chunks (entry j in chunk j mod G: an elementwise max over contiguous blocks),
their k-th largest t (`std::nth_element`; at least k entries are ≥ t), the entries ≥ t as
candidates, and the first k of those by (value descending,
index ascending) — the same k entries and order as the torch path (ties to the lower
index; −0.0 and +0.0 compare equal and tie). A row holding NaN
makes the call return None and the caller use torch.topk's own rules.

Built like torch.utils.cpp_extension but without torch's headers (a plain C ABI through
ctypes, ~1 s to compile): `g++ -O3 -march=native -fopenmp`, cached under
$HUSAI_CACHE_DIR/kernels (default ~/.cache/husai/kernels), keyed by the source, compiler,
flags and CPU; written to a temporary file and renamed. Its OpenMP runtime is the one
torch already loaded (same soname), so it uses torch's threads (torch.set_num_threads).
No compiler, a failed build or HUSAI_NATIVE=0: None, and callers use the torch path (one
warning when a build fails).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = r"""
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// ascending order of the key = value descending, then index ascending (-0.0 below +0.0)
static inline uint64_t key_of(float v, int64_t j) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    const uint32_t u = (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // monotone in v
    return ((uint64_t)(~u) << 32) | (uint64_t)(uint32_t)j;
}

extern "C" int64_t husai_topk_rows(const float* pre, int64_t R, int64_t F, int64_t k,
                                   int32_t by_index, float* out_v, int64_t* out_i) {
    const int64_t G = std::min<int64_t>(F, 4 * k);  // strided chunks: entry j in chunk j % G
    const int RANK_MAX = 256;                        // up to this many candidates: rank by count
    int64_t nan_rows = 0;
#pragma omp parallel reduction(+ : nan_rows)
    {
        std::vector<float> cm(G);
        std::vector<uint64_t> keys(F);
        std::vector<int64_t> chosen(k);
#pragma omp for schedule(dynamic, 16)
        for (int64_t r = 0; r < R; ++r) {
            const float* p = pre + r * F;
            float* m = cm.data();
            int nan = 0;
            for (int64_t c = 0; c < G; ++c) {
                m[c] = p[c];
                nan |= p[c] != p[c];
            }
            int64_t b = G;
            for (; b + G <= F; b += G) {  // elementwise over contiguous blocks: SIMD
                const float* q = p + b;
                for (int64_t c = 0; c < G; ++c) {
                    m[c] = q[c] > m[c] ? q[c] : m[c];
                    nan |= q[c] != q[c];
                }
            }
            for (int64_t c = 0; b + c < F; ++c) {
                m[c] = p[b + c] > m[c] ? p[b + c] : m[c];
                nan |= p[b + c] != p[b + c];
            }
            if (nan) {
                ++nan_rows;
                continue;
            }
            // t: at least k chunk maxima are >= t (so at least k entries), bisected from the
            // smallest maximum towards the k-th largest
            float lo = m[0], hi = m[0];
            for (int64_t c = 1; c < G; ++c) {
                lo = std::min(lo, m[c]);
                hi = std::max(hi, m[c]);
            }
            for (int it = 0; it < 8 && G > k; ++it) {
                const float mid = lo + (hi - lo) * 0.5f;
                int64_t cnt = 0;
                for (int64_t c = 0; c < G; ++c) cnt += m[c] >= mid;
                if (cnt >= k) lo = mid;  // NaN mid (infinite bounds): count 0, lo kept
                else hi = mid;
            }
            const float t = lo;
            uint64_t* key = keys.data();
            int64_t n = 0, j = 0;
#if defined(__AVX512F__)
            const __m512 tv = _mm512_set1_ps(t);
            for (; j + 16 <= F; j += 16) {
                uint32_t mask = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + j), tv, _CMP_GE_OQ);
                while (mask) {
                    const int e = __builtin_ctz(mask);
                    key[n++] = key_of(p[j + e], j + e);
                    mask &= mask - 1;
                }
            }
#endif
            for (; j < F; ++j)
                if (p[j] >= t) key[n++] = key_of(p[j], j);
            if (n <= RANK_MAX) {  // each candidate's rank: how many come before it
                for (int64_t a = 0; a < n; ++a) {
                    int64_t rank = 0;
                    for (int64_t c = 0; c < n; ++c) rank += key[c] < key[a];
                    if (rank < k) chosen[rank] = a;
                }
                if (by_index) std::sort(chosen.begin(), chosen.end());
                for (int64_t c = 0; c < k; ++c) {
                    const int64_t idx = (int64_t)(uint32_t)key[chosen[c]];
                    out_v[r * k + c] = p[idx];
                    out_i[r * k + c] = idx;
                }
            } else {
                std::nth_element(key, key + (k - 1), key + n);
                std::sort(key, key + k);
                for (int64_t c = 0; c < k; ++c) chosen[c] = (int64_t)(uint32_t)key[c];
                if (by_index) std::sort(chosen.begin(), chosen.end());
                for (int64_t c = 0; c < k; ++c) {
                    out_v[r * k + c] = p[chosen[c]];
                    out_i[r * k + c] = chosen[c];
                }
            }
        }
    }
    return nan_rows;
}

// positions 0..N-1 grouped by column, stable (= a stable sort of cols), and each column's
// first place: a counting sort
extern "C" int64_t husai_group_by_column(const int64_t* cols, int64_t N, int64_t n_cols,
                                         int64_t* order, int64_t* offsets) {
    for (int64_t j = 0; j < N; ++j)
        if (cols[j] < 0 || cols[j] >= n_cols) return -1;
    std::fill(offsets, offsets + n_cols, 0);
    for (int64_t j = 0; j < N; ++j) ++offsets[cols[j]];
    int64_t start = 0;
    for (int64_t c = 0; c < n_cols; ++c) {
        const int64_t count = offsets[c];
        offsets[c] = start;
        start += count;
    }
    std::vector<int64_t> next(offsets, offsets + n_cols);
    for (int64_t j = 0; j < N; ++j) order[next[cols[j]]++] = j;
    return 0;
}

// JumpReLU's activation (husai.sae.architectures.jumprelu._JumpReLU), one pass each way.
// Forward: codes = relu(pre) * [pre > theta] and L0 = sum_f [pre > theta] per row, with
// torch's product semantics (a NaN or inf entry off the mask gives NaN, as x * 0 does).
extern "C" void husai_jumprelu_fwd(const float* pre, const float* theta, int64_t S, int64_t B,
                                   int64_t F, float* codes, float* l0) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < S * B; ++r) {
        const float* p = pre + r * F;
        const float* t = theta + (r / B) * F;
        float* c = codes + r * F;
        int64_t n = 0;
        for (int64_t f = 0; f < F; ++f) {
            const float v = p[f];
            const float rl = (v > 0.f || v != v) ? v : 0.f;  // torch.relu keeps NaN
            const bool on = v > t[f];
            c[f] = on ? rl : rl * 0.f;
            n += on;
        }
        l0[r] = (float)n;
    }
}

// Backward: grad_pre = g * [pre > theta and pre > 0]; grad_theta[s, f] =
// -(sum_b (g_l0[s, b] + theta * g) * [|pre - theta| < eps_s / 2]) / eps_s, summed over b in
// order per (seed, column block): the same result for any thread count.
extern "C" void husai_jumprelu_bwd(const float* pre, const float* theta, const float* eps,
                                   const float* g_codes, const float* g_l0, int64_t S,
                                   int64_t B, int64_t F, float* g_pre, float* g_theta) {
    const int64_t FB = 256;
    const int64_t n_blocks = (F + FB - 1) / FB;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < S * n_blocks; ++task) {
        const int64_t s = task / n_blocks, f0 = (task % n_blocks) * FB;
        const int64_t w = std::min(F, f0 + FB) - f0;
        const float half = eps[s] / 2.f;
        const float* t = theta + s * F + f0;
        float acc[FB];
        for (int64_t j = 0; j < w; ++j) acc[j] = 0.f;
        for (int64_t b = 0; b < B; ++b) {
            const int64_t at = (s * B + b) * F + f0;
            const float* p = pre + at;
            const float* g = g_codes + at;
            float* gp = g_pre + at;
            const float gl = g_l0[s * B + b];
            for (int64_t j = 0; j < w; ++j) {
                const float v = p[j], th = t[j], gj = g[j];
                gp[j] = (v > th && v > 0.f) ? gj : gj * 0.f;
                const float per_entry = gl + th * gj;
                acc[j] += std::fabs(v - th) < half ? per_entry : per_entry * 0.f;
            }
        }
        for (int64_t j = 0; j < w; ++j) g_theta[s * F + f0 + j] = -acc[j] / eps[s];
    }
}
"""
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")


def cache_dir() -> Path:
    """Where built kernels are kept: $HUSAI_CACHE_DIR/kernels (the run cache's variable)."""
    root = os.environ.get("HUSAI_CACHE_DIR") or Path.home() / ".cache" / "husai"
    return Path(root) / "kernels"


def _cpu_id() -> str:
    """The CPU's feature flags (what -march=native compiles for)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(cxx: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(f".{os.getpid()}.cpp")
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    try:
        src.write_text(SOURCE)
        cmd = [cxx, *FLAGS, str(src), "-o", str(tmp)]
        subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
        os.replace(tmp, out)
    finally:
        src.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernel library (None: disabled, no compiler, or the build failed)."""
    if os.environ.get("HUSAI_NATIVE", "1") == "0":
        return None
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        return None
    try:
        version = subprocess.run(
            [cxx, "--version"], capture_output=True, text=True, check=True, timeout=60
        )
        key = "\0".join([SOURCE, cxx, version.stdout, *FLAGS, _cpu_id()])
        path = cache_dir() / f"topk-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
        if not path.exists():
            _build(cxx, path)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:  # a damaged cached build: build it again
            _build(cxx, path)
            lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        warnings.warn(
            f"husai: native kernels unavailable, using torch ops ({detail.strip()[:200]})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.husai_topk_rows.restype = i64
    lib.husai_topk_rows.argtypes = [p, i64, i64, i64, ctypes.c_int32, p, p]
    lib.husai_group_by_column.restype = i64
    lib.husai_group_by_column.argtypes = [p, i64, i64, p, p]
    lib.husai_jumprelu_fwd.restype = None
    lib.husai_jumprelu_fwd.argtypes = [p, p, i64, i64, i64, p, p]
    lib.husai_jumprelu_bwd.restype = None
    lib.husai_jumprelu_bwd.argtypes = [p, p, p, p, p, i64, i64, i64, p, p]
    return lib


def _cpu_float32(*ts: Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in ts)


def topk_rows(pre_RF: Tensor, k: int, by_index: bool = False) -> tuple[Tensor, Tensor] | None:
    """(values [R, k], indices [R, k]) of each row's k largest entries, values descending
    (or, `by_index`, indices ascending), ties to the lower index; None where the kernel is
    unavailable or does not apply (not float32 on the CPU, k outside 1…F, NaN in a row)."""
    lib = library()
    R, F = pre_RF.shape
    if lib is None or not _cpu_float32(pre_RF) or not 0 < k <= F or R == 0:
        return None
    p = pre_RF.contiguous()
    vals = torch.empty(R, k)
    idx = torch.empty(R, k, dtype=torch.long)
    bad = lib.husai_topk_rows(p.data_ptr(), R, F, k, int(by_index), vals.data_ptr(), idx.data_ptr())
    return None if bad else (vals, idx)


def group_by_column(cols: Tensor, n_cols: int) -> tuple[Tensor, Tensor] | None:
    """(order, offsets): torch.sort(cols, stable=True).indices and each column's first place
    in that order [n_cols], by a counting sort; None where the kernel is unavailable or
    does not apply (not int64 on the CPU, a column outside 0…n_cols − 1)."""
    lib = library()
    if lib is None or cols.dtype != torch.long or cols.device.type != "cpu":
        return None
    c = cols.reshape(-1).contiguous()
    order = torch.empty(len(c), dtype=torch.long)
    offsets = torch.empty(n_cols, dtype=torch.long)
    bad = lib.husai_group_by_column(
        c.data_ptr(), len(c), n_cols, order.data_ptr(), offsets.data_ptr()
    )
    return None if bad else (order, offsets)


def jumprelu_forward(pre_SBF: Tensor, theta_SF: Tensor) -> tuple[Tensor, Tensor] | None:
    """(codes relu(pre) · 1[pre > θ] [S, B, F], L0 per input Σ_F 1[pre > θ] [S, B]) in one
    pass; None where the kernel is unavailable or does not apply (not float32 on the CPU)."""
    lib = library()
    if lib is None or not _cpu_float32(pre_SBF, theta_SF):
        return None
    S, B, F = pre_SBF.shape
    pre, theta = pre_SBF.contiguous(), theta_SF.reshape(S, F).contiguous()
    codes, l0 = torch.empty(S, B, F), torch.empty(S, B)
    lib.husai_jumprelu_fwd(
        pre.data_ptr(), theta.data_ptr(), S, B, F, codes.data_ptr(), l0.data_ptr()
    )
    return codes, l0


def jumprelu_backward(
    pre_SBF: Tensor, theta_SF: Tensor, eps_S: Tensor, grad_codes: Tensor, grad_l0: Tensor
) -> tuple[Tensor, Tensor] | None:
    """(∂/∂pre [S, B, F], ∂/∂θ [S, F]) of JumpReLU's codes and L0 (the straight-through
    gradients of `_JumpReLU`) in one pass; None where the kernel does not apply."""
    lib = library()
    args = (pre_SBF, theta_SF, eps_S, grad_codes, grad_l0)
    if lib is None or not _cpu_float32(*args):
        return None
    S, B, F = pre_SBF.shape
    pre, g = pre_SBF.contiguous(), grad_codes.contiguous()
    theta, eps = theta_SF.reshape(S, F).contiguous(), eps_S.reshape(S).contiguous()
    g_l0 = grad_l0.reshape(S, B).contiguous()
    g_pre, g_theta = torch.empty(S, B, F), torch.empty(S, F)
    lib.husai_jumprelu_bwd(
        pre.data_ptr(),
        theta.data_ptr(),
        eps.data_ptr(),
        g.data_ptr(),
        g_l0.data_ptr(),
        S,
        B,
        F,
        g_pre.data_ptr(),
        g_theta.data_ptr(),
    )
    return g_pre, g_theta
