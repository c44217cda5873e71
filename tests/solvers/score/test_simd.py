"""The explicit SIMD vectors of the fused chunk (cfgphase.solvers.score.simd) against NumPy."""

import numba as nb
import numpy as np
import pytest

from cfgphase.solvers.score import simd
from cfgphase.solvers.score.simd import (lanes, vbroadcast, vexponent_bits, vfma, vhmax, vload, vmax, vmin,
                                         vselect_ge, vsplat, vstore, vsum)


@nb.njit
def _operations(a, b, c, out, reductions):
    """Each operation on the vectors at a, b, c's elements 3 .. 3 + W - 1 (an unaligned offset), into rows of out."""
    W = lanes(a)
    x, y, z = vload(a, 3), vload(b, 3), vload(c, 3)
    vstore(out, 0 * W, vfma(x, y, z))
    vstore(out, 1 * W, vmax(x, y))
    vstore(out, 2 * W, vmin(x, y))
    vstore(out, 3 * W, vselect_ge(x, y, z, vsplat(a.dtype.type(-1.0))))
    vstore(out, 4 * W, x + y * z - y)
    vstore(out, 5 * W, vbroadcast(c, 5))
    reductions[0] = vsum(x)
    reductions[1] = vhmax(x)
    return W


@nb.njit
def _powers_of_two(t, out):
    vstore(out, 0, vexponent_bits(vload(t, 0)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vector_operations_equal_numpys(dtype):
    """Every operation lane by lane as NumPy computes it (the multiply-add within the rounding of one operation,
    fused or not; the sum of the lanes pairwise), on vectors loaded at an unaligned element offset."""
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(3 + 16 + 8).astype(dtype) for _ in range(3))  # at most 16 lanes
    out = np.empty(6 * 64, dtype=dtype)
    reductions = np.empty(2, dtype=dtype)
    W = _operations(a, b, c, out, reductions)
    assert W == simd.vector_bits() // (8 * np.dtype(dtype).itemsize)
    x, y, z = a[3 : 3 + W], b[3 : 3 + W], c[3 : 3 + W]
    rows = out[: 6 * W].reshape(6, W)
    exact = x.astype(np.float64) * y.astype(np.float64) + z  # fused or not, within one rounding of the dtype
    np.testing.assert_allclose(rows[0], exact, rtol=2 * np.finfo(dtype).eps, atol=0)
    np.testing.assert_array_equal(rows[1], np.maximum(x, y))
    np.testing.assert_array_equal(rows[2], np.minimum(x, y))
    np.testing.assert_array_equal(rows[3], np.where(x >= y, z, -1.0))
    np.testing.assert_array_equal(rows[4], x + y * z - y)
    np.testing.assert_array_equal(rows[5], np.full(W, c[5]))
    pairwise = x.copy()
    while pairwise.size > 1:
        pairwise = pairwise[: pairwise.size // 2] + pairwise[pairwise.size // 2 :]
    assert reductions[0] == pairwise[0]
    assert reductions[1] == x.max()


@pytest.mark.parametrize("dtype, width, bias", [(np.float32, 23, 127), (np.float64, 52, 1023)])
def test_exponent_bits_give_powers_of_two(dtype, width, bias):
    """t = n + bias + 1.5 2**width holds n + bias in the low bits of its mantissa; shifted into the exponent field
    they give 2**n exactly, for n from the smallest normal exponent to the largest."""
    W = simd.vector_bits() // (8 * np.dtype(dtype).itemsize)
    info = np.finfo(dtype)
    for n in np.linspace(info.minexp, info.maxexp - 1, 5 * W).astype(int).reshape(-1, W):
        t = (n + bias + 1.5 * 2.0**width).astype(dtype)
        out = np.empty(W, dtype=dtype)
        _powers_of_two(t, out)
        np.testing.assert_array_equal(out, np.ldexp(np.ones(W, dtype=dtype), n))


def test_the_vector_width_follows_numbas_cpu_features(monkeypatch):
    """512 bits where the features Numba compiles for (NUMBA_CPU_FEATURES, else the host's) have AVX-512F."""
    width = simd.vector_bits.__wrapped__
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx,+avx2,+fma,-avx512f")
    assert width() == 256
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx,+avx2,+fma,+avx512f")
    assert width() == 512
    monkeypatch.delenv("NUMBA_CPU_FEATURES")
    from llvmlite import binding

    assert width() == (512 if binding.get_host_cpu_features().get("avx512f") else 256)
