r"""The generator of cfgphase.physics.disorder (docs/theory.md eq. 64) compiled with Numba: the form the
streaming kernel calls chunk by chunk, one class group at a time, and that draws large blocks of means.

Bit for bit the numbers of the NumPy form in cfgphase.physics.disorder (tested): the same Philox words,
the same branch-free logarithm, sine and cosine (written as polynomials so that the loop over pairs
vectorises; Numba's ``math.log`` and ``math.cos`` are scalar library calls), the same summation order
of the squared norms. Compiled without fast-math, so that no contraction or reassociation can make a
value depend on the loop it was inlined into.

This module imports Numba: it is loaded when a large block of means is drawn or generated in the
kernel, never by ``import cfgphase``.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from cfgphase.physics.disorder import (_ATANH_SERIES, _COS_SERIES, _HALF_PI, _LN2_HI, _LN2_LO, _LOW32, _M0, _M1,
                                       _ONE_BITS, _S12, _S32, _SIN_SERIES, _SQRT2, _W0, _W1)
from cfgphase.physics.numba_cache import njit


def bitcast(source, target):
    """An intrinsic that reinterprets the bits of a ``source`` Numba type as a ``target`` type of the
    same width (an LLVM bitcast; vectorises)."""

    @intrinsic
    def reinterpret(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return reinterpret


int64_bits_as_float64 = bitcast(types.int64, types.float64)
_float64_bits_as_int64 = bitcast(types.float64, types.int64)


@njit(error_model="numpy", fastmath=False, inline="always")
def horner(x, coefficients):
    """sum_i coefficients[i] x^(n-1-i), highest power first, by Horner's rule; inlined in Numba's IR, so
    that it runs with the caller's floating-point flags."""
    p = coefficients[0]
    for c in coefficients[1:]:
        p = p * x + c
    return p


@njit(error_model="numpy", fastmath=False)
def _philox_round(c0, c1, c2, c3, k0, k1, i):
    """Round i of Philox-4x32, with the key bumped i times by the Weyl constants."""
    p0 = _M0 * c0
    p1 = _M1 * c2
    k0 = (k0 + i * _W0) & _LOW32
    k1 = (k1 + i * _W1) & _LOW32
    return (p1 >> _S32) ^ c1 ^ k0, p1 & _LOW32, (p0 >> _S32) ^ c3 ^ k1, p0 & _LOW32


@njit(error_model="numpy", fastmath=False, inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox-4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1): four 32-bit words.

    Every argument and result is a uint64 holding a 32-bit word (the 32 x 32 -> 64 bit products
    are exact in uint64). Inlined in Numba's IR and its ten rounds written out: otherwise LLVM
    vectorises no caller's loop over coordinates (17 ns a pair, or 12 with a loop of rounds, instead of 1)."""
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1, np.uint64(0))
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1, np.uint64(1))
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1, np.uint64(2))
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1, np.uint64(3))
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1, np.uint64(4))
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1, np.uint64(5))
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1, np.uint64(6))
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1, np.uint64(7))
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1, np.uint64(8))
    return _philox_round(c0, c1, c2, c3, k0, k1, np.uint64(9))


@njit(error_model="numpy", fastmath=False)
def _log_unit(u):
    """log(u) for u in (0, 1), branch-free: u = 2^e m with m in [sqrt(1/2), sqrt(2)),
    log m = 2 atanh f, f = (m - 1)/(m + 1), |f| < 0.172, by its series to f^23 (truncation < 1e-18)."""
    bits = _float64_bits_as_int64(u)
    e = (bits >> 52) - 1023
    m = int64_bits_as_float64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = np.int64(m > _SQRT2)  # arithmetic, not a select: LLVM branched on it and lost vectorisation
    m = m * (1.0 - 0.5 * big)
    e = e + big
    f = (m - 1.0) / (m + 1.0)
    return e * _LN2_HI + (2.0 * f * horner(f * f, _ATANH_SERIES) + e * _LN2_LO)


@njit(error_model="numpy", fastmath=False)
def _cos_sin_turn(u):
    """(cos 2 pi u, sin 2 pi u) for u in [0, 1), branch-free: 4u = n + r exactly, |r| <= 1/2, then
    Taylor polynomials of phi = r pi/2 (|phi| <= pi/4; truncation < 1e-16) rotated by n quarter turns."""
    v = 4.0 * u
    n = np.floor(v + 0.5)
    phi = (v - n) * _HALF_PI
    s2 = phi * phi
    c = horner(s2, _COS_SERIES)
    s = phi * horner(s2, _SIN_SERIES)
    q = np.int64(n) & 3  # quarter turns: (c, s) -> (-s, c) -> (-c, -s) -> (s, -c), as exact arithmetic
    odd = np.float64(q & 1)
    sign_cos = 1.0 - 2.0 * np.float64((q + 1) >> 1 & 1)
    sign_sin = 1.0 - 2.0 * np.float64(q >> 1)
    return sign_cos * (c * (1.0 - odd) + s * odd), sign_sin * (s * (1.0 - odd) + c * odd)


