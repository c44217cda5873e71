r"""Streaming exact-score kernel: the class posterior of a Gaussian mixture as attention.

For particles :math:`X` (B, d), class means :math:`M` (K, d), a scale :math:`\beta` and a
bias :math:`b` (K,), the logits are :math:`L = \beta X M^\top + b` (docs/theory.md eq. 5) and the
kernel returns, per row, the softmax average of the means
:math:`\hat m = \mathrm{softmax}(L) M` (eq. 6), the log-partition :math:`\log\sum_k e^{L_k}`, the
posterior entropy :math:`-\sum_k p_k \log p_k` and the index of the largest logit.

The K axis is processed in chunks with an online log-sum-exp (eq. 7): a running maximum
:math:`m`, running sum :math:`l = \sum e^{L-m}`, running :math:`w = \sum e^{L-m}(L-m)` and an
unnormalised accumulator :math:`Y = \sum e^{L-m}\mu`, all rescaled by :math:`e^{m-m'}` when the
maximum grows. Memory is O(B d + K d + threads B_block chunk): never a B x K matrix, never a
B x K x d broadcast. Both GEMMs of a chunk (:math:`X M_c^\top` and :math:`P_c M_c`) go to BLAS
from Python; the per-row softmax pass is a Numba kernel with no BLAS inside. A chunk whose
logits are all far below the running maximum is skipped after its first GEMM, with a bound on
what is lost (eq. 30); the running maximum can be seeded with a hinted class. In float32 the
GEMMs, logits and exponentials are single precision and the sums float64 (eq. 31).

Parallelism is over row blocks: each of ``threads`` Python threads streams all K chunks for
its own block of particles, calling single-threaded BLAS and the ``nogil`` Numba pass. No two
thread pools ever alternate: with multithreaded BLAS followed by a ``prange`` pass, OpenBLAS's
and Numba's idle threads spin against each other and the kernel ran 2.5-4x slower than the
two bare GEMMs on 2 cores; row blocks measured 1.2x (benchmarks/bench_score.py).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload
from threadpoolctl import ThreadpoolController

#: Target size in bytes of each thread's (B_block, chunk) logit buffer (about an L2 cache).
BUFFER_BYTES = 2**20
#: Largest block of rows one task streams over all classes; blocks are spread over the threads.
ROW_BLOCK = 512
#: Default number of worker threads.
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_BLAS = ThreadpoolController()
_POOL: dict[int, ThreadPoolExecutor] = {}
# Fast-math flags without 'reassoc' and 'afn': the Cody-Waite reduction in _exp_nonpositive
# relies on the order of its subtractions.
_EXACT_MATH = {"nnan", "ninf", "nsz", "contract", "arcp"}


@intrinsic
def _int64_bits_as_float64(typingctx, bits):
    """Reinterpret the bits of an int64 as a float64 (an LLVM bitcast; vectorises)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


@intrinsic
def _fmax(typingctx, a, b):
    """max(a, b) of two floats of one type as LLVM's maxnum with fast-math flags.

    Numba lowers ``max`` to a compare and a select without fast-math flags, which LLVM refuses
    to vectorise as a reduction (a row maximum ran 10x slower than this); maxnum vectorises.
    """
    if not (isinstance(a, types.Float) and a == b):
        return None
    sig = a(a, b)

    def codegen(context, builder, signature, args):
        lty = context.get_value_type(signature.return_type)
        name = "llvm.maxnum.f32" if signature.return_type.bitwidth == 32 else "llvm.maxnum.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lty, [lty, lty]), name)
        return builder.call(fn, args, fastmath=("fast",))

    return sig, codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # low 32 bits zero: n * _LN2_HI is exact for |n| < 2**20
_LN2_LO = 1.90821492927058770002e-10


