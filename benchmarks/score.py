r"""Speed and memory of the exact score against what a user would write instead (``python -m benchmarks.bench_score``).

Every method computes the unconditional class-mean estimate :math:`\hat m_u = \mathrm{softmax}(L)M`
of eq. (6) for B particles, K classes and dimension d; the score and the guided step follow from
it in O(B d). Methods:

=============  ================================================================================
``gemm``       (a) the two bare GEMMs :math:`XM^\top` and :math:`PM` with NumPy's BLAS
``broadcast``  (b) squared distances by broadcasting a (B, K, d) array, softmax, :math:`PM`
``softmax``    (c) one GEMM for the logits, a full (B, K) softmax in NumPy, :math:`PM`
``torch``      (d) ``torch.nn.functional.scaled_dot_product_attention`` with a float mask (if installed)
``cfgphase``   (e) :func:`cfgphase.solvers.score.kernel.posterior_moments` via :class:`cfgphase.solvers.score.fields.MixtureField`
``generated``  (f) the same with the means generated chunk by chunk inside the kernel (docs/theory.md
               eq. 64; the same numbers, memory independent of K): ``generated_vs_stored`` = (f) / (e)
``blocked``    (g) only the kernel's GEMMs: both GEMMs of every chunk, in the kernel's row blocks and
               chunk lengths, on as many threads with single-threaded BLAS, and no softmax. The
               ceiling of a design that hands each chunk to the BLAS: ``vs_blocked`` = (e) / (g)
=============  ================================================================================

Two regimes: ``spread`` (t = 3 on OU: the posterior is spread over many classes) and
``condensed`` (t = 0.01, particles drawn from the target class: one class holds the posterior,
and cfgphase skips the other chunks, eq. 30). Two operations: one ``score`` evaluation and one
guided ``step`` of the reverse SDE (exact transition, eq. 12, omega = 1, fresh Gaussian noise).
The particles are float64, as the samplers hold them; every method casts them to the case's dtype
inside the timed call (cfgphase's field hands them to its kernel, whose lanes cast each block of rows).

Timings are medians of at least ``repeats`` runs in one process (more for short cases, to fill
about a second), the methods of a case timed in alternating rounds; GFLOP/s counts 4BKd. Peak
memory is measured on a separate first call: the larger of tracemalloc's peak and the growth of
the resident set's high-water mark (Linux; freed heap returned with malloc_trim, the mark reset
through /proc/self/clear_refs), which also sees BLAS, Numba and PyTorch allocations. A
configuration is skipped, with the reason, when a method's working set exceeds the memory budget
or its estimated time the time limit.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import statistics
import time
import tracemalloc

import numba as nb
import numpy as np
from threadpoolctl import threadpool_info

from cfgphase.physics.weights import guided_mean
from cfgphase.physics.mixture import GaussianMixture, GeneratedMixture
from cfgphase.physics.processes import OU
from cfgphase.solvers.score.fields import Evaluation, MixtureField
from cfgphase.solvers.score import kernel
from cfgphase.solvers.score.kernel import BUFFER_BYTES, posterior_moments, usable_cores
from cfgphase.solvers.sampling.steppers import exponential

METHODS = ("gemm", "broadcast", "softmax", "torch", "cfgphase", "generated", "blocked")
REGIMES = {"spread": 3.0, "condensed": 0.01}
OPERATIONS = ("score", "step")
#: The issue's grid.
FULL = dict(B=(1024, 8192), K=(4096, 65536, 1_000_000), d=(32, 64, 256), dtype=("float32", "float64"))
QUICK = dict(B=(256,), K=(4096,), d=(32,), dtype=("float32", "float64"))
#: Estimated cost relative to the two GEMMs, to skip what would exceed the time limit.
_COST = {"gemm": 1.0, "broadcast": 25.0, "softmax": 2.0, "torch": 2.0, "cfgphase": 1.3, "generated": 1.6,
         "blocked": 1.1}


def _working_set(method, B, K, d, itemsize):
    """Bytes a method allocates beyond its inputs (the (K, d) means and (B, d) particles)."""
    kernel = BUFFER_BYTES * usable_cores() + B * d * (2 * itemsize + 8)
    return {"gemm": B * K * itemsize, "broadcast": B * K * (d + 2) * itemsize, "softmax": 3 * B * K * itemsize,
            "torch": 3 * B * K * itemsize, "cfgphase": kernel, "generated": 2 * kernel, "blocked": kernel}[method]


def _peak_rss_bytes():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmHWM"].split()[0]) * 1024, int(fields["VmRSS"].split()[0]) * 1024


def _reset_peak():
    """Return freed heap to the system and reset the resident high-water mark (Linux)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mib(call, can_trace):
    """Peak memory of one call in MiB: the larger of tracemalloc's peak (NumPy and Python
    allocations) and the growth of the resident high-water mark (also BLAS, Numba, PyTorch)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    if can_trace:
        _reset_peak()
        rss = _peak_rss_bytes()[1]
    call()
    traced = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    resident = _peak_rss_bytes()[0] - rss if can_trace else 0
    return max(traced, resident) / 2**20


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(usable_cores())
    return torch


@nb.njit(nogil=True, cache=True)
def _lane_gemms(gemm, counter, rows, x, means, chunk, buffer, out):
    """Both GEMMs of every chunk for the blocks of ``rows`` rows that one lane takes from ``counter``, without the
    softmax pass: the lane loop of kernel._stream_blocks (one call per lane, without the GIL; the blocks taken one
    by one through kernel._take_next) around the chunk loop of kernel._stream_rows. A Python loop over the chunks
    would hold the GIL between its short GEMMs, and a woken lane could then wait for it while the caller's lane
    did every block."""
    B, K = x.shape[0], means.shape[0]
    n_blocks = -(-B // rows)
    while True:
        i = kernel._take_next(counter)
        if i >= n_blocks:
            return
        block, result = x[i * rows : (i + 1) * rows], out[i * rows : (i + 1) * rows]
        n = block.shape[0]
        for j in range(0, K, chunk):
            kc = min(chunk, K - j)
            S = buffer[: n * kc].reshape((n, kc))
            kernel._gemm_logits(gemm, block, means[j : j + kc], S)
            kernel._gemm_weighted(gemm, S, means[j : j + kc], result)


class _Estimator:
    """One method's unconditional estimate m_u(x) at fixed t, as a field for the SDE stepper."""

    def __init__(self, method, model, process, t, dtype, target):
        source = model
        if method == "generated":  # the same means as GaussianMixture.random(d, classes=K, seed=0)
            source = GeneratedMixture(model.d, model.K, class_var=model.class_var, seed=0)
        self.field = MixtureField(source, process, target=target, dtype=dtype)
        self.method, self.process, self.reference_var = method, process, model.class_var
        self.means = self.field.means if method != "generated" else model.means.astype(dtype)
        self.scale, bias = model.logit_coefficients(t, process)
        self.bias = bias.astype(dtype)
        self.a, self.gamma = float(process.a(t)), float(process.class_var(t, model.class_var))
        self.log_weights = model.log_weights.astype(dtype)
        self.S = None
        self.torch = _torch() if method == "torch" else None
        if method == "torch" and self.torch is None:
            raise ImportError("torch is not installed")
        if self.torch is not None:
            self.t_means = self.torch.from_numpy(self.means)[None]
            self.t_mask = self.torch.from_numpy(self.bias)[None, None]

    def unconditional(self, x, t):
        if self.method in ("cfgphase", "generated"):  # the field takes x as the samplers hold it, float64
            return self.field.evaluate(x, t).uncond
        x = x.astype(self.means.dtype, copy=False)
        M = self.means
        if self.method == "gemm":
            if self.S is None or self.S.shape[0] != x.shape[0]:
                self.S = np.empty((x.shape[0], M.shape[0]), dtype=M.dtype)
            np.matmul(x, M.T, out=self.S)
            return self.S @ M  # the lower bound: no logits, no softmax
        if self.method == "blocked":
            return self._blocked(x)
        if self.method == "broadcast":
            diff = x[:, None, :] - self.a * M[None, :, :]
            L = -np.einsum("bkd,bkd->bk", diff, diff) / (2 * self.gamma) + self.log_weights
            del diff
            L -= L.max(axis=1, keepdims=True)
            P = np.exp(L)
            P /= P.sum(axis=1, keepdims=True)
            return P @ M
        if self.method == "softmax":
            L = x @ M.T
            L *= self.scale
            L += self.bias
            L -= L.max(axis=1, keepdims=True)
            np.exp(L, out=L)
            L /= L.sum(axis=1, keepdims=True)
            return L @ M
        if self.method == "torch":
            q = self.torch.from_numpy(np.ascontiguousarray(x))[None]
            out = self.torch.nn.functional.scaled_dot_product_attention(q, self.t_means, self.t_means,
                                                                        attn_mask=self.t_mask, scale=self.scale)
            return out[0].numpy()
        raise ValueError(f"unknown method {self.method!r}")

    def _blocked(self, x):
        """The kernel's GEMM work alone: its row blocks and chunk length (kernel.block_layout) on its
        lanes (kernel._on_lanes), each taking the next block from a shared counter, with the kernel's GEMM
        library (kernel.gemm_library), single-threaded."""
        (B, d), K = x.shape, self.means.shape[0]
        rows, chunk, lanes = kernel.block_layout(B, K, x.dtype.itemsize)
        out, counter = np.empty_like(x), np.zeros(1, dtype=np.int64)

        library = kernel.gemm_library()
        gemm = library.sgemm if x.dtype == np.float32 else library.dgemm

        def lane():
            _lane_gemms(gemm, counter, rows, x, self.means, chunk, np.empty(rows * chunk, dtype=x.dtype), out)

        with kernel.single_threaded_blas():
            kernel._on_lanes([lane] * lanes)
        return out

    def evaluate(self, x, t):
        if self.method in ("cfgphase", "generated"):
            return self.field.evaluate(x, t)
        return Evaluation(self.field.target_mean, self.unconditional(x, t).astype(np.float64, copy=False))


