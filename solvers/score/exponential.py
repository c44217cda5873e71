"""The exponentials of the streaming kernel's softmax weights, scalar and vector (docs/theory.md eqs. 30-31a).

Numba's ``np.exp`` is a scalar libm call (SVML needs a patched LLVM that pip's llvmlite lacks); in the softmax
pass it cost as much as both GEMMs. Here, branch-free and to about an ulp:

* :func:`_exp_weight`, the weight of the BLAS path's softmax pass (cfgphase.solvers.score.kernel._chunk_pass),
  in float32 or float64: Cody-Waite reduction to |r| <= ln2/2 and a near-minimax polynomial, which LLVM
  vectorises in the caller's loop; 0 below the weight floor (WEIGHT_FLOOR32/64, after eq. 30);
* :func:`_vexp`, the fused chunk's exponential of a SIMD vector (cfgphase.solvers.score.fused, eq. 31a):
  table-driven, with fewer multiply-adds, which share the FMA units with the GEMMs around it.

Only callable from Numba, except :func:`_exp_weight` and :func:`_exp_constants`.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

from cfgphase.physics.disorder_jit import bitcast, int64_bits_as_float64
from cfgphase.physics.numba_cache import njit
from cfgphase.solvers.score.simd import vbroadcast, vfma, vldexp, vlookup, vselect_ge, vsplat


# Fast-math flags without 'reassoc' and 'afn': the Cody-Waite reduction in _exp_nonpositive
# relies on the order of its subtractions.
_EXACT_MATH = {"nnan", "ninf", "nsz", "contract", "arcp"}


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
#: z log2(e) + _SHIFT64 rounds z log2(e) to the nearest integer n and holds n + 1023 in the
#: low bits of its mantissa, which a left shift by 52 moves into the exponent field: the bits of 2**n.
_SHIFT64 = 1.5 * 2**52 + 1023
#: Near-minimax polynomial for exp(r) on |r| <= ln2/2, degree 11, highest first (Chebyshev fit in 50-digit
#: arithmetic, mpmath.chebyfit): error 4.5e-18 relative before rounding, against 2.4e-16 for the degree-12
#: Taylor polynomial it replaces.
_EXP64 = (2.5110037605963777e-08, 2.763263963904103e-07, 2.755724091857897e-06, 2.4801485482328494e-05,
          0.00019841269890047113, 0.0013888888952314775, 0.008333333333319601, 0.0416666666664881,
          0.1666666666666668, 0.5000000000000019, 1.0, 1.0)

_float64_bits_as_int64 = bitcast(types.float64, types.int64)


@njit(fastmath=_EXACT_MATH)
def _exp_nonpositive(z):
    """exp(z) for z <= 0 to about 1 ulp, branch-free so that LLVM vectorises the caller's loop.

    Numba's np.exp is a scalar libm call (SVML needs a patched LLVM that pip's llvmlite lacks);
    in the softmax pass it cost as much as both GEMMs. Cody-Waite reduction z = n ln2 + r,
    |r| <= ln2/2, with n rounded by adding _SHIFT64, whose bits then give 2**n after one integer
    shift (no float-to-integer conversion, which AVX2 lacks for 64-bit integers); the degree-11
    polynomial _EXP64. Inputs below -708 are clamped (result ~3e-308, negligible in any sum).
    """
    z = _fmax(z, -708.0)
    t = z * _LOG2E + _SHIFT64
    n = t - _SHIFT64  # exact: n = round(z log2 e)
    r = z - n * _LN2_HI - n * _LN2_LO
    p = _EXP64[0]
    for c in _EXP64[1:]:
        p = p * r + c
    return p * int64_bits_as_float64(_float64_bits_as_int64(t) << 52)


_int32_bits_as_float32 = bitcast(types.int32, types.float32)
_float32_bits_as_int32 = bitcast(types.float32, types.int32)


_LOG2E_32 = np.float32(_LOG2E)
_LN2_HI_32 = np.float32(0.693145751953125)  # 12 significant bits: n * _LN2_HI_32 is exact for |n| < 2**11
_LN2_LO_32 = np.float32(1.428606765330187e-06)
_SHIFT32 = np.float32(1.5 * 2**23 + 127)  # as _SHIFT64
#: exp(r) on |r| <= ln2/2, degree 6 (as _EXP64): 2.8e-9 relative before rounding to float32 (the degree-7 Taylor
#: polynomial it replaces: 7.3e-9).
_EXP32 = tuple(np.float32(c) for c in (0.0013941108433972674, 0.008375126398153335, 0.04166635289677516,
                                       0.16666415514653277, 0.5000000047117757, 1.000000037716214, 1.0))


@njit(fastmath=_EXACT_MATH)
def _exp_nonpositive32(z):
    """float32 exp(z) for z <= 0 to about 1 ulp (the float32 analogue of _exp_nonpositive).

    The degree-6 polynomial _EXP32; inputs below -87 (the smallest normal float32) are clamped.
    """
    z = _fmax(z, np.float32(-87.0))
    t = z * _LOG2E_32 + _SHIFT32
    n = t - _SHIFT32
    r = z - n * _LN2_HI_32 - n * _LN2_LO_32
    p = _EXP32[0]
    for c in _EXP32[1:]:
        p = p * r + c
    return p * _int32_bits_as_float32(_float32_bits_as_int32(t) << np.int32(23))


#: Softmax weights exp(z) below 2**-96 (float32) and 2**-992 (float64) are set to 0 (docs/theory.md, after eq. 30).
#: Near the smallest normal number (2**-126, 2**-1022) a weight times a mean entry is subnormal, and on Intel CPUs
#: every subnormal product in the second GEMM takes a microcode assist: a condensed float32 posterior (most logits
#: more than 87 below the maximum, clamped to about 2**-126) ran 3-4 times slower than float64 on a Sapphire Rapids
#: VM. Above the floor, a product is normal for any mean entry above 2**-30. What is dropped is negligible: each
#: row's weights sum to at least 1 (its largest is exp(0)), so K < 2**40 dropped weights add less than 2**-56
#: (2**-952) to it, far below the rounding of its float32 (float64) sums.
WEIGHT_FLOOR32 = np.float32(-96 * math.log(2.0))
WEIGHT_FLOOR64 = -992 * math.log(2.0)


def _exp_weight(z):
    """exp(z), z <= 0, in the precision of z (in Numba dispatched at compile time, by the overload below), 0 below
    WEIGHT_FLOOR32/64."""
    return _weight32(z) if isinstance(z, np.float32) else _weight64(z)


@njit(fastmath=_EXACT_MATH)
def _weight32(z):
    e = _exp_nonpositive32(z)  # computed for every z and then selected: the caller's loop stays branch-free
    return e if z >= WEIGHT_FLOOR32 else np.float32(0.0)


@njit(fastmath=_EXACT_MATH)
def _weight64(z):
    e = _exp_nonpositive(z)
    return e if z >= WEIGHT_FLOOR64 else 0.0


@overload(_exp_weight)
def _exp_weight_overload(z):
    if isinstance(z, types.Float) and z.bitwidth == 32:
        return lambda z: _weight32(z)
    return lambda z: _weight64(z)


#: The fused chunk's exponential (:func:`_vexp`, eq. 31a) takes 2**(j/T) from a table of T = 16 (float64) or 32
#: (float32) entries, two 512-bit registers; here 2**(j/T), j = 0 .. T - 1, correctly rounded (mpmath).
_EXP_TABLE64 = (1.0, 1.0442737824274138, 1.0905077326652577, 1.1387886347566916, 1.189207115002721, 1.241857812073484,
                1.2968395546510096, 1.3542555469368927, 1.4142135623730951, 1.4768261459394993, 1.5422108254079407,
                1.6104903319492543, 1.681792830507429, 1.7562521603732995, 1.8340080864093424, 1.9152065613971474)
_EXP_TABLE32 = (1.0, 1.0218971967697144, 1.0442737340927124, 1.0671404600143433, 1.0905077457427979,
                1.114386796951294, 1.1387885808944702, 1.1637248992919922, 1.1892070770263672, 1.215247392654419,
                1.2418577671051025, 1.2690509557724, 1.2968395948410034, 1.3252366781234741, 1.3542555570602417,
                1.3839099407196045, 1.4142135381698608, 1.4451807737350464, 1.4768261909484863, 1.5091644525527954,
                1.5422108173370361, 1.5759809017181396, 1.610490322113037, 1.6457555294036865, 1.6817928552627563,
                1.7186193466186523, 1.7562521696090698, 1.7947090864181519, 1.8340080976486206, 1.8741676807403564,
                1.9152065515518188, 1.9571441411972046)
#: q(r) = (e**r - 1)/r on |r| <= ln2/(2T), highest degree first, near minimax (mpmath.chebyfit): e**r = 1 + r q(r)
#: within 1.4e-17 (float64, degree 5) and 1.5e-10 (float32, degree 2) relative, before rounding.
_EXPM1_64 = (0.0013889063440655327, 0.008333472974951229, 0.041666666663595475, 0.16666666664209706,
             0.5000000000000001, 1.0000000000000007)
_EXPM1_32 = (0.16666739978132164, 0.500003665576346, 1.0)


def _exp_constants(dtype):
    """The constants of :func:`_vexp` in one array of ``dtype``: the table 2**(j/T) (T entries), then T log2 e, the
    rounding shift 1.5 2**mantissa, -ln2/T in a high and a low part, the weight floor WEIGHT_FLOOR32/64, and the
    coefficients of q (:func:`_exp_layout` gives T and their number). The fused chunk reads them from this array at
    each use: constants that LLVM knows it keeps in registers, which the tiles' accumulators need (float32 ran
    1.3 times slower)."""
    if np.dtype(dtype) == np.float32:
        table, coefficients, hi, lo, floor = _EXP_TABLE32, _EXPM1_32, _LN2_HI_32, _LN2_LO_32, WEIGHT_FLOOR32
        shift = 1.5 * 2**23
    else:
        table, coefficients, hi, lo, floor = _EXP_TABLE64, _EXPM1_64, _LN2_HI, _LN2_LO, WEIGHT_FLOOR64
        shift = 1.5 * 2**52
    T = len(table)
    return np.array((*table, T * _LOG2E, shift, -float(hi) / T, -float(lo) / T, floor, *coefficients), dtype=dtype)


def _exp_layout(constants):
    """(T, number of coefficients) of :func:`_exp_constants` for the array's dtype (in Numba compile-time constants,
    by the overload below)."""
    return (len(_EXP_TABLE32), len(_EXPM1_32)) if constants.dtype == np.float32 else \
        (len(_EXP_TABLE64), len(_EXPM1_64))


@overload(_exp_layout)
def _exp_layout_overload(constants):
    layout = _exp_layout(np.empty(0, dtype=np.float32 if constants.dtype.bitwidth == 32 else np.float64))
    return lambda constants: layout


@nb.njit(inline="always")
def _vexp(z, constants):
    """exp(z) for a Vector of z <= FUSED_LIMIT, 0 below WEIGHT_FLOOR32/64, ``constants`` from :func:`_exp_constants`
    in z's precision (eq. 31a): with T table entries (16 in float64, 32 in float32), z = (T n + j) ln2/T + r, |r| <=
    ln2/(2T), m = T n + j rounded by adding the shift, whose low bits then hold j and n; e**z = 2**n 2**(j/T)
    (1 + r q(r)), 2**(j/T) from the table (:func:`vlookup`), 2**n by an integer add (:func:`vldexp`). Ten
    multiply-adds per vector in float64 and seven in float32, where the polynomial of _exp_weight takes fifteen and
    ten. No clamps: z below the floor is selected away whatever its exponential came to, and the fused chunk
    computes a tile again before it uses a z above FUSED_LIMIT (cfgphase.solvers.score.fused)."""
    T, terms = _exp_layout(constants)
    shift = vbroadcast(constants, T + 1)
    t = vfma(z, vbroadcast(constants, T), shift)
    m = t - shift
    r = vfma(m, vbroadcast(constants, T + 2), z)
    r = vfma(m, vbroadcast(constants, T + 3), r)
    q = vbroadcast(constants, T + 5)
    for i in range(T + 6, T + 5 + terms):
        q = vfma(q, r, vbroadcast(constants, i))
    power = vlookup(constants, t)
    e = vfma(power, q * r, power)
    return vselect_ge(z, vbroadcast(constants, T + 4), vldexp(e, t), vsplat(constants.dtype.type(0.0)))
