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
B x K x d broadcast. With generated means (cfgphase.physics.disorder, docs/theory.md eq. 64) the K d
term goes: all threads generate a span of a few chunks per thread, then every block of rows
streams it, the online softmax state carried from span to span; the numbers are those of the
stored means, bit for bit. A row whose logits in a chunk are all far below its running maximum skips
the chunk, with a bound on what is lost (eq. 30); the running maximum can be seeded with a
hinted class. In float32 the GEMMs, logits and exponentials are single precision and the sums
across chunks float64 (eq. 31).

Parallelism is over row blocks: each of ``threads`` lanes (worker threads, :func:`_on_lanes`) takes
blocks of particles one by one from a counter shared with the other lanes and streams all K chunks for
each, all inside one call of a ``nogil`` Numba function (:func:`_stream_blocks`). A chunk takes one of two
paths. The fused chunk (cfgphase.solvers.score.fused, eq. 31a; the default on CPUs with AVX-512) computes
both GEMMs and the exponentials on register tiles of explicit SIMD vectors (cfgphase.solvers.score.simd), so
that the exponentials run between multiply-adds instead of in a pass of their own. The BLAS path calls a
single-threaded BLAS GEMM for both GEMMs of a chunk (the Fortran ?gemm of :func:`gemm_library`:
Intel MKL on Intel CPUs when installed, whole calls in 0.78-0.84 of OpenBLAS's time on an AVX-512
Xeon, benchmarks/gemm_libraries.py; else SciPy's OpenBLAS) and runs the softmax pass row by row
while the row is in L1; it skips chunks row by row (eq. 30), the fused chunk by groups of 8 rows,
and a block takes the BLAS path after a chunk in which most of its rows would have skipped.
Nothing returns to Python (or takes the GIL) between chunks or blocks, and no two thread pools ever
alternate: with multithreaded BLAS followed by a ``prange`` pass, OpenBLAS's and Numba's idle
threads spun against each other and the kernel ran 2.5-4x slower than the two bare GEMMs on 2
cores (benchmarks/bench_score.py measures the present design).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

from cfgphase.physics.disorder import NormBias, RandomMeans
from cfgphase.physics.disorder_jit import class_scratch, fill_class_range
from cfgphase.physics.numba_cache import njit
from cfgphase.solvers.score.blas import gemm_library, single_threaded_blas, usable_cores  # noqa: F401  (this API)
from cfgphase.solvers.score.dense import PosteriorMoments, checked_hint
from cfgphase.solvers.score.exponential import _exp_constants, _exp_weight, _fmax
from cfgphase.solvers.score.fused import FUSED_CLASSES, _fused_chunk, _pack_rows, fused_work_sizes
from cfgphase.solvers.score.simd import vector_bits

#: Target size in bytes of each thread's (B_block, chunk) logit buffer: half an L2 cache, so that
#: the logits, the chunk of means and the particles stay there (1 MiB buffers measured 1.2-1.4x
#: slower than 512 KiB at d = 32 on a 1 MiB L2; 256 KiB made the GEMMs too small).
BUFFER_BYTES = 2**19
#: Largest block of rows one task streams over all classes; the threads take blocks one by one. 256
#: gives 2 cores four blocks at B = 1024, so that a core slowed by another process holds up less: at
#: (B, K, d) = (1024, 65536, 64) 1.0-1.3x faster than 512 with another job running (float32; 1.1x in
#: float64), the same at B = 8192 and d = 256, and one thread alone runs both alike (alternating runs).
ROW_BLOCK = 256


@intrinsic
def _fortran_gemm(typingctx, address, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """C := op(A) op(B) + beta C in column-major storage (alpha 1) by the Fortran ?gemm at ``address``.

    ``trans_a``, ``trans_b`` are character codes (ord("N"), ord("T")); m, n, k and the leading
    dimensions are passed as 32-bit integers; a, b and c are arrays of one float type, of which only the
    data pointers are used, so their layout must match the leading dimensions given. The address is a
    run-time argument (:func:`gemm_library`), so the compiled code is cached whichever library runs; so is
    ``beta`` (a float, cast to the arrays' type; with beta 0, C need not be initialised).
    """
    if not all(isinstance(t, types.Array) for t in (a, b, c)) or not (a.dtype == b.dtype == c.dtype):
        return None
    sig = types.void(address, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        address, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc = args
        real = context.get_value_type(signature.args[6].dtype)
        char, int32 = ir.IntType(8), ir.IntType(32)
        char_p, int_p, real_p = char.as_pointer(), int32.as_pointer(), real.as_pointer()
        # transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc
        fnty = ir.FunctionType(ir.VoidType(), [char_p, char_p, int_p, int_p, int_p, real_p, real_p, int_p, real_p,
                                               int_p, real_p, real_p, int_p])
        fn = builder.inttoptr(address, fnty.as_pointer())

        def ref(value, ty):
            return cgutils.alloca_once_value(builder, builder.trunc(value, ty))

        def data(i, value):
            return context.make_array(signature.args[i])(context, builder, value).data

        one = cgutils.alloca_once_value(builder, ir.Constant(real, 1.0))
        beta = cgutils.alloca_once_value(builder, context.cast(builder, beta, signature.args[10],
                                                               signature.args[6].dtype))
        builder.call(fn, [ref(trans_a, char), ref(trans_b, char), ref(m, int32), ref(n, int32), ref(k, int32),
                          one, data(6, a), ref(lda, int32), data(8, b), ref(ldb, int32), beta, data(11, c),
                          ref(ldc, int32)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _take_next(typingctx, counter):
    """``counter[0] += 1`` as one atomic read-modify-write; the value before. ``counter`` is a 1-d int64 array
    shared by the lanes of a call, which take the call's row blocks one by one from it (:func:`_stream_blocks`)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", data, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(counter), codegen


_N, _T = ord("N"), ord("T")


@njit(nogil=True)
def _gemm_logits(gemm, x, means, S):
    """S (B, kc) = x (B, d) means (kc, d)^T, row-major and contiguous, by the ?gemm at address ``gemm``."""
    (B, d), kc = x.shape, means.shape[0]
    ld = max(d, 1)  # BLAS wants leading dimensions >= 1 (d = 0: C := 0, as the empty sum gives)
    _fortran_gemm(gemm, _T, _N, kc, B, d, means, ld, x, ld, 0.0, S, kc)


@njit(nogil=True)
def _gemm_weighted(gemm, S, means, T, beta=0.0):
    """T (B, d) = S (B, kc) means (kc, d) + beta T, row-major and contiguous, by the ?gemm at address ``gemm``."""
    (B, kc), d = S.shape, means.shape[1]
    ld = max(d, 1)
    _fortran_gemm(gemm, _N, _N, d, B, kc, means, ld, S, kc, beta, T, ld)


@intrinsic
def _prefer_wide_vectors(typingctx):
    """Let LLVM vectorise the calling function with 512-bit vectors where the CPU has them.

    On AVX-512 CPUs LLVM's default is 256-bit vectors (``prefer-vector-width`` 256), and Numba offers no
    per-function way to change it; the process-wide one (NUMBA_CPU_FEATURES) would reach every Numba function
    of the process. This sets the function attribute on the calling function alone, where its callees are
    inlined: the softmax pass (_chunk_pass) ran 1.18 (float32) and 1.41 (float64) times faster on a Sapphire
    Rapids VM, the same weights bit for bit (the row sums regrouped). No effect on CPUs without AVX-512.
    llvmlite accepts only its list of attribute names, so the string attribute is added to the underlying set
    (a llvmlite whose attributes are no set leaves LLVM's default); LLVM reads it when it builds the
    function's subtarget.
    """
    def codegen(context, builder, signature, args):
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except TypeError:
            pass
        return context.get_dummy_value()

    return types.void(), codegen


@njit(nogil=True, fastmath=True, error_model="numpy")
def _chunk_pass(S, bias, scale, threshold, k0, run_max, run_sum, run_w, run_arg, acc, T, fold_T, active, hints,
                hint_logit):
    """One chunk of the online softmax (eq. 7) for every row of a block, in place.

    S (B, kc) holds the chunk's x M_c^T on entry. Row by row (while the row is in L1): the
    logits L = scale x M_c^T + bias, stored in S (the exponentials then read them: one operation
    a logit fewer than recomputing them, 12 % of the pass in float32), and their largest; if it is
    below the running maximum by more than ``-threshold`` the row skips the chunk (eq. 30) and its
    row of S is zeroed; otherwise the running statistics
    are rescaled and the row of S becomes the weights exp(L - m), computed in S's precision
    (scale, bias and run_max share it). ``acc`` (B, d) is the float64 accumulator Y; T (B, d)
    holds the previous chunk's P M_c product, folded into every row of acc before the rescaling
    when ``fold_T``. A row's logit for its hinted class (``hints`` (B,), or no rows for none), if the chunk holds
    it, goes to ``hint_logit`` (B,), skipped or not. The indices of the rows that did not skip go to ``active``;
    returns their number. A chunk's sums accumulate in S's precision, as its second GEMM does (in float32 this
    doubles the pass's speed: the conversions to float64 cost as much as the exponential); the
    running sums are float64 (eq. 31).
    """
    _prefer_wide_vectors()
    B, kc = S.shape
    d = acc.shape[1]
    n_active = 0
    for i in range(B):
        c = S[i, 0] * scale + bias[0]
        for j in range(kc):  # the logits replace x M_c^T in S
            S[i, j] = scale * S[i, j] + bias[j]
            c = _fmax(c, S[i, j])
        if hints.shape[0] != 0 and k0 <= hints[i] < k0 + kc:
            hint_logit[i] = S[i, hints[i] - k0]
        m_old = run_max[i]
        if c - m_old < threshold:
            if fold_T:
                for l in range(d):
                    acc[i, l] += T[i, l]
            for j in range(kc):
                S[i, j] = 0.0
            continue
        active[n_active] = i
        n_active += 1
        r = 1.0
        if c > m_old:
            first = np.int32(kc)  # the first index of the largest logit, as a min-reduction that vectorises (an
            for j in range(kc):  # early exit did not: it cost as much as the exponentials when the maximum grew)
                first = min(first, np.int32(j) if S[i, j] == c else np.int32(kc))
            run_arg[i] = k0 + first
            if run_sum[i] > 0.0:
                r = math.exp(float(m_old) - float(c))
                run_w[i] = r * (run_w[i] + (float(m_old) - float(c)) * run_sum[i])
                run_sum[i] *= r
            run_max[i] = c
        m = run_max[i]
        if fold_T:
            for l in range(d):
                acc[i, l] = (acc[i, l] + T[i, l]) * r
        elif r != 1.0:
            for l in range(d):
                acc[i, l] *= r
        s = S.dtype.type(0.0)
        w = S.dtype.type(0.0)
        for j in range(kc):
            z = S[i, j] - m
            e = _exp_weight(z)
            S[i, j] = e
            s += e
            w += e * z
        run_sum[i] += float(s)
        run_w[i] += float(w)
    return n_active


#: All skipped chunks together hold less than this fraction of each row's posterior weight (eq. 30).
SKIP_WEIGHT = 1e-12
#: Below this fraction of a block's rows still active in a chunk, only those rows are processed.
SUBSET = 0.5
#: Generated means: chunks per lane in a span, generated by all lanes at once, then streamed by every
#: block of rows (spans bound the memory, O(chunk d), and keep the threads' hand-overs rare).
SPAN_CHUNKS = 4


@njit(nogil=True, error_model="numpy", fastmath=False)  # explicit: a callee inherits fast-math
def _generate_span(generator, start, means, sq_norms, bias, scratch):
    """Classes start .. start + n - 1 generated into ``means`` (n, d) and ``bias`` (n,) in the kernel's
    dtype, the bias log_weight - coefficient |mu_k|^2 rounded as NumPy rounds the stored one
    (float64, then cast; no fast-math here, so no fused multiply-add)."""
    key0, key1, std, log_weight, coefficient = generator
    fill_class_range(key0, key1, std, start, scratch, means, sq_norms)
    for i in range(means.shape[0]):
        bias[i] = log_weight - coefficient * sq_norms[i]


def _into_acc(gemm, S, means, acc, T):
    _gemm_weighted(gemm, S, means, acc, 1.0)
    return False


def _into_T(gemm, S, means, acc, T):
    _gemm_weighted(gemm, S, means, T)
    return True


def _weighted_branch(S, acc):
    """_into_acc or _into_T, by the dtypes of S and acc (NumPy arrays, or their Numba types when compiling)."""
    return _into_acc if S.dtype == acc.dtype else _into_T


def _weighted_product(gemm, S, means, acc, T):
    """A chunk's second GEMM, S means, for every row of a block; whether T now holds it.

    float64: added into the accumulator acc itself, which the pass has rescaled (False). float32: written to T,
    which the next chunk's pass folds into the float64 acc (True); acc stays float64 (eq. 31). In Numba the
    choice is made at compile time (the overload below), so that only the branch of the dtypes is typed.
    """
    return _weighted_branch(S, acc)(gemm, S, means, acc, T)


@overload(_weighted_product)
def _weighted_product_overload(gemm, S, means, acc, T):
    return _weighted_branch(S, acc)


def _rows_of(x, b0, b1, buffer):
    """Rows b0 .. b1 - 1 of x in the dtype of ``buffer`` (n, d), n >= b1 - b0: a view of x if it has that dtype,
    else x's rows cast (rounded to nearest, as NumPy's astype) into the buffer. In Numba the choice is made at
    compile time (the overload below)."""
    return x[b0:b1] if x.dtype == buffer.dtype else buffer[: b1 - b0]


@overload(_rows_of)
def _rows_of_overload(x, b0, b1, buffer):
    if x.dtype == buffer.dtype:
        return lambda x, b0, b1, buffer: x[b0:b1]

    def cast(x, b0, b1, buffer):
        rows = buffer[: b1 - b0]
        for r in range(b1 - b0):
            for l in range(x.shape[1]):
                rows[r, l] = x[b0 + r, l]
        return rows

    return cast


@njit(nogil=True, fastmath=True, error_model="numpy")
def _stream_rows(gemm, x, means, bias, k_offset, scale, chunk, threshold, run_max, run_arg, hints, hint_logit, buffer,
                 state, finish, Y, log_partition, entropy, fused_chunk, work):
    """Stream classes k_offset .. k_offset + len(means) - 1 in chunks for one block of rows, without the
    GIL: all K of them for stored means, one span for generated ones. ``state`` = (run_sum, run_w, acc,
    T, pending) carries the online softmax between spans; with ``finish`` it is turned into Y,
    log_partition and entropy; run_max, run_arg and hint_logit (block views; the last with ``hints``, the rows'
    hinted classes, or without rows for none) are updated in place.

    Both GEMMs of a chunk call the Fortran ?gemm at address ``gemm`` (:func:`gemm_library`; single
    threaded under :func:`posterior_moments`); ``buffer`` holds at least B x chunk elements. In float64
    the second GEMM adds its product into acc (beta 1), which the pass has rescaled; in float32 its
    product goes to T, which the next chunk's pass folds into the float64 acc.
    With ``fused_chunk`` > 0, classes are fused (cfgphase.solvers.score.fused._fused_chunk, on the work arrays
    ``work``) from the first one while at least ``SUBSET`` of the rows keep them, and take the BLAS path otherwise
    (which the block's flag, bit 1, carries from span to span): ``fused_chunk`` classes at a time (a multiple of
    ``chunk``) after a fused chunk that no row would have skipped, else (the first one included) ``chunk``, so that
    rows skip as early and as finely as on the BLAS path. A fused chunk that a row skips counts as skipping each
    of its chunks.
    Returns the number of (row, chunk) pairs skipped (eq. 30): after the first GEMM of a chunk,
    a row whose largest logit there is below its running maximum by more than ``-threshold`` =
    log(K/SKIP_WEIGHT) skips the chunk; if every row does, the second GEMM is skipped too, and
    if fewer than ``SUBSET`` of them remain, only those rows are gathered for it. All skipped
    pairs of a row together hold less than SKIP_WEIGHT of its posterior weight.
    """
    B, d = x.shape
    run_sum, run_w, acc, T, flags = state  # acc is Y, accumulated in float64 across chunks
    active = np.empty(B, dtype=np.int64)
    pending = (flags[0] & 1) != 0
    skipped = 0
    n = means.shape[0]
    # the first chunk is fused; after each chunk, the path of the next follows from how many rows skipped (or would
    # have), carried from span to span in the block's flag (bit 1)
    use_fused = fused_chunk > 0 and (k_offset == 0 or (flags[0] & 2) != 0)
    if fused_chunk > 0:
        _pack_rows(x, work[0])
    j0 = 0
    spread = False  # no row would have skipped the last fused chunk: the next one takes fused_chunk classes
    while j0 < n:
        kc = min((fused_chunk if spread else chunk) if use_fused else chunk, n - j0)
        Mc, bc, k0 = means[j0 : j0 + kc], bias[j0 : j0 + kc], k_offset + j0
        j0 += kc
        if use_fused:
            if pending:
                for i in range(B):
                    for l in range(d):
                        acc[i, l] += T[i, l]
                pending = False
            would_skip, tiles_skipped = _fused_chunk(x, Mc, bc, k0, scale, threshold, run_max, run_arg, run_sum,
                                                     run_w, acc, hints, hint_logit, work)
            skipped += tiles_skipped * -(-kc // chunk)
            use_fused = B - would_skip >= SUBSET * B
            spread = would_skip == 0
            continue
        S = buffer[: B * kc].reshape((B, kc))
        _gemm_logits(gemm, x, Mc, S)
        n_active = _chunk_pass(S, bc, scale, threshold, k0, run_max, run_sum, run_w, run_arg, acc, T, pending, active,
                               hints, hint_logit)
        skipped += B - n_active
        use_fused = fused_chunk > 0 and n_active >= SUBSET * B
        if n_active >= SUBSET * B:  # skipped rows of S are zero
            pending = _weighted_product(gemm, S, Mc, acc, T)
            continue
        pending = False
        if n_active > 0:
            rows_S = np.empty((n_active, kc), dtype=x.dtype)
            for i in range(n_active):
                rows_S[i] = S[active[i]]
            product = np.empty((n_active, d), dtype=x.dtype)
            _gemm_weighted(gemm, rows_S, Mc, product)
            for i in range(n_active):
                for l in range(d):
                    acc[active[i], l] += product[i, l]
    flags[0] = (1 if pending else 0) | (2 if use_fused else 0)
    if not finish:
        return skipped
    if pending:
        acc += T
    for i in range(B):  # a non-finite x gives a NaN row, by design
        inverse = 1.0 / run_sum[i]
        for l in range(d):
            Y[i, l] = acc[i, l] * inverse
        log_sum = math.log(run_sum[i]) if run_sum[i] > 0.0 else -math.inf
        log_partition[i] = run_max[i] + log_sum
        entropy[i] = log_sum - run_w[i] / run_sum[i]
    return skipped


@njit(nogil=True, fastmath=True, error_model="numpy")
def _stream_blocks(gemm, counter, rows, x, x_rows, means, bias, k_offset, scale, chunk, threshold, hinted, hinted_bias,
                   run_max, run_arg, hints, hint_logit, buffer, state, carried, finish, Y, log_partition, entropy,
                   fused_chunk, work):
    """One lane of a call: the blocks of ``rows`` rows of x that it takes one by one from ``counter``
    (:func:`_take_next`, shared with the call's other lanes), each streamed by :func:`_stream_rows` over classes
    k_offset .. k_offset + len(means) - 1, without returning to Python between blocks; the number of (row, chunk)
    pairs skipped.

    ``state`` = (sums (2, n), acc (n, d), T (n or 0, d), flags) holds the online softmax state (run_sum and
    run_w in ``sums``): the lane's own, for one block at a time (n = rows, one flag), or, when ``carried``, every
    block's (n = B, a flag per block), which generated means carry from span to span. The first span
    (k_offset 0) starts a block's state afresh and, given one hinted class (``hinted`` (1, d) its mean,
    ``hinted_bias`` (1,) its bias; (0, d) and (0,) for none), seeds the block's running maximum with the rows'
    logits for it, in the means' precision. ``hints`` (B,) and ``hint_logit`` (B,) (no rows for no hint) take each
    row's hinted class and, from the chunk's logits, its logit (:func:`_chunk_pass`). Float64 particles with
    float32 means are cast block by block into ``x_rows`` (rows, d) (:func:`_rows_of`; (0, d) in x's dtype when x
    has the means' dtype).
    """
    B, d = x.shape
    sums, acc, T, flags = state
    skipped = 0
    n_blocks = -(-B // rows)
    while True:
        i = _take_next(counter)
        if i >= n_blocks:
            return skipped
        b0 = i * rows
        b1 = min(b0 + rows, B)
        o, f = (b0, i) if carried else (0, 0)
        n = b1 - b0
        xb = _rows_of(x, b0, b1, x_rows)
        if k_offset == 0:
            sums[:, o : o + n] = 0.0
            acc[o : o + n] = 0.0
            flags[f] = 0
            if hinted.shape[0] == 1:
                for r in range(n):
                    product = hinted.dtype.type(0.0)
                    for l in range(d):
                        product += xb[r, l] * hinted[0, l]
                    run_max[b0 + r] = scale * product + hinted_bias[0]
        block = (sums[0, o : o + n], sums[1, o : o + n], acc[o : o + n], T[o : o + n], flags[f : f + 1])
        skipped += _stream_rows(gemm, xb, means, bias, k_offset, scale, chunk, threshold, run_max[b0:b1],
                                run_arg[b0:b1], hints[b0:b1], hint_logit[b0:b1], buffer, block, finish, Y[b0:b1],
                                log_partition[b0:b1], entropy[b0:b1], fused_chunk, work)


@functools.cache
def _workers(pid, n):
    """The kernel's ``n`` worker threads, started on the first call that needs them (:func:`_on_lanes`).

    Keyed by the process id, so that a forked child, whose copy of the parent's pool has no threads,
    starts its own on its first call instead of waiting on the copy. Idle threads block on the pool's
    queue and use no CPU. Starting the threads per call cost 0.1-3 ms a call (the new thread must be
    scheduled before the call goes on; slowest when the other core is busy), 2.1 s of a 14 s default
    ``cfgphase simulate`` on 2 busy cores.
    """
    return ThreadPoolExecutor(n, thread_name_prefix=f"cfgphase-{pid}")


def _on_lanes(tasks):
    """The zero-argument callables ``tasks`` run at once, one per lane, on the kernel's worker threads
    (:func:`_workers`; in the calling thread when there is one task); the list of their results. The lanes share
    their work through a counter or an iterator they all take from.

    A lane should be a nogil Numba function with its arguments bound (``functools.partial``), prepared by the
    caller: a worker then holds the GIL only to unbox them (2-3 us). Lanes that ran 20 us of Python each
    (their work arrays) contended for the GIL with each other and with the caller: a call on 8 classes took 165 us
    on two lanes and 38 on one, 136 us on two with bound lanes (2 cores; the bare round trip of two empty tasks
    is 55 us).

    The caller waits rather than run a lane itself. Running one saved 30-40 us a call, but Linux then sometimes
    woke the worker on the caller's busy core and left it there for whole calls: the caller streamed every block
    while the worker waited, at the speed of one thread, in streaks of calls (measured on the 2-core VM with the
    benchmark's GEMMs alone: 3.5-3.9 ms against 2.0-2.2). A waiting caller leaves its core to a worker.
    """
    if len(tasks) == 1:
        return [tasks[0]()]
    pool = _workers(os.getpid(), len(tasks))
    futures = [pool.submit(task) for task in tasks]
    return [future.result() for future in futures]


#: ``arrays``, (lane, name, dtype) -> 1-d array: the work arrays of the lanes of each calling thread
#: (:func:`_work_array`)
_work = threading.local()


def _work_array(lane, name, shape, dtype):
    """Work array ``name`` of lane ``lane`` of a call from the calling thread, of ``shape`` and ``dtype``,
    uninitialised.

    Kept from call to call (grown when too small) while it holds at most BUFFER_BYTES: the logit buffer at the
    default chunk, the accumulators up to d = 256 in float64 (1.5 MiB with the small state arrays) per lane of
    each thread that has called the kernel, freed with that thread. The calls of one thread follow each other
    and each lane runs on one worker at a time, so that no two tasks ever share an array, however many threads
    call at once. Fresh ones in every call cost about 480 new pages per call of a default ``cfgphase simulate``
    on 2 threads, 1.1-1.5 ms of page faults.
    """
    size = math.prod(shape)
    if size * dtype.itemsize > BUFFER_BYTES:
        return np.empty(shape, dtype=dtype)
    arrays = _work.__dict__.setdefault("arrays", {})
    array = arrays.get((lane, name, dtype))
    if array is None or array.size < size:
        array = arrays[lane, name, dtype] = np.empty(size, dtype=dtype)
    return array[:size].reshape(shape)


def _softmax_state(n, d, dtype, flags, lane=None):
    """The arrays of an online softmax state for ``n`` rows, (sums (2, n), acc (n, d), T, flags (flags,)), for
    :func:`_stream_blocks` to initialise: T (n, d) in ``dtype``, or without rows in float64 (whose second GEMM
    adds into acc: :func:`_weighted_product`); acc and sums float64. On the work arrays of ``lane``
    (:func:`_work_array`) for one block at a time, else (``lane`` None) the call's own."""
    def new(name, shape, dtype):
        return np.empty(shape, dtype=dtype) if lane is None else _work_array(lane, name, shape, dtype)

    return (new("sums", (2, n), np.dtype(np.float64)), new("acc", (n, d), np.dtype(np.float64)),
            new("T", (n if dtype == np.float32 else 0, d), np.dtype(dtype)), new("flags", (flags,), np.dtype(np.int64)))


def _fused_default():
    """Whether chunks are fused by default: ``CFGPHASE_FUSED`` (read at each call: "1" or "0"), else on CPUs with
    AVX-512 (:func:`cfgphase.solvers.score.simd.vector_bits`); ValueError naming CFGPHASE_FUSED otherwise."""
    setting = os.environ.get("CFGPHASE_FUSED")
    if setting is None or setting == "":
        return vector_bits() == 512
    if setting not in ("0", "1"):
        raise ValueError(f"CFGPHASE_FUSED must be 0 or 1, got {setting!r}")
    return setting == "1"


def default_chunk(rows, itemsize, K):
    """Chunk length that keeps a (rows, chunk) logit buffer near BUFFER_BYTES (at least 64)."""
    return int(min(K, max(64, BUFFER_BYTES // (max(rows, 1) * itemsize))))


def block_layout(B, K, itemsize, threads=None, chunk=None):
    """(rows, chunk, lanes) of a call on B particles and K classes: rows per block (at most ROW_BLOCK),
    classes per chunk (default: :func:`default_chunk`; at most K) and worker threads (default:
    :func:`usable_cores`, at most one per block). ValueError naming ``chunk`` if it is below 1."""
    threads = max(1, min(usable_cores() if threads is None else int(threads), B))
    # at most ROW_BLOCK rows per task: with more, the buffer would force chunks too short for an
    # efficient GEMM (B = 8192 measured 1.6-2x the bare GEMMs with one 4096-row block per thread)
    rows = max(1, min(-(-B // threads), ROW_BLOCK))
    chunk = default_chunk(rows, itemsize, K) if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return rows, min(chunk, K), min(threads, -(-B // rows))


def _hinted_means(means, bias, classes, generated, dtype):
    """The means (n, d) and biases (n,) of the hinted ``classes`` (n,) in ``dtype``, stored or generated."""
    if generated:
        return means.rows(classes, dtype=dtype)[0], np.asarray(bias[classes], dtype=dtype)
    return means[classes], bias[classes]


def posterior_moments(x, means, scale, bias, chunk=None, threads=None, hint=None, skip=True, blas=None, dtype=None,
                      fused=None):
    r"""Softmax-weighted class means and posterior statistics, streamed over K (eqs. 5-7, 30, 50).

    Parameters
    ----------
    x : ndarray (B, d), float64 or float32
        Particles, in ``dtype`` or, when that is float32, in float64: the lanes then cast each block of
        rows as they take it (the numbers of ``x.astype(float32)``, without a serial pass over x).
    means : ndarray (K, d) or RandomMeans
        Stored means, in ``dtype``, or generated ones (cfgphase.physics.disorder.RandomMeans): each
        chunk is then generated in a per-thread buffer, cast to ``dtype``, and never stored whole
        (memory O((B + chunk) d) per thread; docs/theory.md eq. 64).
    scale : float
        :math:`\beta` in :math:`L = \beta X M^\top + b`.
    bias : ndarray (K,), or NormBias with generated means
        :math:`b`; with generated means, :math:`b_k = \log\pi - c\,|\mu_k|^2`
        (cfgphase.physics.disorder.NormBias), computed per chunk.
    chunk : int, optional
        Classes per chunk; default keeps each thread's buffer near ``BUFFER_BYTES``, and a fused chunk after one
        that no row would have skipped then takes cfgphase.solvers.score.fused.FUSED_CLASSES classes (a whole
        number of chunks; :func:`_stream_rows`).
    threads : int, optional
        Worker threads, each owning a block of rows (default: :func:`usable_cores`, read at call time).
    hint : int or ndarray (B,) of int, optional
        A class likely to dominate each row's posterior (e.g. the guidance target). Its logit
        seeds the running maximum, so that chunks can be skipped early (from the first one on the BLAS path,
        from the second with ``fused``), and is returned
        (``hint_logit``) as the pass computed it, in the GEMMs' precision: the very value that the
        partition sum took, so that ``exp(hint_logit - log_partition)`` is the hinted class's
        posterior without a precision mismatch.
    skip : bool
        Skip chunks whose weight is below ``SKIP_WEIGHT`` of every row's posterior (eq. 30).
    blas : {None, "openblas", "mkl"}
        GEMM library of both GEMMs (:func:`gemm_library`; None: MKL on an Intel CPU when installed,
        else SciPy's OpenBLAS). Libraries round the GEMMs differently; nothing else changes.
    dtype : {None, float32, float64}
        Precision of both GEMMs and of the logits and weights of the softmax pass (default: that of
        stored means, or of ``x`` with generated ones); the running sums and everything returned,
        ``mean`` included, are float64 (eq. 31).
    fused : bool, optional
        Compute chunks with the fused kernel (cfgphase.solvers.score.fused, eq. 31a: both GEMMs and the exponentials on
        register tiles, no BLAS call) while few rows skip, the BLAS GEMMs and the pass (:func:`_chunk_pass`)
        otherwise. Default: the environment variable ``CFGPHASE_FUSED`` ("1" or "0", read at each call, so
        that a whole run, its Dask and pool workers included, can be switched), else on CPUs with AVX-512
        (:func:`cfgphase.solvers.score.simd.vector_bits`; 256-bit vectors leave too few registers for the
        tiles). The two paths round differently; nothing else changes.

    Returns
    -------
    PosteriorMoments
    """
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"x must be float32 or float64, got dtype {x.dtype}")
    generated = isinstance(means, RandomMeans)
    if generated:
        if not isinstance(bias, NormBias) or bias.means is not means:
            raise ValueError("bias: generated means take the NormBias of the same means")
        K, d_means = means.K, means.d
        dtype = x.dtype if dtype is None else np.dtype(dtype)
    else:
        means = np.ascontiguousarray(means)
        dtype = means.dtype if dtype is None else np.dtype(dtype)
        if means.dtype != dtype:
            raise ValueError(f"means must have dtype {dtype} (the computation's), got {means.dtype}")
        (K, d_means), bias = means.shape, np.ascontiguousarray(bias, dtype=dtype)
        if bias.shape != (K,):
            raise ValueError(f"shapes do not match: x {x.shape}, means {means.shape}, bias {bias.shape}")
    if dtype not in (np.float32, np.float64) or x.itemsize < dtype.itemsize:
        raise ValueError(f"dtype must be float32, or float64 with float64 particles; got dtype {dtype}, x {x.dtype}")
    B, d = x.shape
    if d_means != d:
        raise ValueError(f"shapes do not match: x {x.shape}, means ({K}, {d_means})")
    hint = checked_hint(hint, K, B)
    default = chunk is None
    rows, chunk, lanes = block_layout(B, K, dtype.itemsize, threads, chunk)
    if B == 0:
        return PosteriorMoments(np.empty((0, d)), np.empty(0), np.empty(0), np.empty(0, dtype=np.int64), 0.0,
                                None if hint is None else np.empty(0))
    library = gemm_library(blas)
    gemm = library.sgemm if dtype == np.float32 else library.dgemm
    out = (np.empty((B, d)), np.empty(B), np.empty(B),  # float64 mean: no cast after
           np.full(B, 0 if hint is None else hint, dtype=np.int64))
    # each row's hinted class, and its logit as the pass computes it (the value its partition sum takes)
    hints = np.full(B if hint is not None else 0, 0 if hint is None else hint, dtype=np.int64)
    hint_logit = np.empty(hints.size)
    run_max = np.full(B, -np.inf, dtype=dtype) if hint is None else np.empty(B, dtype=dtype)
    threshold = -math.log(K / SKIP_WEIGHT) if skip else -math.inf
    # one hinted class for every row (the guidance target) is seeded by the lanes; a class per row, here
    hinted, hinted_bias = np.empty((0, d), dtype=dtype), run_max[:0]
    if hint is not None and hint.ndim == 0:
        hinted, hinted_bias = _hinted_means(means, bias, hint[None], generated, dtype)
    elif hint is not None:
        classes, where = np.unique(hint, return_inverse=True)
        hinted_rows, hinted_rows_bias = _hinted_means(means, bias, classes, generated, dtype)
        run_max[:] = scale * np.einsum("ij,ij->i", x.astype(dtype, copy=False), hinted_rows[where]) + \
            hinted_rows_bias[where]
    # the lanes stream on work arrays that the calling thread keeps from call to call, a set per lane
    # (_work_array); the states of generated means are carried from span to span, so they are the call's own
    states = _softmax_state(B, d, dtype, -(-B // rows)) if generated else None
    if generated:
        # a span of SPAN_CHUNKS chunks per lane is generated by all lanes, then streamed by each block: every
        # mean entry is generated once per call, not once per block
        span = min(K, chunk * SPAN_CHUNKS * lanes)
        generator = (*means.key, means.std, bias.log_weight, bias.coefficient)
        span_means, span_sq, span_bias = (np.empty((span, d), dtype=dtype), np.empty(span),
                                          np.empty(span, dtype=dtype))
        spans = [(k, min(k + span, K)) for k in range(0, K, span)]
    else:
        spans = [(0, K)]
    scale_x = dtype.type(scale)
    cast = x.dtype != dtype  # the lanes cast each block of rows (_rows_of)
    fuse = _fused_default() if fused is None else bool(fused)
    # classes per fused chunk: FUSED_CLASSES (a whole number of chunks, so that the paths stay aligned) unless the
    # chunk was given; none when not fused
    fused_chunk = (min(K, chunk * max(1, FUSED_CLASSES // chunk)) if default else chunk) if fuse else 0
    work_sizes = fused_work_sizes(rows, fused_chunk, d, dtype) if fuse else (1,) * 6
    constants = _exp_constants(dtype)
    # each lane's own arguments: the block of rows cast (_rows_of), logit buffer, softmax state, fused work
    own = [(_work_array(i, "rows", (rows, d), dtype) if cast else x[:0],
            _work_array(i, "logits", (rows * chunk,), dtype), states or _softmax_state(rows, d, dtype, 1, lane=i),
            (*(_work_array(i, f"fused{j}", (n,), dtype) for j, n in enumerate(work_sizes)), constants))
           for i in range(lanes)]

    def stream_span(start, stop):
        if generated:
            n = stop - start
            parts = SPAN_CHUNKS * lanes  # shared out one by one: a thread slowed by another process holds up less
            cuts = [n * i // parts for i in range(parts + 1)]
            pieces = iter(range(parts))

            def generate():
                work = class_scratch(d)
                for i in pieces:
                    a, b = cuts[i], cuts[i + 1]
                    _generate_span(generator, start + a, span_means[a:b], span_sq[a:b], span_bias[a:b], work)

            _on_lanes([generate] * lanes)
            span_m, span_b = span_means[:n], span_bias[:n]
        else:
            span_m, span_b = means, bias
        counter = np.zeros(1, dtype=np.int64)  # the next block: each lane takes one until none is left, which
        # balances a core slowed by another process
        return sum(_on_lanes([functools.partial(
            _stream_blocks, gemm, counter, rows, x, x_rows, span_m, span_b, start, scale_x, chunk, threshold, hinted,
            hinted_bias, run_max, out[3], hints, hint_logit, buffer, state, generated, stop == K, *out[:3], fused_chunk,
            work)
            for x_rows, buffer, state, work in own]))

    with single_threaded_blas():
        skipped = sum(stream_span(*s) for s in spans)
    return PosteriorMoments(*out, skipped / (B * -(-K // chunk)), None if hint is None else hint_logit)
