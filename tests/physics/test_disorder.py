"""The counter-based class means (physics/disorder.py, docs/theory.md eq. 64): Philox against its
published answers, entries that depend on (seed, k, j) alone, a standard normal law, and the stored
random mixture materialised from the same generator."""

import math

import numpy as np
import pytest
from scipy import stats

import cfgphase as cp
from cfgphase.physics.disorder import NUMPY_ENTRIES, SUM_BLOCK, RandomMeans, blocked_sum, normal_block
from cfgphase.physics.disorder_jit import _cos_sin_turn, _log_unit, class_scratch, fill_class_means, philox4x32
from cfgphase.physics.mixture import GaussianMixture, GeneratedMixture
from cfgphase.physics.processes import OU

U = np.uint64


@pytest.mark.parametrize("counter, key, expected", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_matches_the_random123_known_answers(counter, key, expected):
    assert tuple(int(w) for w in philox4x32(*map(U, counter), *map(U, key))) == expected


def test_the_numpy_and_numba_forms_give_the_same_bits():
    """Small blocks are drawn in NumPy, large ones by Numba: the same means and squared norms, bit for bit,
    for odd and even d, class indices beyond 2^32, 64-bit seeds and both dtypes."""
    rng = np.random.default_rng(0)
    for _ in range(60):
        d, n = int(rng.integers(1, 70)), int(rng.integers(1, 40))
        gen = RandomMeans(2**46, d, seed=int(rng.integers(0, 2**64, dtype=np.uint64)), mean_var=rng.uniform(0.1, 9))
        classes = rng.integers(0, 2**45, size=n)
        for dtype in (np.float64, np.float32):
            means, sq = normal_block(gen.key, gen.std, classes, d, dtype)
            out, out_sq = np.empty((n, d), dtype), np.empty(n)
            fill_class_means(*gen.key, gen.std, classes, class_scratch(d), out, out_sq)
            np.testing.assert_array_equal(means, out)
            np.testing.assert_array_equal(sq, out_sq)
    gen = RandomMeans(3 * NUMPY_ENTRIES, 1, seed=5)  # either side of the switch, through the public methods
    np.testing.assert_array_equal(gen.block(10, 10 + NUMPY_ENTRIES)[0], gen.block(0, 2 * NUMPY_ENTRIES)[0][10:-NUMPY_ENTRIES + 10])


def test_an_entry_depends_only_on_seed_class_and_coordinate():
    """Rows asked for in any order, blocks split anywhere, fewer classes or dimensions: the same bits;
    float32 means are the float64 ones cast."""
    gen = RandomMeans(1000, 9, seed=2**40 + 3, mean_var=2.0)
    full, sq = gen.materialise()
    parts = [gen.block(a, b) for a, b in ((0, 1), (1, 333), (333, 1000))]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), full)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), sq)
    picked = np.array([999, 0, 500, 500, 17])
    rows, rows_sq = gen.rows(picked)
    np.testing.assert_array_equal(rows, full[picked])
    np.testing.assert_array_equal(rows_sq, sq[picked])
    np.testing.assert_array_equal(gen.rows(picked, dtype=np.float32)[0], full[picked].astype(np.float32))
    np.testing.assert_array_equal(RandomMeans(10, 9, seed=2**40 + 3, mean_var=2.0).materialise()[0], full[:10])
    np.testing.assert_array_equal(RandomMeans(1000, 4, seed=2**40 + 3, mean_var=2.0).materialise()[0], full[:, :4])
    assert not np.array_equal(RandomMeans(10, 9, seed=2**40 + 4, mean_var=2.0).materialise()[0], full[:10])
    np.testing.assert_allclose(sq, np.einsum("kd,kd->k", full, full), rtol=1e-14)


