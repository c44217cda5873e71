"""Explicit SIMD vectors for Numba: a vector type and the handful of operations the fused kernel needs.

Numba has no vector types, and LLVM's auto-vectoriser does not keep a register tile of a matrix product
in registers across its inner loop. A value of type :class:`Vector` is an LLVM ``<lanes x float>``
(``lanes`` = :func:`vector_bits` / the float's width): a register on the CPUs the width is chosen for,
which LLVM allocates, schedules and (on narrower CPUs) splits. Loads and stores take a contiguous array
and a flat element index, without Numba's wraparound of negative indices or bounds checks: the caller
guarantees ``0 <= index`` and ``index + lanes <= size``.

Used by the streaming kernel's fused chunk (cfgphase.solvers.score.kernel, docs/theory.md eq. 31a);
only callable from Numba.
"""

from __future__ import annotations

import functools
import operator
import os

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, overload, register_model


@functools.cache
def vector_bits():
    """Width in bits of the vectors compiled here: 512 where the CPU Numba compiles for has AVX-512F, else 256.

    Read when a function using vectors is compiled (never at import): from ``NUMBA_CPU_FEATURES`` when it is
    set (Numba then compiles for those features), else from the host CPU. Numba's cache is keyed by the CPU,
    so code compiled for one width is not loaded on a CPU of the other.
    """
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features is None:
        from llvmlite import binding

        return 512 if binding.get_host_cpu_features().get("avx512f") else 256
    return 512 if "+avx512f" in features.split(",") else 256


class Vector(types.Type):
    """``lanes`` floats of type ``dtype`` in one SIMD value."""

    def __init__(self, dtype, lanes):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vector({dtype}, {lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes))


def vector_of(dtype):
    """The :class:`Vector` type of a Numba float type."""
    return Vector(dtype, vector_bits() // dtype.bitwidth)


def lanes(array):
    """Lanes of the vectors of ``array``'s float dtype (in Numba a compile-time constant, by the overload below)."""
    return vector_bits() // (8 * array.dtype.itemsize)


@overload(lanes)
def _lanes(array):
    n = vector_of(array.dtype).lanes
    return lambda array: n


def _i32(value):
    return ir.Constant(ir.IntType(32), value)


def _splat(builder, value, vt, lty):
    v = builder.insert_element(ir.Constant(lty, ir.Undefined), value, _i32(0))
    return builder.shuffle_vector(v, ir.Constant(lty, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32),
                                                                                               vt.lanes), None))


def _element_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index])


@intrinsic
def vload(typingctx, array, index):
    """The vector of ``array``'s flat elements index .. index + lanes - 1 (C-contiguous ``array``)."""
    if not isinstance(array, types.Array) or not isinstance(array.dtype, types.Float):
        return None
    vt = vector_of(array.dtype)

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        pointer = builder.bitcast(pointer, context.get_value_type(vt).as_pointer())
        return builder.load(pointer, align=array.dtype.bitwidth // 8)

    return vt(array, index), codegen


@intrinsic
def vstore(typingctx, array, index, v):
    """Store vector ``v`` at ``array``'s flat elements index .. index + lanes - 1."""
    if not (isinstance(array, types.Array) and isinstance(v, Vector) and v.dtype == array.dtype):
        return None

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(pointer, args[2].type.as_pointer()), align=array.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(array, index, v), codegen


@intrinsic
def vbroadcast(typingctx, array, index):
    """``array``'s flat element ``index`` in every lane (one broadcast load)."""
    if not isinstance(array, types.Array) or not isinstance(array.dtype, types.Float):
        return None
    vt = vector_of(array.dtype)

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        value = builder.load(pointer, align=array.dtype.bitwidth // 8)
        return _splat(builder, value, vt, context.get_value_type(vt))

    return vt(array, index), codegen


@intrinsic
def vsplat(typingctx, x):
    """The float ``x`` in every lane."""
    if not isinstance(x, types.Float):
        return None
    vt = vector_of(x)
    return vt(x), lambda context, builder, sig, args: _splat(builder, args[0], vt, context.get_value_type(vt))


def _llvm_call(context, builder, vt, name, args):
    lty = context.get_value_type(vt)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lty, [lty] * len(args)),
                                        f"{name}.v{vt.lanes}f{vt.dtype.bitwidth}")
    return builder.call(fn, args)


