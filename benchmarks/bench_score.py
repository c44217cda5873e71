"""One unconditional-score evaluation against the two bare BLAS GEMMs of the same shapes.

    python benchmarks/bench_score.py [--B 1024] [--K 65536] [--d 64] [--repeats 9] [--json]

The lower bound is X M^T (B x K, written to a preallocated matrix) followed by P M (B x d),
with NumPy's BLAS and its default threads. cfgphase's score is the streaming kernel plus the
O(B d) score formula (physics.mixture.score_from_mean). The two are timed interleaved, in the
same process, and medians are reported with their ratio; peak memory of the score is traced
with tracemalloc (NumPy registers its allocations there).
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np
from threadpoolctl import threadpool_info

from physics.mixture import GaussianMixture, score_from_mean
from physics.processes import OU
from solvers.kernel import THREADS, posterior_moments


def measure(B, K, d, dtype, repeats, t=1.0):
    model = GaussianMixture.random(d, classes=K, seed=0)
    process = OU()
    rng = np.random.default_rng(1)
    x = model.sample_noised(t, process, B, rng)[0]
    xs, means = x.astype(dtype), model.means.astype(dtype)
    scale, bias = model.logit_coefficients(t, process)
    S = np.empty((B, K), dtype=dtype)
    Y = np.empty((B, d), dtype=dtype)

    def gemms():
        np.matmul(xs, means.T, out=S)
        np.matmul(S, means, out=Y)

    def score():
        m = posterior_moments(xs, means, scale, bias).mean
        return score_from_mean(x, m, t, process, model.class_var)

    gemms(), score()  # warm-up and JIT
    t_gemm, t_score = [], []
    for _ in range(repeats):
        for fn, times in ((gemms, t_gemm), (score, t_score)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    tracemalloc.start()
    score()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    gemm, ours = float(np.median(t_gemm)), float(np.median(t_score))
    flops = 4.0 * B * K * d
    return dict(B=B, K=K, d=d, dtype=np.dtype(dtype).name, gemm_s=gemm, score_s=ours, ratio=ours / gemm,
                score_gflops=flops / ours / 1e9, gemm_gflops=flops / gemm / 1e9,
                score_peak_mib=peak / 2**20, bxk_matrix_mib=B * K * np.dtype(dtype).itemsize / 2**20)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=1024)
    parser.add_argument("--K", type=int, default=65536)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(args.B, args.K, args.d, dt, args.repeats) for dt in (np.float64, np.float32)]
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)" for i in threadpool_info()
            if i.get("user_api") == "blas"]
    if args.json:
        print(json.dumps(dict(rows=rows, blas=blas, kernel_threads=THREADS)))
        return
    print(f"BLAS: {', '.join(blas)}; kernel threads: {THREADS}")
    print(f"{'B':>6}{'K':>8}{'d':>5} {'dtype':<8}{'2 GEMMs [s]':>12}{'score [s]':>11}{'ratio':>7}"
          f"{'GFLOP/s':>9}{'peak [MiB]':>12}{'B x K [MiB]':>13}")
    for r in rows:
        print(f"{r['B']:>6}{r['K']:>8}{r['d']:>5} {r['dtype']:<8}{r['gemm_s']:>12.4f}{r['score_s']:>11.4f}"
              f"{r['ratio']:>7.2f}{r['score_gflops']:>9.1f}{r['score_peak_mib']:>12.1f}{r['bxk_matrix_mib']:>13.0f}")


if __name__ == "__main__":
    main()