@njit(error_model="numpy", fastmath=False)
def _unit_interval(bits):
    """(bits >> 12) 2^-52 in [0, 1) for a uint64, exactly: the 52 bits become the mantissa of a number
    in [1, 2) (a bitcast; vectorises, where AVX2 has no 64-bit integer to float conversion)."""
    return int64_bits_as_float64(np.int64((bits >> _S12) | _ONE_BITS)) - 1.0


#: Classes generated together: each stage of the generator runs as one loop over all their coordinate pairs.
GROUP = 32


@njit(nogil=True, error_model="numpy", fastmath=False)
def _fill(k0, k1, std, start, indices, scratch, out, sq_norms):
    r"""Class means (start + i, or indices[i] if given) into ``out`` (n, d) of any float dtype (cast from
    float64), and their squared norms in float64 into ``sq_norms`` (n,), summed in a fixed order: pair
    sums :math:`\mu_{2p}^2 + \mu_{2p+1}^2`, four running sums over p mod 4, then ((s0 + s1) + (s2 + s3)).

    ``scratch`` holds the work arrays of :func:`class_scratch`. :data:`GROUP` classes at a time, in
    stages: the Philox words (integer code), then Box-Muller over all the group's pairs (vectorised),
    then the interleaving (one loop over the group when d is even) and per class the norm. One loop
    for everything was not vectorised by LLVM, and per class the loops were too short to pay for
    their set-up (2.9 ns an entry; 2.45 with the group's interleaving in one loop)."""
    n, d = out.shape
    h = (d + 1) // 2
    bits1, bits2, even, odd, pair = scratch
    for g0 in range(0, n, GROUP):
        g = min(GROUP, n - g0)
        for i in range(g):
            kk = np.uint64(start + g0 + i) if indices is None else np.uint64(indices[g0 + i])
            k_lo, k_hi = kk & _LOW32, kk >> _S32
            base = i * h
            for p in range(h):
                w0, w1, w2, w3 = philox4x32(np.uint64(p), k_lo, k_hi, np.uint64(0), k0, k1)
                bits1[base + p] = (w0 << _S32) | w1
                bits2[base + p] = (w2 << _S32) | w3
        for q in range(g * h):
            u1 = 1.0 - _unit_interval(bits1[q])  # in (0, 1]
            u2 = _unit_interval(bits2[q])
            r = math.sqrt(-2.0 * _log_unit(u1))
            c, s = _cos_sin_turn(u2)
            a = r * c * std
            b = r * s * std
            even[q] = a
            odd[q] = b
        for q in range(g * h):
            pair[q] = even[q] * even[q] + odd[q] * odd[q]
        if d % 2 == 0:  # the group's rows are one run of pairs: one long interleaving loop
            flat = out[g0 : g0 + g].reshape(g * d)
            for q in range(g * h):
                flat[2 * q] = even[q]
                flat[2 * q + 1] = odd[q]
        for i in range(g):
            base = i * h
            if d % 2:
                row = out[g0 + i]
                for p in range(d // 2):
                    row[2 * p] = even[base + p]
                    row[2 * p + 1] = odd[base + p]
                row[d - 1] = even[base + h - 1]
                pair[base + h - 1] = even[base + h - 1] * even[base + h - 1]
            s0 = s1 = s2 = s3 = 0.0
            for p in range(0, h - 3, 4):
                s0 += pair[base + p]
                s1 += pair[base + p + 1]
                s2 += pair[base + p + 2]
                s3 += pair[base + p + 3]
            rest = h % 4
            if rest > 0:
                s0 += pair[base + h - rest]
            if rest > 1:
                s1 += pair[base + h - rest + 1]
            if rest > 2:
                s2 += pair[base + h - rest + 2]
            sq_norms[g0 + i] = (s0 + s1) + (s2 + s3)


def class_scratch(d):
    """The work arrays of :func:`fill_class_range` and :func:`fill_class_means` at dimension d."""
    h = GROUP * ((d + 1) // 2)
    return np.empty(h, np.uint64), np.empty(h, np.uint64), np.empty(h), np.empty(h), np.empty(h)


@njit(nogil=True, error_model="numpy", fastmath=False)
def fill_class_means(k0, k1, std, indices, scratch, out, sq_norms):
    """Class means ``indices`` (n,) into ``out`` (n, d) (any float dtype) and their squared norms
    into ``sq_norms`` (n,) float64; ``scratch`` from :func:`class_scratch`."""
    _fill(k0, k1, std, 0, indices, scratch, out, sq_norms)


@njit(nogil=True, error_model="numpy", fastmath=False)
def fill_class_range(k0, k1, std, start, scratch, out, sq_norms):
    """Class means start .. start + n - 1 into ``out`` (n, d) (any float dtype), squared norms into
    ``sq_norms`` (n,) float64; ``scratch`` from :func:`class_scratch`."""
    _fill(k0, k1, std, start, None, scratch, out, sq_norms)


