"""The fused chunk of the streaming kernel: both GEMMs of a chunk and its softmax weights on register tiles of
explicit SIMD vectors (docs/theory.md eq. 31a; the default path on CPUs with AVX-512).

The streaming kernel (cfgphase.solvers.score.kernel) hands a block's rows to :func:`_pack_rows` once and each
chunk of classes to :func:`_fused_chunk`, which updates the block's online softmax state as the kernel's BLAS path
does: a tile of 2W rows by CLASS_TILE classes of logits in 16 vector registers over the d multiply-adds
(:func:`_fused_weights`), their exponentials in registers (cfgphase.solvers.score.exponential._vexp), then the
weights times the means on tiles of PRODUCT_ROWS rows (:func:`_fused_product`). Only callable from Numba, except
:func:`fused_work_sizes`.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba.extending import overload

from cfgphase.physics.numba_cache import njit
from cfgphase.solvers.score.exponential import _vexp
from cfgphase.solvers.score.simd import lanes as _vector_lanes
from cfgphase.solvers.score.simd import vbroadcast, vector_bits, vfma, vload, vmax, vsplat, vstore


#: Classes of the fused chunk's logit tile: a tile is 2W rows (two vectors of W lanes) by CLASS_TILE classes, 16
#: accumulators, half the 32 vector registers of AVX-512; the rest hold the rows' running sums and the exponentials.
CLASS_TILE = 8
#: Classes of a fused chunk when the kernel chooses the chunk (cfgphase.solvers.score.kernel.posterior_moments: the
#: multiple of its chunk nearest below, at least one): a tile's weights and logits take 64 KiB each with 512-bit
#: vectors. Float64's chunk of 256 classes (blocks of 256 rows) fused two at a time (after a chunk no row would
#: have skipped) ran (1024, 65536, 64), (1024, 4096, 32) and (1024, 4096, 64) 1.02-1.03x faster and the rest alike
#: (alternating runs); float32's 512 were the best of 256-1024.
FUSED_CLASSES = 512
#: Rows of the fused chunk's second-GEMM tile: PRODUCT_ROWS rows by two vectors of mean entries, 16 accumulators.
PRODUCT_ROWS = 8
#: A fused chunk takes its exponentials relative to each row's running maximum before the chunk; a tile of rows
#: one of whose chunk maxima exceeds it by more than this (natural log units; float32, float64) is computed again
#: relative to its chunk maxima, so that no weight, sum or product can overflow: e**32 kc |mu|_max < 3e38 for
#: kc |mu|_max < 3e24 (float32), e**512 kc |mu|_max < 1e308 for kc |mu|_max < 1e85 (float64).
FUSED_LIMIT32 = np.float32(32.0)
FUSED_LIMIT64 = 512.0
#: Padding classes of a fused chunk (its length rounded up to CLASS_TILE) get this bias: finite, so that their
#: weight times their logit is 0, not NaN, and far below any logit, so that their weight is 0.
_PAD_BIAS32 = np.float32(-1e30)
_PAD_BIAS64 = -1e300


def _fused_bounds(P):
    """(FUSED_LIMIT, padding bias) of P's precision (in Numba chosen at compile time, by the overload below)."""
    return (FUSED_LIMIT32, _PAD_BIAS32) if P.dtype == np.float32 else (FUSED_LIMIT64, _PAD_BIAS64)


@overload(_fused_bounds)
def _fused_bounds_overload(P):
    if P.dtype.bitwidth == 32:
        return lambda P: (FUSED_LIMIT32, _PAD_BIAS32)
    return lambda P: (FUSED_LIMIT64, _PAD_BIAS64)


@njit(nogil=True, error_model="numpy")
def _pack_rows(x, xt):
    """The rows of x (B, d) as tiles of R = 2W rows (W the vector lanes of xt's dtype), transposed: row g0 + r's
    entry k at xt[g0 d + k R + r], rows past B zero. Once per block of rows; the fused chunk loads two vectors of
    rows per multiply-add step from it."""
    B, d = x.shape
    R = 2 * _vector_lanes(xt)
    for g0 in range(0, B, R):
        for k in range(d):
            for r in range(R):
                xt[g0 * d + k * R + r] = x[g0 + r, k] if g0 + r < B else 0.0


