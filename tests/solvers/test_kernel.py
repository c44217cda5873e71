"""Streaming kernel against the dense formula of physics.mixture (eqs. 5-7)."""

import tracemalloc

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from physics.mixture import GaussianMixture
from physics.processes import OU
from solvers.kernel import _exp_nonpositive, posterior_moments


def dense(x, means, scale, bias):
    L = scale * x @ means.T + bias
    P = softmax(L, axis=1)
    return P @ means, logsumexp(L, axis=1), -np.sum(P * np.log(np.maximum(P, 1e-300)), axis=1), L.argmax(1)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    model = GaussianMixture.random(12, classes=777, seed=3, weights=rng.uniform(0.5, 2, 777))
    x = rng.standard_normal((37, 12)) * 1.3
    return model, x


@pytest.mark.parametrize("chunk", [1, 5, 64, 500, 777, 10_000])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chunked_kernel_equals_dense_formula_float64(problem, chunk, threads):
    model, x = problem
    for t in (0.02, 0.5, 3.0):  # condensed, intermediate and spread posteriors
        scale, bias = model.logit_coefficients(t, OU())
        ref = dense(x, model.means, scale, bias)
        res = posterior_moments(x, model.means, scale, bias, chunk=chunk, threads=threads)
        np.testing.assert_allclose(res.mean, ref[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.log_partition, ref[1], rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(res.entropy, ref[2], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(res.argmax, ref[3])


@pytest.mark.parametrize("chunk", [7, 256, None])
def test_chunked_kernel_float32_agrees_to_single_precision(problem, chunk):
    """float32 GEMMs: logits carry a relative error ~1e-7 |x||mu| scale, so the means agree to ~1e-5."""
    model, x = problem
    for t in (0.05, 0.5, 3.0):
        scale, bias = model.logit_coefficients(t, OU())
        ref = dense(x, model.means, scale, bias)
        res = posterior_moments(x.astype(np.float32), model.means.astype(np.float32), scale, bias, chunk=chunk)
        assert res.mean.dtype == np.float32
        bound = 1e-6 * scale * np.abs(x).sum(1).max() * np.abs(model.means).max() * 10
        np.testing.assert_allclose(res.mean, ref[0], atol=max(bound, 1e-5) * np.abs(model.means).max())
        np.testing.assert_allclose(res.log_partition, ref[1], rtol=1e-5)


def test_single_class_returns_its_mean():
    mu = np.array([[1.0, -2.0, 0.5]])
    x = np.random.default_rng(1).standard_normal((4, 3))
    res = posterior_moments(x, mu, 0.7, np.array([-0.3]))
    np.testing.assert_allclose(res.mean, np.repeat(mu, 4, axis=0), rtol=1e-15)
    np.testing.assert_allclose(res.entropy, 0.0, atol=1e-15)
    np.testing.assert_allclose(res.log_partition, 0.7 * x @ mu[0] - 0.3, rtol=1e-14)


def test_symmetric_two_classes_give_a_tanh():
    rng = np.random.default_rng(2)
    mu = rng.standard_normal(9)
    x = rng.standard_normal((20, 9)) * 3
    for scale in (0.01, 1.0, 50.0):  # includes a saturated tanh
        res = posterior_moments(x, np.stack([mu, -mu]), scale, np.zeros(2), chunk=1)
        np.testing.assert_allclose(res.mean, np.tanh(scale * x @ mu)[:, None] * mu, rtol=1e-12, atol=1e-14)


def test_extreme_logits_do_not_overflow():
    rng = np.random.default_rng(4)
    means = rng.standard_normal((300, 5))
    x = rng.standard_normal((6, 5))
    scale, bias = 1e4, rng.standard_normal(300) * 1e3  # logits of order 1e4: exp would overflow naively
    res = posterior_moments(x, means, scale, bias, chunk=16)
    ref = dense(x, means, scale, bias)
    np.testing.assert_allclose(res.mean, ref[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.log_partition, ref[1], rtol=1e-14)


def test_fast_exponential_is_accurate_to_a_few_ulp():
    z = -np.concatenate([np.geomspace(1e-300, 1.0, 2000), np.linspace(0, 708, 20001)])
    got = np.array([_exp_nonpositive(v) for v in z])
    np.testing.assert_allclose(got, np.exp(z), rtol=1e-15, atol=0)


def test_kernel_never_allocates_a_batch_by_classes_matrix():
    """Peak traced memory stays far below one B x K float64 matrix (128 MiB here)."""
    rng = np.random.default_rng(5)
    B, K, d = 256, 65536, 8
    means = rng.standard_normal((K, d))
    x = rng.standard_normal((B, d))
    bias = np.zeros(K)
    posterior_moments(x, means, 0.1, bias)  # compile outside the measurement
    tracemalloc.start()
    posterior_moments(x, means, 0.1, bias)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.05 * B * K * 8, peak


def test_mismatched_dtypes_and_shapes_are_rejected():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="dtype"):
        posterior_moments(x.astype(np.float32), np.zeros((4, 3)), 1.0, np.zeros(4))
    with pytest.raises(ValueError, match="shapes"):
        posterior_moments(x, np.zeros((4, 3)), 1.0, np.zeros(5))
    with pytest.raises(ValueError, match="chunk"):
        posterior_moments(x, np.zeros((4, 3)), 1.0, np.zeros(4), chunk=0)
