"""The streaming kernel's GEMM library: SciPy's OpenBLAS against Intel MKL, in one run.

    python -m benchmarks.gemm_libraries [--out FILE] [--repeats N]

Two parts, both in alternating rounds so that the libraries share the machine's state:

* ``chunks``: one thread, the kernel's two GEMMs of one chunk (a block of ROW_BLOCK rows against a
  chunk of BUFFER_BYTES of logits, inner dimension d, then back), and a square 2048 GEMM, each
  library called exactly as the kernel calls it (kernel._gemm_logits, kernel._gemm_weighted); rates
  in GFLOP/s and as fractions of that library's square rate.
* ``kernel``: whole kernel calls (kernel.posterior_moments, spread posterior, all cores) at the
  issue-21 points, with ``blas="openblas"`` and ``blas="mkl"``: medians and their ratio.

Needs the ``mkl`` wheel (``pip install cfgphase[mkl]``). Writes a JSON record with the machine's
(benchmarks.score.environment) and prints a table. Bad input: one line on stderr, exit status 2.
"""

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import score
from benchmarks.bench_score import _Parser  # one line on stderr and exit status 2 for bad input
from cfgphase.solvers.score import kernel

DEFAULT_RECORD = Path(__file__).parent / "results" / "gemm_libraries.json"
LIBRARIES = ("openblas", "mkl")
POINTS = ((1024, 4096, 32), (1024, 65536, 64), (8192, 65536, 64), (1024, 65536, 256))


def _timed(call, repeats):
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        runs.append(time.perf_counter() - start)
    return runs


def _rounds(calls, repeats, rounds=5):
    """Median seconds of each zero-argument call, timed in ``rounds`` alternating blocks after one warm-up."""
    times = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            times[name] += _timed(call, max(1, repeats // rounds))
    return {name: statistics.median(runs) for name, runs in times.items()}


def chunk_rates(dtype, repeats):
    """GFLOP/s of each library, one thread, on the kernel's chunk GEMMs for d = 32, 64, 256 and a square GEMM."""
    rng = np.random.default_rng(0)
    rows = kernel.ROW_BLOCK
    chunk = kernel.default_chunk(rows, np.dtype(dtype).itemsize, 10**9)
    calls, flops = {}, {}
    n = 2048
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    c = np.empty((n, n), dtype=dtype)
    for name in LIBRARIES:
        lib = kernel.gemm_library(name)
        gemm = lib.sgemm if dtype == np.float32 else lib.dgemm
        calls[name, "square"] = lambda gemm=gemm: kernel._gemm_weighted(gemm, a, b, c)
        flops[name, "square"] = 2.0 * n**3
        for d in (32, 64, 256):
            x, M = rng.standard_normal((rows, d)).astype(dtype), rng.standard_normal((chunk, d)).astype(dtype)
            S, T = np.empty((rows, chunk), dtype=dtype), np.empty((rows, d), dtype=dtype)
            calls[name, f"logits d={d}"] = lambda gemm=gemm, x=x, M=M, S=S: kernel._gemm_logits(gemm, x, M, S)
            calls[name, f"weighted d={d}"] = lambda gemm=gemm, M=M, S=S, T=T: kernel._gemm_weighted(gemm, S, M, T)
            flops[name, f"logits d={d}"] = flops[name, f"weighted d={d}"] = 2.0 * rows * chunk * d
    with kernel.single_threaded_blas():
        seconds = _rounds({key: call for key, call in calls.items() if key[1] != "square"}, repeats)
        seconds.update(_rounds({key: call for key, call in calls.items() if key[1] == "square"}, 10))
    out = []
    for (name, shape), s in seconds.items():
        rate = flops[name, shape] / s / 1e9
        out.append(dict(library=name, shape=shape, rows=rows, chunk=chunk, gflops=rate,
                        of_square=rate / (flops[name, "square"] / seconds[name, "square"] / 1e9)))
    return out


def kernel_times(dtype, repeats):
    """Median seconds of whole kernel calls with each library at POINTS (spread posterior: scale 0.3 / sqrt(d))."""
    rng = np.random.default_rng(1)
    out = []
    for B, K, d in POINTS:
        x, M = rng.standard_normal((B, d)).astype(dtype), rng.standard_normal((K, d)).astype(dtype)
        bias, scale = np.zeros(K, dtype=dtype), 0.3 / np.sqrt(d)
        calls = {name: (lambda name=name: kernel.posterior_moments(x, M, scale, bias, blas=name)) for name in LIBRARIES}
        seconds = _rounds(calls, max(5, repeats // (1 + B * K * d // 2**28)))
        out.append(dict(B=B, K=K, d=d, **{f"{name}_seconds": seconds[name] for name in LIBRARIES},
                        **{f"{name}_gflops": 4.0 * B * K * d / seconds[name] / 1e9 for name in LIBRARIES},
                        mkl_over_openblas=seconds["mkl"] / seconds["openblas"]))
    return out


def main(argv=None):
    p = _Parser(prog="python -m benchmarks.gemm_libraries", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_RECORD), help=f"JSON record (default {DEFAULT_RECORD})")
    p.add_argument("--repeats", type=int, default=100, help="timed chunk GEMMs per shape and library (default 100)")
    args = p.parse_args(argv)
    if args.repeats < 5:
        p.exit(2, f"{p.prog}: error: --repeats must be >= 5, got {args.repeats}\n")
    try:
        kernel.gemm_library("mkl")
    except ValueError as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    record = dict(environment=score.environment(), mkl=kernel.gemm_library("mkl").version,
                  openblas=kernel.gemm_library("openblas").version)
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        record[f"chunks_{name}"] = chunk_rates(dtype, args.repeats)
        record[f"kernel_{name}"] = kernel_times(dtype, args.repeats)
        for r in record[f"chunks_{name}"]:
            print(f"{name} {r['library']:<9}{r['shape']:<14}{r['gflops']:7.1f} GFLOP/s {100 * r['of_square']:5.0f} % "
                  "of its square", flush=True)
        for r in record[f"kernel_{name}"]:
            print(f"{name} kernel {r['B']}, {r['K']}, {r['d']}: openblas {1e3 * r['openblas_seconds']:.1f} ms, "
                  f"mkl {1e3 * r['mkl_seconds']:.1f} ms, ratio {r['mkl_over_openblas']:.2f}", flush=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