@intrinsic
def vfma(typingctx, a, b, c):
    """a b + c, fused where the CPU has FMA (LLVM's ``fmuladd``)."""
    if not (isinstance(a, Vector) and a == b == c):
        return None
    return a(a, b, c), lambda context, builder, sig, args: _llvm_call(context, builder, a, "llvm.fmuladd", args)


@intrinsic
def vmax(typingctx, a, b):
    """Lane-wise a where a > b, else b (x86's max: b where either is NaN)."""
    if not (isinstance(a, Vector) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vselect_ge(typingctx, a, b, x, y):
    """Lane-wise x where a >= b, else y."""
    if not (isinstance(a, Vector) and a == b and x == y == a):
        return None

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">=", args[0], args[1]), args[2], args[3])

    return a(a, b, x, y), codegen


@intrinsic
def vldexp(typingctx, p, t):
    """p 2**n for t = 1.5 2**m + 2**b n + j, 0 <= j < 2**b (m the mantissa's width, 52 or 23; b = 4 for float64, 5
    for float32, the index bits of :func:`vlookup`): t's bits shifted right by b and left by m leave n in the
    exponent field, and are added to p's bits as integers (exact while the result is normal)."""
    if not (isinstance(p, Vector) and p == t):
        return None

    def codegen(context, builder, sig, args):
        width = p.dtype.bitwidth
        ity = ir.VectorType(ir.IntType(width), p.lanes)
        bits = builder.lshr(builder.bitcast(args[1], ity), ir.Constant(ity, [4 if width == 64 else 5] * p.lanes))
        shifted = builder.shl(bits, ir.Constant(ity, [52 if width == 64 else 23] * p.lanes))
        return builder.bitcast(builder.add(builder.bitcast(args[0], ity), shifted), args[0].type)

    return p(p, t), codegen


@intrinsic
def vlookup(typingctx, table, t):
    """The entries of ``table`` (a C-contiguous array of 1024 / width floats: 16 float64 or 32 float32, two 512-bit
    registers) at the index held by the low bits of each lane of t's bits (4 or 5 of them): AVX-512's two-register
    permute (vpermi2pd, vpermi2ps) where vectors are 512 bits wide, else lane by lane."""
    if not (isinstance(table, types.Array) and isinstance(t, Vector) and table.dtype == t.dtype):
        return None

    def codegen(context, builder, sig, args):
        width, lanes = t.dtype.bitwidth, t.lanes
        ity = ir.VectorType(ir.IntType(width), lanes)
        lty = args[1].type
        index = builder.bitcast(args[1], ity)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        if lanes * width == 512:
            low = builder.load(builder.bitcast(data, lty.as_pointer()), align=width // 8)
            high = builder.load(builder.bitcast(builder.gep(data, [_i32(lanes)]), lty.as_pointer()), align=width // 8)
            name = "llvm.x86.avx512.vpermi2var." + ("pd" if width == 64 else "ps") + ".512"
            permute = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lty, [lty, ity, lty]), name)
            return builder.call(permute, [low, index, high])
        mask = ir.Constant(ir.IntType(width), 1024 // width - 1)
        out = ir.Constant(lty, ir.Undefined)
        for i in range(lanes):
            j = builder.and_(builder.extract_element(index, _i32(i)), mask)
            out = builder.insert_element(out, builder.load(builder.gep(data, [j])), _i32(i))
        return out

    return t(table, t), codegen


def _operator(op, name):
    @intrinsic
    def apply(typingctx, a, b):
        if not (isinstance(a, Vector) and a == b):
            return None
        return a(a, b), lambda context, builder, sig, args: getattr(builder, name)(*args)

    @overload(op)
    def _overload(a, b):
        if isinstance(a, Vector) and a == b:
            return lambda a, b: apply(a, b)

    return apply


vadd = _operator(operator.add, "fadd")
vsub = _operator(operator.sub, "fsub")
vmul = _operator(operator.mul, "fmul")