def _blas_info():
    return [dict(library=i.get("internal_api"), version=i.get("version"), threads=i.get("num_threads"),
                 architecture=i.get("architecture"), filepath=i.get("filepath"))
            for i in threadpool_info() if i.get("user_api") == "blas"]


#: Vector extensions worth recording, from /proc/cpuinfo's flags.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "amx_tile")
#: The widest vector unit an OpenBLAS kernel set uses (threadpoolctl's 'architecture').
KERNEL_LEVEL = {"skylakex": 3, "cooperlake": 3, "sapphirerapids": 3, "haswell": 2, "zen": 2, "sandybridge": 1,
                "nehalem": 0, "core2": 0, "prescott": 0, "atom": 0}


def cpu_info():
    """CPU model, its vector extensions and their level (0 SSE, 1 AVX, 2 AVX2, 3 AVX-512), from /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    level = 3 if "avx512f" in flags else 2 if "avx2" in flags else 1 if "avx" in flags else 0
    return dict(model=model, vector_extensions=[f for f in VECTOR_FLAGS if f in flags], vector_level=level)


def kernel_warnings(cpu, blas):
    """Warnings where a BLAS runs kernels older than the CPU supports (e.g. OPENBLAS_CORETYPE=Haswell on
    an AVX-512 machine), or may (MKL with MKL_ENABLE_INSTRUCTIONS or MKL_CBWR set): the peak, and every
    fraction of it, would then understate the machine."""
    out = []
    for lib in blas:
        level = KERNEL_LEVEL.get(str(lib.get("architecture") or "").lower())
        if level is not None and level < cpu["vector_level"]:
            out.append(f"{lib['library']} runs its {lib['architecture']} kernels on a CPU with "
                       f"{'AVX-512' if cpu['vector_level'] == 3 else 'AVX2'}"
                       + (f" (OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']})"
                          if os.environ.get("OPENBLAS_CORETYPE") else ""))
        # MKL picks its code path at run time and threadpoolctl reports none; these variables can hold it back
        for name in MKL_LIMITS if lib.get("library") == "mkl" else ():
            if os.environ.get(name):
                out.append(f"mkl may run older kernels than the CPU supports: {name}={os.environ[name]}")
    return out


#: Environment variables that restrict MKL's code path (its instruction set; its reproducible branches).
MKL_LIMITS = ("MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def peak_gflops(dtype, n=2048, repeats=5):
    """The machine's GEMM throughput: a square n x n x n GEMM with all threads, NumPy's BLAS or the
    kernel's GEMM library (whichever is faster), the best of ``repeats`` runs, in GFLOP/s (2 n^3 per
    product). Every method is reported as a fraction of it (4 B K d flops per score evaluation)."""
    runs = []
    for square in (_square_gemm, _square_gemm_kernel):
        gemm = square(dtype, n)
        gemm()  # warm up: threads started, pages touched
        for _ in range(repeats):
            start = time.perf_counter()
            gemm()
            runs.append(time.perf_counter() - start)
    return 2.0 * n**3 / min(runs) / 1e9


def _square_gemm(dtype, n):
    """A zero-argument callable: one n x n x n GEMM with all threads (NumPy's BLAS), 2 n^3 flops."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype=dtype)
    return lambda: np.matmul(a, b, out=out)


def _square_gemm_kernel(dtype, n):
    """A zero-argument callable: one n x n x n GEMM with the kernel's GEMM library (kernel.gemm_library), its rows
    shared out to the kernel's lanes (kernel._on_lanes), each single-threaded as in the kernel, 2 n^3 flops."""
    library = kernel.gemm_library()
    gemm = library.sgemm if dtype == np.float32 else library.dgemm
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype=dtype)
    lanes = usable_cores()
    parts = [slice(n * i // lanes, n * (i + 1) // lanes) for i in range(lanes)]

    def call():
        pieces = iter(parts)

        def lane():
            for rows in pieces:
                kernel._gemm_weighted(gemm, a[rows], b, out[rows])

        with kernel.single_threaded_blas():
            kernel._on_lanes([lane] * lanes)

    return call


def environment():
    """Machine, libraries and thread settings behind a benchmark run."""
    import numba

    torch = _torch()
    library = kernel.gemm_library()  # loaded before the BLAS libraries are listed
    cpu, blas = cpu_info(), _blas_info()
    return dict(host=platform.node(), cpu=cpu["model"], vector_extensions=cpu["vector_extensions"],
                cores=os.cpu_count(), usable_cores=usable_cores(), numpy=np.__version__, numba=numba.__version__,
                torch=None if torch is None else torch.__version__,
                torch_threads=None if torch is None else torch.get_num_threads(), blas=blas,
                openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"), kernel_warnings=kernel_warnings(cpu, blas),
                mkl_limits={name: os.environ.get(name) for name in MKL_LIMITS},
                kernel_gemm=dict(library=library.name, version=library.version, filepath=library.path),
                kernel="one nogil Numba stream (single-threaded BLAS GEMMs + softmax pass) per lane over the row "
                       f"blocks it takes, {usable_cores()} threads; BLAS limited to 1 thread inside the kernel")


def _gemm_rate(dtype):
    """GFLOP/s of the two GEMMs at a mid size, to estimate run times before running."""
    rng = np.random.default_rng(0)
    x, M = rng.standard_normal((1024, 64)).astype(dtype), rng.standard_normal((8192, 64)).astype(dtype)
    S = np.empty((1024, 8192), dtype=dtype)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        np.matmul(x, M.T, out=S)
        _ = S @ M
        best = min(best, time.perf_counter() - start)
    return 4 * 1024 * 8192 * 64 / best / 1e9


def run(B=FULL["B"], K=FULL["K"], d=FULL["d"], dtypes=FULL["dtype"], methods=METHODS, regimes=tuple(REGIMES),
        operations=OPERATIONS, repeats=3, max_seconds=30.0, memory_gb=None, progress=None, peak_size=2048):
    """Measure every (B, K, d, dtype, regime, operation, method); a list of result dicts.

    Skipped cases carry ``skipped`` with the reason. ``progress(text)`` is called before each of
    the len(B) len(K) len(d) len(dtypes) len(regimes) len(operations) len(methods) cases.
    """
    for name, value in (("repeats", repeats), ("max_seconds", max_seconds)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    for name, values, allowed in (("methods", methods, METHODS), ("regimes", regimes, tuple(REGIMES)),
                                  ("operations", operations, OPERATIONS), ("dtypes", dtypes, ("float32", "float64"))):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {list(values)}")
    for name, values in (("B", B), ("K", K), ("d", d)):
        if not values or any(int(v) != v or v < 1 for v in values):
            raise ValueError(f"{name} must be positive integers, got {list(values)}")
    if memory_gb is None:
        memory_gb = 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    can_trace = _reset_peak()
    process = OU()
    _warm_up(methods, dtypes, process)
    rates = {dt: _gemm_rate(np.dtype(dt)) for dt in dtypes}
    peaks = {dt: peak_gflops(np.dtype(dt), n=peak_size) for dt in dtypes}
    rows = []
    for d_ in d:
        for K_ in K:
            model = None
            for B_ in B:
                for dt in dtypes:
                    itemsize = np.dtype(dt).itemsize
                    flops = 4.0 * B_ * K_ * d_
                    for regime in regimes:
                        t = REGIMES[regime]
                        for op in operations:
                            case = {}
                            for method in methods:
                                row = dict(B=B_, K=K_, d=d_, dtype=dt, regime=regime, t=t, operation=op,
                                           method=method)
                                rows.append(row)
                                need = (_working_set(method, B_, K_, d_, itemsize) + K_ * d_ * (8 + itemsize)) / 2**30
                                estimate = flops / (rates[dt] * 1e9) * _COST[method]
                                if method == "torch" and _torch() is None:
                                    row["skipped"] = "torch is not installed"
                                elif need > memory_gb:
                                    row["skipped"] = f"needs {need:.1f} GiB > memory budget {memory_gb:.1f} GiB"
                                elif estimate > max_seconds:
                                    row["skipped"] = f"estimated {estimate:.0f} s > max_seconds {max_seconds:g}"
                                else:
                                    case[method] = row
                            if case and model is None:
                                model = GaussianMixture.random(d_, classes=K_, seed=0)

                            def announce(method):
                                if progress is not None:
                                    progress(f"B={B_} K={K_} d={d_} {dt} {regime} {op} {method}")

                            for method in methods:
                                if method not in case:
                                    announce(method)
                            results, peak = _measure_case(list(case), model, process, t, dt, B_, op, repeats,
                                                          can_trace, announce, peak_size)
                            for method, result in results.items():
                                gflops = flops / result["seconds"] / 1e9
                                case[method].update(result, gflops=gflops, peak_gflops=peak,
                                                    peak_fraction=gflops / peak, run_peak_gflops=peaks[dt])
            del model
    return rows


def _warm_up(methods, dtypes, process):
    """Compile and initialise every method on a tiny problem, so that no measurement pays for it."""
    model = GaussianMixture.random(8, classes=64, seed=0)
    x = model.sample_noised(1.0, process, 16, np.random.default_rng(0))[0]
    for method in methods:
        if method == "torch" and _torch() is None:
            continue
        for dt in dtypes:
            _Estimator(method, model, process, 1.0, np.dtype(dt), target=0).unconditional(x, 1.0)


#: Pause before each block of timed calls: OpenBLAS's worker threads spin for about 0.1 s after a
#: multithreaded call, and would otherwise compete with the next method's threads.
SETTLE_SECONDS = 0.25
#: Timed calls of the methods of one case alternate in this many rounds.
ROUNDS = 3


def _call(method, model, process, t, dtype, B, operation):
    """One method's score evaluation or guided step as a zero-argument callable, and its estimator."""
    rng = np.random.default_rng(1)
    x = model.sample_noised(t, process, B, rng, target=0)[0]
    est = _Estimator(method, model, process, t, np.dtype(dtype), target=0)
    t_next = 0.99 * t
    if operation == "score":
        def call():
            return est.unconditional(x, t)
    else:
        def call():
            ev = est.evaluate(x, t)
            return exponential(est, None, t, t_next, x, ev, guided_mean(ev.cond, ev.uncond, 1.0),
                               rng.standard_normal(x.shape))
    return call, est, x


def _measure_case(methods, model, process, t, dtype, B, operation, repeats, can_trace, announce=None, peak_size=2048):
    """Time the methods of one case; ({method: result dict}, the case's GEMM peak in GFLOP/s).

    Each method first runs once for its peak memory and once more to size its runs: at least
    ``repeats`` and about a second in all (short cases are noisy). The remaining runs alternate
    between the methods in ROUNDS blocks, so that load from elsewhere on a shared machine slows
    every method of a case alike and their ratios stay meaningful; the median of all timed runs
    is reported. A square GEMM of side ``peak_size`` takes part in the same rounds, once with NumPy's
    BLAS and once with the kernel's GEMM library on the kernel's threads: the faster median rate
    is the peak that the case's fractions refer to (a peak measured once at the start of a run is
    no reference on a machine whose speed drifts: on a shared VM it moved by 2x within one run,
    and fractions of it exceeded 100 %).
    """
    calls, results, times, remaining = {}, {}, {}, {}
    if methods:
        for name, square in (("peak", _square_gemm), ("peak_kernel", _square_gemm_kernel)):
            gemm = square(np.dtype(dtype), peak_size)
            gemm()
            calls[name] = (gemm, None, None)
            start = time.perf_counter()
            gemm()
            first = time.perf_counter() - start
            times[name] = [first]
            remaining[name] = max(repeats, min(50, math.ceil(1.0 / max(first, 1e-6)))) - 1
    for method in methods:
        if announce is not None:
            announce(method)
        time.sleep(SETTLE_SECONDS)
        call, est, x = calls[method] = _call(method, model, process, t, dtype, B, operation)
        results[method] = dict(peak_mib=_peak_mib(call, can_trace))  # the first call allocates every buffer
        start = time.perf_counter()
        call()
        first = time.perf_counter() - start
        times[method] = [first]
        remaining[method] = max(repeats, min(50, math.ceil(1.0 / max(first, 1e-6)))) - 1
    block = {method: math.ceil(runs / ROUNDS) for method, runs in remaining.items()}
    for _ in range(ROUNDS):
        for method in remaining:
            todo = min(block[method], remaining[method])
            if todo == 0:
                continue
            remaining[method] -= todo
            call = calls[method][0]
            time.sleep(SETTLE_SECONDS)
            for _ in range(todo):
                start = time.perf_counter()
                call()
                times[method].append(time.perf_counter() - start)
    for method in methods:
        seconds = statistics.median(times[method])
        results[method].update(seconds=seconds, particle_steps_per_s=B / seconds, repeats=len(times[method]))
        if method == "cfgphase":
            _, est, x = calls[method]
            res = posterior_moments(x.astype(dtype), est.means, est.scale, est.bias, hint=0)
            results[method].update(skipped_chunks=res.skipped, mean_entropy=float(res.entropy.mean()))
    # the faster of NumPy's BLAS and the kernel's GEMM library (they differ when the kernel runs MKL)
    peak = 2.0 * peak_size**3 / min(statistics.median(times[n]) for n in ("peak", "peak_kernel")) / 1e9 \
        if methods else math.nan
    return results, peak


def ratios(rows):
    """Per case, cfgphase's time over the bare GEMMs' (a), over the best of (c) and (d) and over its own
    GEMMs' (g), and the generated means' time over the stored ones' ((f) / (e))."""
    table = {}
    for r in rows:
        if "seconds" in r:
            key = (r["B"], r["K"], r["d"], r["dtype"], r["regime"], r["operation"])
            table.setdefault(key, {})[r["method"]] = r["seconds"]
    out = []
    for key, times in table.items():
        if "cfgphase" not in times:
            continue
        rival = [times[m] for m in ("softmax", "torch") if m in times]
        out.append(dict(zip(("B", "K", "d", "dtype", "regime", "operation"), key),
                        vs_gemm=times["cfgphase"] / times["gemm"] if "gemm" in times else None,
                        vs_best_rival=times["cfgphase"] / min(rival) if rival else None,
                        vs_blocked=times["cfgphase"] / times["blocked"] if "blocked" in times else None,
                        generated_vs_stored=times["generated"] / times["cfgphase"] if "generated" in times else None))
    return out


def record(rows):
    """The JSON-ready record of a run: environment, every row, and the ratios."""
    return dict(environment=environment(), results=rows, ratios=ratios(rows))


def report(rec):
    """A plain-text table of a :func:`record`: every case, then cfgphase's ratios."""
    env = rec["environment"]
    blas = ", ".join(f"{b['library']} {b['version']} ({b['threads']} threads, {b['architecture']})" for b in env["blas"])
    lines = [f"cfgphase bench: {env['cpu']} ({', '.join(env.get('vector_extensions', []))}), "
             f"{env['usable_cores']} usable cores; BLAS: {blas}; kernel's GEMMs: "
             f"{env.get('kernel_gemm', {}).get('library', 'openblas')}; numba {env['numba']}; "
             f"torch {env['torch'] or 'not installed'}"]
    lines += [f"  WARNING: {w}" for w in env.get("kernel_warnings", [])]
    lines.append(f"  {'B':>5}{'K':>9}{'d':>5} {'dtype':<8}{'regime':<10}{'op':<6}{'method':<10}{'time [s]':>10}"
                 f"{'GFLOP/s':>9}{'of peak':>9}{'particle-steps/s':>17}{'peak [MiB]':>11}")
    for r in rec["results"]:
        head = f"  {r['B']:>5}{r['K']:>9}{r['d']:>5} {r['dtype']:<8}{r['regime']:<10}{r['operation']:<6}{r['method']:<10}"
        if "skipped" in r:
            lines.append(f"{head}skipped: {r['skipped']}")
        else:
            peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
            fraction = f"{100 * r['peak_fraction']:.0f} %" if r.get("peak_fraction") is not None else "n/a"
            lines.append(f"{head}{r['seconds']:>10.4f}{r['gflops']:>9.1f}{fraction:>9}{r['particle_steps_per_s']:>17.0f}"
                         f"{peak:>11}")
    lines.append("  cfgphase time over (a) the bare GEMMs and over the faster of (c) NumPy softmax and (d) torch:")
    for r in rec["ratios"]:
        vs_gemm = "n/a" if r["vs_gemm"] is None else f"{r['vs_gemm']:.2f}"
        vs_rival = "n/a" if r["vs_best_rival"] is None else f"{r['vs_best_rival']:.2f}"
        generated = "" if r.get("generated_vs_stored") is None else \
            f"   generated / stored means {r['generated_vs_stored']:.2f}"
        generated += "" if r.get("vs_blocked") is None else f"   vs its own GEMMs (g) {r['vs_blocked']:.2f}"
        lines.append(f"  {r['B']:>5}{r['K']:>9}{r['d']:>5} {r['dtype']:<8}{r['regime']:<10}{r['operation']:<6}"
                     f"vs (a) {vs_gemm:>6}   vs best of (c), (d) {vs_rival:>6}{generated}")
    return "\n".join(lines)


def readme_table(rec):
    """The README's performance table (markdown) and target summary from a :func:`record`.

    One row per (B, K, d), guided SDE step: cfgphase's time in the spread regime, its ratio to
    the bare GEMMs (a) in both regimes, the larger of its two regimes' ratios to the faster of
    (c), (d), and the float64 spread peak memory of cfgphase and (a). "–": not measured (skipped).
    """
    rows = {(r["B"], r["K"], r["d"], r["dtype"], r["regime"], r["operation"], r["method"]): r
            for r in rec["results"] if "seconds" in r}
    ratio = {(r["B"], r["K"], r["d"], r["dtype"], r["regime"], r["operation"]): r for r in rec["ratios"]}

    def pair(f):
        return " / ".join(f(dt) for dt in ("float32", "float64"))

    def fmt(value, spec):
        return "–" if value is None else format(value, spec)

    lines = ["| B | K | d | cfgphase step f32 / f64 [ms] | of peak, spread f32 / f64 | vs (a) spread f32 / f64 "
             "| vs (a) condensed f32 / f64 | vs best of (c),(d) f32 / f64 | peak MiB cfgphase / (a) f64 |",
             "|---|---|---|---|---|---|---|---|---|"]
    shapes = sorted({k[:3] for k in rows}, key=lambda s: (s[1], s[0], s[2]))
    for B, K, d in shapes:
        def get(dt, regime, method, field="seconds"):
            r = rows.get((B, K, d, dt, regime, "step", method))
            return None if r is None else r[field]

        def vs(dt, regime, key):
            r = ratio.get((B, K, d, dt, regime, "step"))
            return None if r is None else r[key]

        def rival(dt):
            values = [vs(dt, g, "vs_best_rival") for g in REGIMES]
            values = [v for v in values if v is not None]
            return max(values) if values else None

        ms = pair(lambda dt: fmt(None if get(dt, "spread", "cfgphase") is None else 1e3 * get(dt, "spread", "cfgphase"),
                                 ".1f"))
        peak = " / ".join(fmt(get("float64", "spread", m, "peak_mib"), ".0f") for m in ("cfgphase", "gemm"))
        fraction = pair(lambda dt: fmt(None if get(dt, "spread", "cfgphase", "peak_fraction") is None
                                       else 100 * get(dt, "spread", "cfgphase", "peak_fraction"), ".0f")) + " %"
        lines.append(f"| {B} | {K:,} | {d} | {ms} | {fraction} | {pair(lambda dt: fmt(vs(dt, 'spread', 'vs_gemm'), '.2f'))} | "
                     f"{pair(lambda dt: fmt(vs(dt, 'condensed', 'vs_gemm'), '.2f'))} | "
                     f"{pair(lambda dt: fmt(rival(dt), '.2f'))} | {peak} |")
    summary = []
    for op in OPERATIONS:
        def measured(key, regimes=tuple(REGIMES)):
            return [r[key] for r in rec["ratios"]
                    if r["operation"] == op and r["regime"] in regimes and r[key] is not None]

        spread, condensed, rivals = measured("vs_gemm", ("spread",)), measured("vs_gemm", ("condensed",)), \
            measured("vs_best_rival")
        summary.append(f"{op}: spread within 1.3x of (a) in {sum(v <= 1.3 for v in spread)} of {len(spread)} cases "
                       f"(max {max(spread, default=float('nan')):.2f}); condensed faster than (a) in "
                       f"{sum(v < 1 for v in condensed)} of {len(condensed)} (max {max(condensed, default=float('nan')):.2f}); "
                       f"faster than the best of (c), (d) in {sum(v < 1 for v in rivals)} of {len(rivals)} "
                       f"(max {max(rivals, default=float('nan')):.2f})")
    summary += peak_targets(rec)
    return "\n".join(lines + [""] + summary)


def peak_targets(rec):
    """The performance targets against the machine's GEMM peak (spread regime, score evaluation):
    at least 85 % at B >= 1024, K >= 65536, d >= 64; at least 70 % at (1024, 4096, 32); faster than
    torch SDPA at every measured point. One line per target with the cases behind it."""
    rows = [r for r in rec["results"] if "seconds" in r and r["regime"] == "spread" and r["operation"] == "score"]
    ours = {(r["B"], r["K"], r["d"], r["dtype"]): r for r in rows if r["method"] == "cfgphase"}
    torch = {(r["B"], r["K"], r["d"], r["dtype"]): r for r in rows if r["method"] == "torch"}
    large = [r["peak_fraction"] for k, r in ours.items() if k[0] >= 1024 and k[1] >= 65536 and k[2] >= 64
             and r.get("peak_fraction") is not None]
    small = [r["peak_fraction"] for k, r in ours.items() if k[:3] == (1024, 4096, 32) and r.get("peak_fraction")]
    rivals = [ours[k]["seconds"] / torch[k]["seconds"] for k in ours if k in torch]
    lines = [f"of the GEMM peak, B >= 1024, K >= 65536, d >= 64: at least 85 % in {sum(f >= 0.85 for f in large)} "
             f"of {len(large)} cases (min {100 * min(large, default=float('nan')):.0f} %)",
             f"of the GEMM peak at (1024, 4096, 32): at least 70 % in {sum(f >= 0.70 for f in small)} of {len(small)} "
             f"(min {100 * min(small, default=float('nan')):.0f} %)",
             f"faster than torch SDPA in {sum(v < 1 for v in rivals)} of {len(rivals)} cases "
             f"(max time ratio {max(rivals, default=float('nan')):.2f})"]
    return lines