@nb.njit(fastmath=_EXACT_MATH, cache=True)
def _exp_nonpositive(z):
    """exp(z) for z <= 0 to about 1 ulp, branch-free so that LLVM vectorises the caller's loop.

    Numba's np.exp is a scalar libm call (SVML needs a patched LLVM that pip's llvmlite lacks);
    in the softmax pass it cost as much as both GEMMs. Cody-Waite reduction z = n ln2 + r,
    |r| <= ln2/2, a degree-12 Taylor polynomial (truncation < 2e-16), and 2**n assembled in
    the exponent bits. Inputs below -708 are clamped (result ~3e-308, negligible in any sum).
    """
    z = _fmax(z, -708.0)
    n = np.floor(z * _LOG2E + 0.5)
    r = z - n * _LN2_HI - n * _LN2_LO
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _int64_bits_as_float64((np.int64(n) + 1023) << 52)


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    """Reinterpret the bits of an int32 as a float32 (an LLVM bitcast; vectorises)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return sig, codegen


_LOG2E_32 = np.float32(_LOG2E)
_LN2_HI_32 = np.float32(0.693145751953125)  # 12 significant bits: n * _LN2_HI_32 is exact for |n| < 2**11
_LN2_LO_32 = np.float32(1.428606765330187e-06)


@nb.njit(fastmath=_EXACT_MATH, cache=True)
def _exp_nonpositive32(z):
    """float32 exp(z) for z <= 0 to about 1 ulp (the float32 analogue of _exp_nonpositive).

    Degree-7 Taylor polynomial on |r| <= ln2/2 (truncation < 6e-9), 2**n in the exponent bits;
    inputs below -87 (the smallest normal float32) are clamped.
    """
    z = _fmax(z, np.float32(-87.0))
    n = np.floor(z * _LOG2E_32 + np.float32(0.5))  # a float32: math.floor would give an int64
    r = z - n * _LN2_HI_32 - n * _LN2_LO_32
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _int32_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))


def _exp_weight(z):
    """exp(z), z <= 0, in the precision of z (dispatched at compile time below)."""
    raise NotImplementedError("only callable from Numba")


@overload(_exp_weight)
def _exp_weight_overload(z):
    if isinstance(z, types.Float) and z.bitwidth == 32:
        return lambda z: _exp_nonpositive32(z)
    return lambda z: _exp_nonpositive(z)


@nb.njit(nogil=True, fastmath=True, cache=True)
def _chunk_max(S, bias, scale, run_max, cmax):
    """Per-row largest logit of the chunk into ``cmax``; returns max over rows of cmax - run_max."""
    B, kc = S.shape
    lead = -np.inf
    for i in range(B):
        c = S[i, 0] * scale + bias[0]
        for j in range(1, kc):
            c = _fmax(c, scale * S[i, j] + bias[j])
        cmax[i] = c
        lead = max(lead, c - run_max[i])
    return lead


@nb.njit(nogil=True, fastmath=True, cache=True)
def _softmax_pass(S, rows, bias, scale, cmax, k0, run_max, run_sum, run_w, run_arg, Y, T, fold_T):
    """One chunk of the online softmax (eq. 7), in place, for the block rows ``rows``.

    Row i of S (n, kc) belongs to block row g = rows[i]: it holds x_g M_c^T on entry and the
    weights exp(L - m) on exit, computed in S's precision (scale, bias and run_max share it);
    cmax holds each block row's largest logit of the chunk (:func:`_chunk_max`), and the
    running statistics, Y and T are indexed by block row. T (B, d) holds the previous computed
    chunk's P M_c product, folded into Y before the rescaling when ``fold_T``. Sums accumulate
    in float64.
    """
    n, kc = S.shape
    d = Y.shape[1]
    for i in range(n):
        g = rows[i]
        m_old = run_max[g]
        r = 1.0
        if cmax[g] > m_old:
            for j in range(kc):
                if scale * S[i, j] + bias[j] == cmax[g]:
                    run_arg[g] = k0 + j
                    break
            if run_sum[g] > 0.0:
                r = math.exp(float(m_old) - float(cmax[g]))
                run_w[g] = r * (run_w[g] + (float(m_old) - float(cmax[g])) * run_sum[g])
                run_sum[g] *= r
            run_max[g] = cmax[g]
        m = run_max[g]
        if fold_T:
            for l in range(d):
                Y[g, l] = (Y[g, l] + T[g, l]) * r
        elif r != 1.0:
            for l in range(d):
                Y[g, l] *= r
        s = 0.0
        w = 0.0
        for j in range(kc):
            z = scale * S[i, j] + bias[j] - m
            e = _exp_weight(z)
            S[i, j] = e
            s += e
            w += e * z
        run_sum[g] += s
        run_w[g] += w


class PosteriorMoments(NamedTuple):
    """Output of :func:`posterior_moments`; every array has leading dimension B."""

    mean: np.ndarray  #: (B, d) posterior average of the means, eq. (6)
    log_partition: np.ndarray  #: (B,) log sum_k exp(L_k), float64
    entropy: np.ndarray  #: (B,) posterior entropy in nats, float64
    argmax: np.ndarray  #: (B,) int64 index of the largest logit (Bayes classifier)
    skipped: float = 0.0  #: fraction of (particle, chunk) pairs skipped as negligible (eq. 30)


#: All skipped chunks together hold less than this fraction of each row's posterior weight (eq. 30).
SKIP_WEIGHT = 1e-12
#: Below this fraction of a block's rows still active in a chunk, only those rows are processed.
SUBSET = 0.5


def _stream_rows(x, means, scale, bias, chunk, hint, skip, out):
    """Stream all K chunks for one block of rows; writes into the views in ``out``.

    Returns the number of (row, chunk) pairs skipped (eq. 30): after the first GEMM of a chunk,
    a row whose largest logit there is below its running maximum by more than log(K/SKIP_WEIGHT)
    skips the chunk's weights and second GEMM; if every row does, the chunk is skipped, and if
    fewer than ``SUBSET`` of them remain, only those are gathered and processed. All skipped
    pairs of a row together hold less than SKIP_WEIGHT of its posterior weight.
    """
    Y, log_partition, entropy, run_arg = out
    B, d = x.shape
    K = means.shape[0]
    buffer = np.empty(B * chunk, dtype=x.dtype)
    T = np.empty((B, d), dtype=x.dtype)
    cmax = np.empty(B, dtype=x.dtype)
    run_sum = np.zeros(B)
    run_w = np.zeros(B)
    if hint is None:
        run_max = np.full(B, -np.inf, dtype=x.dtype)
    else:  # start from the hinted class's logit: its own chunk is never skipped
        run_max = (scale * np.einsum("ij,ij->i", x, means[hint]) + bias[hint]).astype(x.dtype)
        run_arg[:] = hint
    Y[...] = 0
    every_row = np.arange(B)
    threshold = -math.log(K / SKIP_WEIGHT)
    pending, skipped = False, 0
    for k0 in range(0, K, chunk):
        Mc, cbias = means[k0 : k0 + chunk], bias[k0 : k0 + chunk]
        kc = Mc.shape[0]
        S = buffer[: B * kc].reshape(B, kc)
        np.matmul(x, Mc.T, out=S)
        lead = _chunk_max(S, cbias, scale, run_max, cmax)
        if skip and lead < threshold:
            skipped += B
            continue
        active = np.flatnonzero(cmax - run_max >= threshold) if skip else every_row
        if active.size < SUBSET * B:
            if pending:  # the folded product belongs to every row
                Y += T
                pending = False
            rows_S = S[active]
            _softmax_pass(rows_S, active, cbias, scale, cmax, k0, run_max, run_sum, run_w, run_arg, Y, T, False)
            Y[active] += rows_S @ Mc
            skipped += B - active.size
            continue
        _softmax_pass(S, every_row, cbias, scale, cmax, k0, run_max, run_sum, run_w, run_arg, Y, T, pending)
        np.matmul(S, Mc, out=T)
        pending = True
    if pending:
        Y += T
    with np.errstate(invalid="ignore", divide="ignore"):  # non-finite x gives NaN rows, by design
        Y /= run_sum[:, None].astype(x.dtype)
        log_sum = np.log(run_sum)
        log_partition[:] = run_max + log_sum
        entropy[:] = log_sum - run_w / run_sum
    return skipped


def default_chunk(rows, itemsize, K):
    """Chunk length that keeps a (rows, chunk) logit buffer near BUFFER_BYTES (at least 64)."""
    return int(min(K, max(64, BUFFER_BYTES // (max(rows, 1) * itemsize))))


def posterior_moments(x, means, scale, bias, chunk=None, threads=None, hint=None, skip=True):
    r"""Softmax-weighted class means and posterior statistics, streamed over K (eqs. 5-7, 30).

    Parameters
    ----------
    x : ndarray (B, d), float64 or float32
        Particles. ``means`` must have the same dtype; that dtype is used for both GEMMs, for
        the logits and weights of the softmax pass and for the returned ``mean``; the running
        sums and the returned statistics are float64.
    means : ndarray (K, d)
    scale : float
        :math:`\beta` in :math:`L = \beta X M^\top + b`.
    bias : ndarray (K,)
    chunk : int, optional
        Classes per chunk; default keeps each thread's buffer near ``BUFFER_BYTES``.
    threads : int, optional
        Worker threads, each owning a block of rows (default: the usable cores).
    hint : int or ndarray (B,) of int, optional
        A class likely to dominate each row's posterior (e.g. the guidance target). Its logit
        seeds the running maximum, so that chunks can be skipped from the start.
    skip : bool
        Skip chunks whose weight is below ``SKIP_WEIGHT`` of every row's posterior (eq. 30).

    Returns
    -------
    PosteriorMoments
    """
    x = np.ascontiguousarray(x)
    means = np.ascontiguousarray(means)
    if x.dtype != means.dtype or x.dtype not in (np.float32, np.float64):
        raise ValueError(f"x and means must share dtype float32 or float64, got {x.dtype}, {means.dtype}")
    B, d = x.shape
    K = means.shape[0]
    bias = np.ascontiguousarray(bias, dtype=x.dtype)
    if bias.shape != (K,) or means.shape[1] != d:
        raise ValueError(f"shapes do not match: x {x.shape}, means {means.shape}, bias {bias.shape}")
    if hint is not None:
        hint = np.broadcast_to(np.asarray(hint), (B,))
        if hint.dtype.kind not in "iu" or np.any(hint < 0) or np.any(hint >= K):
            raise ValueError(f"hint must hold class indices in [0, {K - 1}]")
    threads = max(1, min(THREADS if threads is None else int(threads), B))
    # at most ROW_BLOCK rows per task: with more, the buffer would force chunks too short for an
    # efficient GEMM (B = 8192 measured 1.6-2x the bare GEMMs with one 4096-row block per thread)
    rows = min(-(-B // threads), ROW_BLOCK)
    chunk = default_chunk(rows, x.dtype.itemsize, K) if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    out = (
        np.empty((B, d), dtype=x.dtype),
        np.empty(B),
        np.empty(B),
        np.zeros(B, dtype=np.int64),
    )
    blocks = [slice(i, min(i + rows, B)) for i in range(0, B, rows)]
    args = [(x[b], means, x.dtype.type(scale), bias, min(chunk, K), None if hint is None else hint[b], bool(skip),
             tuple(o[b] for o in out)) for b in blocks]
    with _BLAS.limit(limits=1, user_api="blas"):
        if len(blocks) == 1 or threads == 1:
            skipped = [_stream_rows(*a) for a in args]
        else:
            pool = _POOL.setdefault(threads, ThreadPoolExecutor(threads, thread_name_prefix="cfgphase"))
            skipped = [future.result() for future in [pool.submit(_stream_rows, *a) for a in args]]
    return PosteriorMoments(*out, sum(skipped) / (B * -(-K // min(chunk, K))))