@nb.njit(inline="always")
def _fma_class(means, at, x0, x1, a0, a1):
    m = vbroadcast(means, at)
    return vfma(m, x0, a0), vfma(m, x1, a1)


@nb.njit(inline="always")
def _class_weights(a0, a1, c, rows, P, L, pad_bias, scale, r0, r1, constants):
    """Class c of a logit tile (2W rows; a0, a1 its multiply-adds): the logits, stored in L at c 2W, the weights
    relative to the rows' references r0, r1, stored in P at c 2W, and ``rows`` = (m0, m1, s0, s1, w0, w1), the
    rows' running largest logits, sums of weights and sums of weights times (logit - reference), updated."""
    m0, m1, s0, s1, w0, w1 = rows
    W = _vector_lanes(P)
    at = 2 * W * c
    b = vbroadcast(pad_bias, c)
    l0 = vfma(a0, scale, b)
    l1 = vfma(a1, scale, b)
    vstore(L, at, l0)
    vstore(L, at + W, l1)
    z0 = l0 - r0
    z1 = l1 - r1
    e0 = _vexp(z0, constants)
    e1 = _vexp(z1, constants)
    vstore(P, at, e0)
    vstore(P, at + W, e1)
    return vmax(l0, m0), vmax(l1, m1), s0 + e0, s1 + e1, vfma(e0, z0, w0), vfma(e1, z1, w1)  # a NaN logit loses