def test_generated_entries_are_standard_normal():
    """2^21 entries of d = 64 means: moments within 5 standard errors of N(0, 1)'s, Kolmogorov-Smirnov
    at level 1e-4, and no correlation between the two coordinates of a Box-Muller pair or between
    neighbouring classes (5 standard errors, 1/sqrt(n))."""
    z = RandomMeans(2**15, 64, seed=11).materialise()[0]
    x = z.ravel()
    n = x.size
    assert abs(x.mean()) < 5 / math.sqrt(n)
    assert abs(x.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(x)) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(x)) < 5 * math.sqrt(24 / n)
    assert stats.kstest(x, "norm").pvalue > 1e-4
    pairs = np.corrcoef(z[:, 0::2].ravel(), z[:, 1::2].ravel())[0, 1]
    neighbours = np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]
    assert abs(pairs) < 5 / math.sqrt(n / 2) and abs(neighbours) < 5 / math.sqrt(n)


def test_branch_free_logarithm_and_turn_are_accurate_to_a_few_ulp():
    u = np.concatenate([np.geomspace(2.0**-52, 1.0, 5000), np.random.default_rng(0).uniform(0, 1, 5000)])
    np.testing.assert_allclose([_log_unit(v) for v in u], np.log(u), rtol=1e-15, atol=0)
    got = np.array([_cos_sin_turn(v) for v in u % 1.0])
    np.testing.assert_allclose(got[:, 0], np.cos(2 * np.pi * (u % 1.0)), rtol=0, atol=1e-15)
    np.testing.assert_allclose(got[:, 1], np.sin(2 * np.pi * (u % 1.0)), rtol=0, atol=1e-15)


def test_random_mixtures_are_materialised_from_the_generator():
    """GaussianMixture.random, a Model's mixture and a GeneratedMixture share the means, their squared
    norms, the logit bias and the data's second moment, bit for bit."""
    stored = GaussianMixture.random(7, classes=SUM_BLOCK + 5, mean_var=0.5, seed=9)
    gen = RandomMeans(SUM_BLOCK + 5, 7, seed=9, mean_var=0.5)
    means, sq = gen.materialise()
    np.testing.assert_array_equal(stored.means, means)
    np.testing.assert_array_equal(stored.sq_norms, sq)
    np.testing.assert_array_equal(cp.Model(d=7, classes=SUM_BLOCK + 5, mean_var=0.5, seed=9).mixture.means, means)
    generated = GeneratedMixture(7, SUM_BLOCK + 5, mean_var=0.5, seed=9)
    assert generated.signal_var == stored.signal_var
    assert blocked_sum(sq) == gen.sum_of_square_norms(threads=1) == gen.sum_of_square_norms(threads=3)
    scale, bias = stored.logit_coefficients(0.7, OU())
    g_scale, g_bias = generated.logit_coefficients(0.7, OU())
    assert scale == g_scale and g_bias[3] == bias[3]
    np.testing.assert_array_equal(g_bias[np.arange(50)], bias[:50])
    multimodal = GaussianMixture.random(7, classes=4, modes=3, seed=9)  # component c * modes + j
    np.testing.assert_array_equal(multimodal.means, RandomMeans(12, 7, seed=9).materialise()[0])


def test_initial_draws_and_target_are_the_same_without_stored_means():
    model = cp.Model(d=5, classes=300, target=7, seed=3)
    generated = model.generated_mixture
    assert "mixture" not in model.__dict__
    target = model.target_mean  # generated: nothing of size K is drawn
    assert "mixture" not in model.__dict__
    np.testing.assert_allclose(target, model.mixture.means[7], rtol=1e-15)
    np.testing.assert_array_equal(target, model.target_mean)  # now from the stored means
    a = model.mixture.sample_noised(2.0, OU(), 64, np.random.default_rng(1))
    b = generated.sample_noised(2.0, OU(), 64, np.random.default_rng(1))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5])
def test_seeds_outside_the_64_bit_key_are_refused(seed):
    with pytest.raises(ValueError, match="seed"):
        cp.Model(d=4, classes=3, seed=seed)
    with pytest.raises(ValueError, match="seed"):
        RandomMeans(3, 4, seed=seed)
