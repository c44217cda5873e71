"""The explicit SIMD vectors of the fused chunk (cfgphase.solvers.score.simd) against NumPy."""

import numba as nb
import numpy as np
import pytest

from cfgphase.solvers.score import simd
from cfgphase.solvers.score.simd import (lanes, vbroadcast, vfma, vldexp, vload, vlookup, vmax, vselect_ge, vsplat,
                                         vstore)


@nb.njit
def _operations(a, b, c, out):
    """Each operation on the vectors at a, b, c's elements 3 .. 3 + W - 1 (an unaligned offset), into rows of out."""
    W = lanes(a)
    x, y, z = vload(a, 3), vload(b, 3), vload(c, 3)
    vstore(out, 0 * W, vfma(x, y, z))
    vstore(out, 1 * W, vmax(x, y))
    vstore(out, 2 * W, vmax(z, x))
    vstore(out, 3 * W, vselect_ge(x, y, z, vsplat(a.dtype.type(-1.0))))
    vstore(out, 4 * W, x + y * z - y)
    vstore(out, 5 * W, vbroadcast(c, 5))
    return W


@nb.njit
def _scaled(p, t, out):
    vstore(out, 0, vldexp(vload(p, 0), vload(t, 0)))


@nb.njit
def _looked_up(table, t, out):
    vstore(out, 0, vlookup(table, vload(t, 0)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vector_operations_equal_numpys(dtype):
    """Every operation lane by lane as NumPy computes it (the multiply-add within the rounding of one operation,
    fused or not; the maximum as x86's, the second operand where either is NaN), on vectors loaded at an unaligned
    element offset."""
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(3 + 16 + 8).astype(dtype) for _ in range(3))  # at most 16 lanes
    c[3:5] = np.nan
    out = np.empty(6 * 64, dtype=dtype)
    W = _operations(a, b, c, out)
    assert W == simd.vector_bits() // (8 * np.dtype(dtype).itemsize)
    x, y, z = a[3 : 3 + W], b[3 : 3 + W], c[3 : 3 + W]
    rows = out[: 6 * W].reshape(6, W)
    exact = x.astype(np.float64) * y.astype(np.float64) + z  # fused or not, within one rounding of the dtype
    np.testing.assert_allclose(rows[0], exact, rtol=2 * np.finfo(dtype).eps, atol=0)
    np.testing.assert_array_equal(rows[1], np.where(x > y, x, y))
    np.testing.assert_array_equal(rows[2], np.where(z > x, z, x))  # NaN lanes of z: x
    assert np.isnan(z[:2]).all() and np.array_equal(rows[2][:2], x[:2])
    np.testing.assert_array_equal(rows[3], np.where(x >= y, z, -1.0))
    np.testing.assert_array_equal(rows[4], x + y * z - y)
    np.testing.assert_array_equal(rows[5], np.full(W, c[5]))


@pytest.mark.parametrize("dtype, width, bits", [(np.float32, 23, 5), (np.float64, 52, 4)])
def test_vldexp_scales_by_the_power_of_two_held_in_t(dtype, width, bits):
    """t = 1.5 2**width + 2**bits n + j (0 <= j < 2**bits) holds n above the table index j in the low bits of its
    mantissa: vldexp(p, t) is p 2**n exactly, for p in [1, 2) and n from the smallest normal exponent (plus one)
    to the largest."""
    W = simd.vector_bits() // (8 * np.dtype(dtype).itemsize)
    info = np.finfo(dtype)
    rng = np.random.default_rng(1)
    for n in np.linspace(info.minexp + 1, info.maxexp - 1, 5 * W).astype(int).reshape(-1, W):
        j = rng.integers(0, 2**bits, W)
        t = (1.5 * 2.0**width + 2**bits * n + j).astype(dtype)
        p = rng.uniform(1, 2, W).astype(dtype)
        out = np.empty(W, dtype=dtype)
        _scaled(p, t, out)
        np.testing.assert_array_equal(out, np.ldexp(p, n))


@pytest.mark.parametrize("dtype, entries", [(np.float32, 32), (np.float64, 16)])
def test_vlookup_takes_the_table_entry_of_the_low_bits(dtype, entries):
    """The entry at the low log2(entries) bits of each lane's bits, whatever the bits above (negative n included)."""
    W = simd.vector_bits() // (8 * np.dtype(dtype).itemsize)
    width = 23 if dtype == np.float32 else 52
    table = (np.arange(entries) + 0.25).astype(dtype)
    rng = np.random.default_rng(2)
    for _ in range(8):
        j = rng.integers(0, entries, W)
        n = rng.integers(-100, 100, W)
        t = (1.5 * 2.0**width + entries * n + j).astype(dtype)
        out = np.empty(W, dtype=dtype)
        _looked_up(table, t, out)
        np.testing.assert_array_equal(out, table[j])


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