@njit(nogil=True, error_model="numpy")
def _fused_weights(xt, x0, d, means, stride, pad_bias, kp, scale, reference, P, L, running, largest, sums, constants):
    """One tile of R = 2W rows (W the vector lanes) against one chunk of kp classes (a multiple of CLASS_TILE):
    the logits and the weights exp(logit - reference[r]) into L and P, class j's R rows at j R, the rows' running
    maxima after each CLASS_TILE classes into ``running`` (kp / CLASS_TILE tiles of R), each row's
    largest logit into ``largest`` (R,) and its sums of weights and of weights times (logit - reference[r]) into
    sums[:R] and sums[R:] (eq. 31a).

    The rows come from ``xt`` at x0 (:func:`_pack_rows`), the means from ``means`` as they are stored, class c's
    entry k at c ``stride`` + k, the biases from ``pad_bias`` (kp,). The logits of CLASS_TILE classes by 2W rows stay
    in 16 vector registers while the multiply-adds run over d, each step two vector loads of rows and one broadcast
    per class; their exponentials follow in registers, and each row's sums stay in one lane of a vector.
    """
    W = _vector_lanes(P)
    R = 2 * W
    z = vsplat(P.dtype.type(0.0))
    sc = vsplat(P.dtype.type(scale))
    r0 = vload(reference, 0)
    r1 = vload(reference, W)
    rows = (vsplat(P.dtype.type(-np.inf)), vsplat(P.dtype.type(-np.inf)), z, z, z, z)  # m0, m1, s0, s1, w0, w1
    for c0 in range(0, kp, CLASS_TILE):
        a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = z
        a40 = a41 = a50 = a51 = a60 = a61 = a70 = a71 = z
        base = c0 * stride
        for k in range(d):
            v0 = vload(xt, x0 + k * R)
            v1 = vload(xt, x0 + k * R + W)
            a00, a01 = _fma_class(means, base + k, v0, v1, a00, a01)
            a10, a11 = _fma_class(means, base + stride + k, v0, v1, a10, a11)
            a20, a21 = _fma_class(means, base + 2 * stride + k, v0, v1, a20, a21)
            a30, a31 = _fma_class(means, base + 3 * stride + k, v0, v1, a30, a31)
            a40, a41 = _fma_class(means, base + 4 * stride + k, v0, v1, a40, a41)
            a50, a51 = _fma_class(means, base + 5 * stride + k, v0, v1, a50, a51)
            a60, a61 = _fma_class(means, base + 6 * stride + k, v0, v1, a60, a61)
            a70, a71 = _fma_class(means, base + 7 * stride + k, v0, v1, a70, a71)
        rows = _class_weights(a00, a01, c0, rows, P, L, pad_bias, sc, r0, r1, constants)
        rows = _class_weights(a10, a11, c0 + 1, rows, P, L, pad_bias, sc, r0, r1, constants)
        rows = _class_weights(a20, a21, c0 + 2, rows, P, L, pad_bias, sc, r0, r1, constants)
        rows = _class_weights(a30, a31, c0 + 3, rows, P, L, pad_bias, sc, r0, r1, constants)
        rows = _class_weights(a40, a41, c0 + 4, rows, P, L, pad_bias, sc, r0, r1, constants)
        rows = _class_weights(a50, a51, c0 + 5, rows, P, L, pad_bias, sc, r0, r1, constants)
        rows = _class_weights(a60, a61, c0 + 6, rows, P, L, pad_bias, sc, r0, r1, constants)
        rows = _class_weights(a70, a71, c0 + 7, rows, P, L, pad_bias, sc, r0, r1, constants)
        vstore(running, c0 // CLASS_TILE * R, rows[0])
        vstore(running, c0 // CLASS_TILE * R + W, rows[1])
    m0, m1, s0, s1, w0, w1 = rows
    vstore(largest, 0, m0)
    vstore(largest, W, m1)
    vstore(sums, 0, s0)
    vstore(sums, W, s1)
    vstore(sums, R, w0)
    vstore(sums, R + W, w1)


@nb.njit(inline="always")
def _fma_weight(P, i, q0, q1, y0, y1):
    p = vbroadcast(P, i)
    return vfma(p, q0, y0), vfma(p, q1, y1)


@nb.njit(inline="always")
def _store_pair(Y, at, y0, y1, W):
    vstore(Y, at, y0)
    vstore(Y, at + W, y1)


@njit(nogil=True, error_model="numpy")
def _fused_product(P, s0, kp, means, dp, Y):
    """Y (PRODUCT_ROWS, dp) = the weights of rows s0 .. s0 + PRODUCT_ROWS - 1 of a tile (P holds class j's R = 2W
    rows at j R) times means (kp, dp), flat arrays, dp a multiple of W: the second GEMM of a fused chunk, on
    register tiles of PRODUCT_ROWS rows by 2W mean entries, then one vector of entries if dp is an odd number of
    vectors."""
    W = _vector_lanes(P)
    R = 2 * W
    z = vsplat(P.dtype.type(0.0))
    pairs = dp // (2 * W) * (2 * W)
    for l0 in range(0, pairs, 2 * W):
        y00 = y01 = y10 = y11 = y20 = y21 = y30 = y31 = z
        y40 = y41 = y50 = y51 = y60 = y61 = y70 = y71 = z
        for j in range(kp):
            q0 = vload(means, j * dp + l0)
            q1 = vload(means, j * dp + l0 + W)
            at = j * R + s0
            y00, y01 = _fma_weight(P, at, q0, q1, y00, y01)
            y10, y11 = _fma_weight(P, at + 1, q0, q1, y10, y11)
            y20, y21 = _fma_weight(P, at + 2, q0, q1, y20, y21)
            y30, y31 = _fma_weight(P, at + 3, q0, q1, y30, y31)
            y40, y41 = _fma_weight(P, at + 4, q0, q1, y40, y41)
            y50, y51 = _fma_weight(P, at + 5, q0, q1, y50, y51)
            y60, y61 = _fma_weight(P, at + 6, q0, q1, y60, y61)
            y70, y71 = _fma_weight(P, at + 7, q0, q1, y70, y71)
        _store_pair(Y, l0, y00, y01, W)
        _store_pair(Y, dp + l0, y10, y11, W)
        _store_pair(Y, 2 * dp + l0, y20, y21, W)
        _store_pair(Y, 3 * dp + l0, y30, y31, W)
        _store_pair(Y, 4 * dp + l0, y40, y41, W)
        _store_pair(Y, 5 * dp + l0, y50, y51, W)
        _store_pair(Y, 6 * dp + l0, y60, y61, W)
        _store_pair(Y, 7 * dp + l0, y70, y71, W)
    if pairs < dp:
        y0 = y1 = y2 = y3 = y4 = y5 = y6 = y7 = z
        for j in range(kp):
            q = vload(means, j * dp + pairs)
            at = j * R + s0
            y0 = vfma(vbroadcast(P, at), q, y0)
            y1 = vfma(vbroadcast(P, at + 1), q, y1)
            y2 = vfma(vbroadcast(P, at + 2), q, y2)
            y3 = vfma(vbroadcast(P, at + 3), q, y3)
            y4 = vfma(vbroadcast(P, at + 4), q, y4)
            y5 = vfma(vbroadcast(P, at + 5), q, y5)
            y6 = vfma(vbroadcast(P, at + 6), q, y6)
            y7 = vfma(vbroadcast(P, at + 7), q, y7)
        vstore(Y, pairs, y0)
        vstore(Y, dp + pairs, y1)
        vstore(Y, 2 * dp + pairs, y2)
        vstore(Y, 3 * dp + pairs, y3)
        vstore(Y, 4 * dp + pairs, y4)
        vstore(Y, 5 * dp + pairs, y5)
        vstore(Y, 6 * dp + pairs, y6)
        vstore(Y, 7 * dp + pairs, y7)


@nb.njit(inline="always")
def _first_largest(L, running, kp, R, r, c):
    """The first class of a chunk whose logit for tile row r is ``c``, the row's largest: a binary search for the
    first class tile after which the row's running maximum (``running``, stored after each tile) is c, then a
    search of that tile's logits (L, class j's R rows at j R)."""
    lo, hi = 0, kp // CLASS_TILE - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if running[mid * R + r] < c:
            lo = mid + 1
        else:
            hi = mid
    for j in range(lo * CLASS_TILE, lo * CLASS_TILE + CLASS_TILE):
        if L[j * R + r] == c:
            return j
    return 0


@njit(nogil=True, error_model="numpy")
def _fused_chunk(x, means, bias, k0, scale, threshold, run_max, run_arg, run_sum, run_w, acc, hints, hint_logit, work):
    """One chunk of the online softmax for every row of a block, both GEMMs and the pass fused on register tiles
    (eq. 31a): the chunk's means ``means`` (kc, d) and ``bias`` (kc,) against the block's rows ``x`` (B, d), in
    their dtype, updating run_max, run_arg, run_sum, run_w, acc (float64, (B, d)) and, for rows whose hinted
    class the chunk holds, hint_logit. Returns the number of rows that :func:`_chunk_pass` would have skipped
    (eq. 30), from which the caller chooses the next chunk's path, and the number skipped here: PRODUCT_ROWS rows
    that all skip the chunk leave out their second GEMM and add nothing (their exponentials are already spent).

    Each row's weights are taken relative to its running maximum before the chunk (the logit of the chunk's first
    class when it has none yet), so that the weights, their sums and their product with the means come out of
    one pass; a tile of rows with a chunk maximum more than FUSED_LIMIT above its reference is computed again
    relative to its chunk maxima. The sums are then rescaled to the new running maximum in float64. A row whose
    maximum grew takes the first index of its largest logit from the running maxima and the tile's logits
    (:func:`_first_largest`; scanning the logits cost 5 % of a float32 call at (B, K, d) = (1024, 4096, 32),
    where every row's maximum grows in the first chunk and often in the next), and a row whose hinted class the
    chunk holds takes its hinted logit from the tile's logits.
    ``work`` = (xt, pad_bias, padded, P, Y, L, constants): flat work arrays of at least the sizes used below
    (:func:`fused_work_sizes`), xt holding x's rows as :func:`_pack_rows` leaves them, and the exponential's
    constants (:func:`_exp_constants`). The means are read where
    they are, unless the chunk's length is not a multiple of CLASS_TILE or d not one of W: then from a zero-padded
    copy in ``padded``.
    """
    B, d = x.shape
    kc = means.shape[0]
    xt, pad_bias, padded, P, Yt, L, constants = work
    W = _vector_lanes(P)
    R = 2 * W
    kp = -(-kc // CLASS_TILE) * CLASS_TILE
    dp = -(-d // W) * W
    limit, pad = _fused_bounds(P)
    for c in range(kc):
        pad_bias[c] = bias[c]
    for c in range(kc, kp):  # padding classes: zero means, a bias far below any logit
        pad_bias[c] = pad
    if dp == d and kp == kc:  # both GEMMs read the means as they are
        flat = means.reshape(kc * d)
    else:
        flat = padded[: kp * dp]
        for c in range(kp):
            for l in range(dp):
                flat[c * dp + l] = means[c, l] if c < kc and l < d else 0.0
    reference = np.empty(R, dtype=P.dtype)
    largest = np.empty(R, dtype=P.dtype)
    running = np.empty(kp // CLASS_TILE * R, dtype=P.dtype)
    sums = np.empty(2 * R, dtype=P.dtype)
    would_skip = skipped = 0
    for g0 in range(0, B, R):
        n = min(R, B - g0)
        for r in range(R):
            m = run_max[g0 + r] if r < n else P.dtype.type(0.0)
            if m == -np.inf:  # no maximum yet: the chunk's first logit, in float64 (any logit serves)
                product = 0.0
                for l in range(d):
                    product += float(x[g0 + r, l]) * float(means[0, l])
                m = P.dtype.type(float(scale) * product + float(bias[0]))
            reference[r] = m
        _fused_weights(xt, g0 * d, d, flat, dp, pad_bias, kp, scale, reference, P, L, running, largest, sums,
                           constants)
        again = False
        for r in range(n):
            if largest[r] - reference[r] > limit:
                reference[r] = largest[r]
                again = True
        if again:
            _fused_weights(xt, g0 * d, d, flat, dp, pad_bias, kp, scale, reference, P, L, running, largest, sums,
                           constants)
        for s0 in range(0, n, PRODUCT_ROWS):
            rows = min(PRODUCT_ROWS, n - s0)
            skipping = 0
            for r in range(s0, s0 + rows):
                i = g0 + r
                if hints.shape[0] != 0 and k0 <= hints[i] < k0 + kc:
                    hint_logit[i] = L[(hints[i] - k0) * R + r]
                if largest[r] - run_max[i] < threshold:
                    skipping += 1
            would_skip += skipping
            if skipping == rows:  # every row skips the chunk (eq. 30): no second GEMM, nothing to add
                skipped += rows
                continue
            _fused_product(P, s0, kp, flat, dp, Yt)
            for r in range(s0, s0 + rows):
                i = g0 + r
                c = largest[r]
                m_old = run_max[i]
                if c > m_old:  # the first index of the largest logit
                    run_arg[i] = k0 + _first_largest(L, running, kp, R, r, c)
                m_new = max(m_old, c)
                ref = float(reference[r])
                fresh = math.exp(ref - float(m_new))
                s_chunk, w_chunk = float(sums[r]), float(sums[R + r])
                y = (r - s0) * dp
                if run_sum[i] > 0.0:
                    old = math.exp(float(m_old) - float(m_new))
                    run_w[i] = old * (run_w[i] + (float(m_old) - float(m_new)) * run_sum[i]) + \
                        fresh * (w_chunk + (ref - float(m_new)) * s_chunk)
                    run_sum[i] = old * run_sum[i] + fresh * s_chunk
                    for l in range(d):
                        acc[i, l] = old * acc[i, l] + fresh * float(Yt[y + l])
                else:
                    run_w[i] = fresh * (w_chunk + (ref - float(m_new)) * s_chunk)
                    run_sum[i] = fresh * s_chunk
                    for l in range(d):
                        acc[i, l] = fresh * float(Yt[y + l])
                run_max[i] = m_new
    return would_skip, skipped


def fused_work_sizes(rows, chunk, d, dtype):
    """Sizes of the work arrays (xt, pad_bias, padded, P, Y, L) of :func:`_fused_chunk` for blocks of at most
    ``rows`` rows and chunks of at most ``chunk`` classes in dimension d."""
    W = vector_bits() // (8 * np.dtype(dtype).itemsize)
    R = 2 * W
    kp = -(-chunk // CLASS_TILE) * CLASS_TILE
    dp = -(-d // W) * W
    return -(-rows // R) * R * d, kp, kp * dp, kp * R, PRODUCT_ROWS * dp, kp * R
