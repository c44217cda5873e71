"""Streaming kernel against the dense formula of cfgphase.physics.mixture (eqs. 5-7)."""

import tracemalloc
from fractions import Fraction

import numba as nb
import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from cfgphase.physics.mixture import GaussianMixture
from cfgphase.physics.processes import OU
from cfgphase.solvers.score import blas as blas_module
from cfgphase.solvers.score import exponential, fused
from cfgphase.solvers.score.exponential import _exp_nonpositive
from cfgphase.solvers.score.kernel import posterior_moments
from cfgphase.solvers.score.simd import lanes, vload, vstore

#: Both GEMM libraries the kernel can call; MKL (the optional mkl wheel, in the test extra on x86-64 Linux) only
#: where it is installed.
LIBRARIES = ["openblas", pytest.param("mkl", marks=pytest.mark.skipif(blas_module._mkl_path() is None,
                                                                      reason="the mkl wheel is not installed"))]


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


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("blas", LIBRARIES)
@pytest.mark.parametrize("chunk", [1, 5, 64, 500, 777, 10_000])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chunked_kernel_equals_dense_formula_float64(problem, chunk, threads, blas, fused):
    """Both paths, the BLAS GEMMs with the pass and the fused chunk (eq. 31a; forced on CPUs without AVX-512,
    where it is not the default), against the dense formula: d = 12 and the chunk lengths pad the fused tiles
    in both directions."""
    model, x = problem
    for t in (0.02, 0.5, 3.0):  # condensed, intermediate and spread posteriors
        scale, bias = model.logit_coefficients(t, OU())
        ref = dense(x, model.means, scale, bias)
        res = posterior_moments(x, model.means, scale, bias, chunk=chunk, threads=threads, skip=False, blas=blas,
                                fused=fused)
        np.testing.assert_allclose(res.mean, ref[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.log_partition, ref[1], rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(res.entropy, ref[2], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(res.argmax, ref[3])


def _mixed_rows_equal_the_dense_formula(skip, seed, **options):
    """B = 1100 rows, K = 3000 classes, d = 32, two threads: at t = 0.01, 900 rows of the hinted class and 200
    others; at t = 3 a spread posterior. The kernel's numbers with ``options`` against the dense formula, and the
    skipped fraction between 0 and 1 at t = 0.01, 0 at t = 3."""
    rng = np.random.default_rng(seed)
    model = GaussianMixture.random(32, classes=3000, seed=seed - 7)
    x = np.concatenate([model.sample_noised(0.01, OU(), 900, rng, target=0)[0], rng.standard_normal((200, 32)) * 3])
    for t in (0.01, 3.0):
        scale, bias = model.logit_coefficients(t, OU())
        ref = dense(x, model.means, scale, bias)
        res = posterior_moments(x, model.means, scale, bias, threads=2, hint=0 if skip else None, skip=skip,
                                **options)
        spread = np.abs(model.means).max() * 2
        np.testing.assert_allclose(res.mean, ref[0], rtol=0, atol=1e-12 * spread + 1e-12)
        np.testing.assert_allclose(res.log_partition, ref[1], rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(res.entropy, ref[2], rtol=0, atol=4e-11)
        np.testing.assert_array_equal(res.argmax, ref[3])
        if skip:
            assert (0 < res.skipped < 1) if t == 0.01 else res.skipped == 0


@pytest.mark.parametrize("skip", [False, True])
def test_float64_fused_chunks_of_two_chunks_equal_the_dense_formula(skip):
    """With the chunk left to the kernel, float64's fused chunks take FUSED_CLASSES = 2 chunks of classes after a
    fused chunk that no row would have skipped (kernel._stream_rows), one chunk otherwise: blocks of 256 rows,
    chunks of 256 classes; the condensed mixture of rows switches between the lengths and to the BLAS path, the
    spread one keeps the long chunks. The skipped fraction counts each chunk of a skipped fused chunk."""
    from cfgphase.solvers.score import kernel

    assert kernel.FUSED_CLASSES // kernel.block_layout(1100, 3000, 8, threads=2)[1] == 2
    _mixed_rows_equal_the_dense_formula(skip, 12, fused=True)


@pytest.mark.parametrize("blas", LIBRARIES)
@pytest.mark.parametrize("skip", [False, True])
def test_several_row_blocks_per_thread_equal_the_dense_formula(skip, blas):
    """B = 1100 rows make five row blocks (4 x 256 and 76, kernel.ROW_BLOCK) on two threads: each thread
    streams several blocks with one buffer. At t = 0.01, 900 rows of the hinted class and 200 others,
    so that a chunk's second GEMM runs on every row, on a gathered subset or not at all (with 512-row
    blocks: 12, 69 and 9 of 90 (block, chunk) pairs, counted with the dense logits)."""
    _mixed_rows_equal_the_dense_formula(skip, 11, chunk=100, blas=blas)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("generated", [False, True])
def test_calls_from_several_threads_at_once_give_the_sequential_numbers(generated, fused):
    """Four user threads (as Dask's threaded scheduler runs tasks) call the kernel at once, each on its own
    particles, while the kernel's lanes (its worker threads, kernel._on_lanes) take blocks and keep work
    arrays per thread: every result equals the same call made alone, bit for bit (a row block's numbers do not
    depend on which thread streams it, nor which thread called: with threadpoolctl 3.8 and OpenBLAS, a call
    from a user thread had left OpenBLAS multithreaded and changed the BLAS path's numbers)."""
    from concurrent.futures import ThreadPoolExecutor

    from cfgphase.physics.disorder import NormBias, RandomMeans

    d, K = 24, 1500
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((700, d)) for _ in range(4)]
    if generated:
        means = RandomMeans(K, d, seed=9)
        bias = NormBias(means, np.log(1 / K), 0.3)
    else:
        means, bias = rng.standard_normal((K, d)), rng.uniform(-1, 0, K)

    def call(x):
        return posterior_moments(x, means, 0.3, bias, chunk=200, threads=2, hint=1, fused=fused)

    alone = [call(x) for x in xs]
    with ThreadPoolExecutor(4) as users:
        together = list(users.map(call, xs * 3))
    for i, res in enumerate(together):
        for field in ("mean", "log_partition", "entropy", "argmax"):
            np.testing.assert_array_equal(getattr(res, field), getattr(alone[i % 4], field))

@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("blas", LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_argmax_is_the_first_of_tied_largest_logits(dtype, blas, fused):
    """Tied largest logits: the index returned is the first of them, as np.argmax gives, whichever chunk
    holds them and whether or not the running maximum grows there, on either path (the fused chunk finds it
    from its running maxima, fused._first_largest: ties within and across class tiles). Small integers and a scale of 1/2 make
    every logit exact in either precision, whatever the BLAS's order of summation, so ties are exact
    (every mean appears three times, and distinct means tie too)."""
    rng = np.random.default_rng(5)
    base = rng.integers(-3, 4, (40, 6))
    means = np.concatenate([base, base[::-1], base]).astype(dtype)
    x = rng.integers(-3, 4, (300, 6)).astype(dtype)
    first = (x @ means.T).argmax(1)
    assert np.mean(np.sum(x @ means.T == (x @ means.T).max(1, keepdims=True), axis=1) > 1) == 1.0
    for chunk in (7, 40, 64, 120):
        res = posterior_moments(x, means, 0.5, np.zeros(len(means), dtype=dtype), chunk=chunk, threads=2, skip=False,
                                blas=blas, fused=fused)
        np.testing.assert_array_equal(res.argmax, first)


@pytest.mark.parametrize("blas", LIBRARIES)
@pytest.mark.parametrize("chunk", [7, 256, None])
def test_chunked_kernel_float32_agrees_to_single_precision(problem, chunk, blas):
    """float32 GEMMs: logits carry a relative error ~1e-7 |x||mu| scale, so the means agree to ~1e-5."""
    model, x = problem
    for t in (0.05, 0.5, 3.0):
        scale, bias = model.logit_coefficients(t, OU())
        ref = dense(x, model.means, scale, bias)
        res = posterior_moments(x.astype(np.float32), model.means.astype(np.float32), scale, bias, chunk=chunk,
                                blas=blas)
        assert res.mean.dtype == np.float64  # divided by the float64 sum, not rounded back (eq. 31)
        bound = 1e-6 * scale * np.abs(x).sum(1).max() * np.abs(model.means).max() * 10
        np.testing.assert_allclose(res.mean, ref[0], atol=max(bound, 1e-5) * np.abs(model.means).max())
        np.testing.assert_allclose(res.log_partition, ref[1], rtol=1e-5, atol=bound)  # logits are float32


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
    """Against NumPy's exp (float64, itself within about 0.5 ulp): 1 ulp measured, 1e-15 (4.5 ulp) allowed."""
    z = -np.concatenate([np.geomspace(1e-300, 1.0, 2000), np.linspace(0, 708, 20001)])
    got = np.array([_exp_nonpositive(v) for v in z])
    np.testing.assert_allclose(got, np.exp(z), rtol=1e-15, atol=0)


def test_fast_float32_exponential_is_accurate_to_a_few_ulp():
    """The float32 exponential against the float64 one rounded to float32 (exact to 0.5 ulp of float32), over the
    clamp's whole range: 1.15 ulp of float32 measured (the polynomial's own error is 2.8e-9, 0.05 ulp; the rest
    is rounding), 3 ulp allowed."""
    from cfgphase.solvers.score.exponential import _exp_nonpositive32

    z = -np.concatenate([np.geomspace(1e-30, 1.0, 2000), np.linspace(0, 87, 20001)]).astype(np.float32)
    got = np.array([_exp_nonpositive32(v) for v in z])  # float32 values, returned to Python as floats
    assert np.array_equal(got, got.astype(np.float32))
    exact = np.exp(z.astype(np.float64))
    ulps = np.abs(got - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert ulps.max() < 3, ulps.max()


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
    with pytest.raises(ValueError, match="dtype"):  # float32 particles cannot be computed in float64
        posterior_moments(x.astype(np.float32), np.zeros((4, 3)), 1.0, np.zeros(4))
    with pytest.raises(ValueError, match="dtype"):
        posterior_moments(x, np.zeros((4, 3), dtype=np.float32), 1.0, np.zeros(4), dtype=np.float64)
    with pytest.raises(ValueError, match="dtype"):
        posterior_moments(x.astype(np.int32), np.zeros((4, 3), dtype=np.int32), 1.0, np.zeros(4), dtype=np.int32)
    with pytest.raises(ValueError, match="x must"):
        posterior_moments(x.astype(np.int64), np.zeros((4, 3)), 1.0, np.zeros(4))
    with pytest.raises(ValueError, match="shapes"):
        posterior_moments(x, np.zeros((4, 3)), 1.0, np.zeros(5))
    with pytest.raises(ValueError, match="chunk"):
        posterior_moments(x, np.zeros((4, 3)), 1.0, np.zeros(4), chunk=0)


@pytest.mark.parametrize("generated", [False, True])
def test_no_particles_give_empty_moments_and_bad_arguments_are_still_rejected(generated):
    """B = 0 rows: empty moments of the right shapes (it used to divide by zero), hinted or not; a bad chunk
    or hint is still a ValueError naming it."""
    from cfgphase.physics.disorder import NormBias, RandomMeans

    x = np.zeros((0, 3))
    means = RandomMeans(4, 3, seed=1) if generated else np.ones((4, 3))
    bias = NormBias(means, -np.log(4), 0.5) if generated else np.zeros(4)
    for hint in (None, 2):
        res = posterior_moments(x, means, 1.0, bias, hint=hint, threads=2)
        assert res.mean.shape == (0, 3) and res.log_partition.shape == res.entropy.shape == res.argmax.shape == (0,)
        assert res.skipped == 0.0
    with pytest.raises(ValueError, match="chunk"):
        posterior_moments(x, means, 1.0, bias, chunk=0)
    with pytest.raises(ValueError, match="hint"):
        posterior_moments(x, means, 1.0, bias, hint=4)


# --- fast paths: chunk skipping (eq. 30) and the float32 softmax pass ---------------------------

TIMES = (0.01, 0.1, 0.3, 1.0, 3.0)  # condensed near t = 0 ... spread at large t


@pytest.fixture(scope="module")
def large():
    """d = 32, K = 4096 (alpha = 0.26), particles of class 0: condensed at small t, spread at t = 3."""
    model = GaussianMixture.random(32, classes=4096, seed=5)
    return model, [model.sample_noised(t, OU(), 64, np.random.default_rng(6), target=0)[0] for t in TIMES]


@pytest.mark.parametrize("hint", ["target", "none", "wrong"])
def test_chunk_skipping_stays_within_its_bound(large, hint):
    """Skipped chunks hold less than SKIP_WEIGHT = 1e-12 of each row's weight in total, so the mean
    moves by at most 1e-12 max_k |mu_k - m| (plus rounding, 1e-13 here), the log-partition by
    1e-12 and the entropy by sum p |log p| <= 1e-12 (log(K/1e-12) + 1) ~ 4e-11. A wrong hint only
    delays skipping. Near t = 0 a row skips a chunk where it has no competitor within
    log(K/1e-12) = 36 nats (measured: 95 % of (row, chunk) pairs at t = 0.01, alpha = 0.26 being
    close to alpha_max = 0.80); at t = 3 none does."""
    model, xs = large
    hints = {"target": 0, "none": None, "wrong": np.random.default_rng(7).integers(1, 4096, size=64)}
    for t, x in zip(TIMES, xs):
        scale, bias = model.logit_coefficients(t, OU())
        ref = posterior_moments(x, model.means, scale, bias, chunk=64, skip=False)
        fast = posterior_moments(x, model.means, scale, bias, chunk=64, hint=hints[hint])
        spread = np.abs(model.means[None, :, :] - ref.mean[:, None, :]).max()
        assert np.abs(fast.mean - ref.mean).max() <= 1e-12 * spread + 1e-13
        np.testing.assert_allclose(fast.log_partition, ref.log_partition, rtol=0, atol=1e-12 + 1e-15 * np.abs(
            ref.log_partition).max())
        np.testing.assert_allclose(fast.entropy, ref.entropy, rtol=0, atol=4e-11)
        np.testing.assert_array_equal(fast.argmax, ref.argmax)
        if t == TIMES[0] and hint == "target":
            assert fast.skipped > 0.25
        if t == TIMES[-1]:
            assert fast.skipped == 0.0


def test_float32_drift_within_its_rounding_bound(large):
    """float32 GEMMs and softmax pass (eq. 31): each logit is off by at most
    dL = u (d scale |x| |mu|_max + |L|_max), u = 2^-24 (worst-case accumulation over d terms,
    then the rounding of the logit itself), so the weights move by factors exp(+-2 dL); a
    chunk's sums and second GEMM add at most kc terms in float32 (relative error gamma_kc =
    kc u / (1 - kc u)); the mean is returned in float64. To first order
    |m32 - m64| <= 2 dL max_k |mu_k - m| + 2 gamma_kc |mu|_max. The drift -(x - a m)/Gamma inherits a/Gamma
    times that."""
    model, xs = large
    u = 2.0**-24
    chunk = 256
    gamma = chunk * u / (1 - chunk * u)
    means32 = model.means.astype(np.float32)
    mu_max = np.abs(model.means).max()
    for t, x in zip(TIMES, xs):
        scale, bias = model.logit_coefficients(t, OU())
        ref = posterior_moments(x, model.means, scale, bias, skip=False)
        f32 = posterior_moments(x.astype(np.float32), means32, scale, bias, hint=0, chunk=chunk)
        logits = scale * x @ model.means.T + bias
        dL = u * (32 * scale * np.linalg.norm(x, axis=1).max() * np.linalg.norm(model.means, axis=1).max()
                  + np.abs(logits).max())
        spread = np.abs(model.means[None, :, :] - ref.mean[:, None, :]).max()
        bound = 2 * dL * spread + 2 * gamma * mu_max
        assert np.abs(f32.mean - ref.mean).max() <= bound, (t, bound)
        assert np.abs(f32.mean - ref.mean).max() < 1e-3  # and the bound itself is small


@pytest.mark.parametrize("generated", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hint", ["target", "wrong"])
def test_the_hinted_logit_is_the_one_the_partition_sum_took(large, hint, dtype, generated):
    """``hint_logit`` is each row's logit for its hinted class as the pass computed it, from the chunk's GEMM, also
    for rows that skipped that chunk (a wrong hint at small t: most of them). Against the float64 logits it is off
    by at most dL = u (d scale |x| |mu|_max + |L|_max + |b|_max) (eq. 31, the bias's rounding added; u = 2^-53
    or 2^-24). Being the value the partition sum took, the target's posterior exp(hint_logit - log_partition)
    exceeds 1 by no more than the rounding of a chunk's float32 sum, gamma_kc, and of its weight, 3u: a float64
    logit against the float32 log-partition exceeded 1 by 4.8e-5 at t = 0.01 here (5e-4 at d = 256)."""
    from cfgphase.physics.mixture import GeneratedMixture

    model, xs = large
    u = 2.0**-53 if dtype == np.float64 else 2.0**-24
    chunk = 64
    hints = 0 if hint == "target" else np.random.default_rng(7).integers(1, 4096, size=64)
    source = GeneratedMixture(32, 4096, seed=5) if generated else model
    means = source.means_generator if generated else model.means.astype(dtype)
    for t, x in zip(TIMES, xs):
        scale, bias = source.logit_coefficients(t, OU())
        res = posterior_moments(x.astype(dtype), means, scale, bias, chunk=chunk, threads=2, hint=hints)
        x64, means64 = x.astype(dtype).astype(np.float64), model.means.astype(dtype).astype(np.float64)
        b = model.logit_coefficients(t, OU())[1]
        logits = scale * x64 @ means64.T + b
        expected = logits[np.arange(64), np.broadcast_to(hints, (64,))]
        dL = u * (32 * scale * np.linalg.norm(x64, axis=1).max() * np.linalg.norm(means64, axis=1).max()
                  + np.abs(logits).max() + np.abs(b).max())
        assert res.hint_logit.dtype == np.float64
        assert np.abs(res.hint_logit - expected).max() <= dL, (t, dL)
        if hint == "target":
            gamma = chunk * u / (1 - chunk * u)
            assert np.exp(res.hint_logit - res.log_partition).max() <= 1 + gamma + 3 * u
        if hint == "wrong" and t == TIMES[0]:
            assert res.skipped > 0.9  # the hinted classes' chunks were skipped by most rows
    if hint == "target" and dtype == np.float32:  # the old way, for the record: the test can tell them apart
        scale, bias = model.logit_coefficients(TIMES[0], OU())
        res = posterior_moments(xs[0].astype(dtype), model.means.astype(dtype), scale, bias, chunk=chunk, hint=0)
        assert np.exp(scale * xs[0] @ model.means[0] + bias[0] - res.log_partition).max() > 1 + gamma + 3 * u


def test_bad_hint():
    x, means = np.zeros((3, 2)), np.zeros((4, 2))
    with pytest.raises(ValueError, match="hint"):
        posterior_moments(x, means, 1.0, np.zeros(4), hint=4)
    with pytest.raises(ValueError, match="hint"):
        posterior_moments(x, means, 1.0, np.zeros(4), hint=np.array([0.5, 1.0, 2.0]))
    from cfgphase.solvers.score.dense import dense_posterior_moments

    for kernel in (posterior_moments, dense_posterior_moments):
        for bad in (np.array([0, 1]), np.zeros((3, 1), dtype=int), 4, -1):
            with pytest.raises(ValueError, match="hint"):
                kernel(x, means, 1.0, np.zeros(4), hint=bad)


def test_numba_kernels_load_from_the_cache_in_a_new_process():
    """A second process (as a second CLI call) loads every kernel from Numba's on-disk cache and
    compiles nothing."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from cfgphase.solvers.score import kernel\n"
        "for dt in (np.float64, np.float32):\n"
        "    x = np.ones((4, 3), dt); m = np.ones((5, 3), dt)\n"
        "    kernel.posterior_moments(x, m, 1.0, np.zeros(5), chunk=2, hint=0)\n"
        "fns = (kernel._stream_blocks,)\n"
        "print(sum(sum(f.stats.cache_misses.values()) for f in fns), sum(sum(f.stats.cache_hits.values()) for f in fns))\n"
    )
    for _ in range(2):  # the first run fills the cache if this checkout's cache is cold
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    misses, hits = map(int, out.stdout.split())
    assert misses == 0 and hits == 2


def test_every_blas_library_is_pinned_to_one_thread_inside_the_kernel():
    """No oversubscription: the GEMMs run on the kernel's lanes (the ?gemm of gemm_library, called from Numba),
    so every BLAS library the process has loaded after a kernel call must be one the
    kernel limits to a single thread. Run in a fresh process, where the kernel is imported first."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from cfgphase.solvers.score import kernel\n"
        "from threadpoolctl import threadpool_info\n"
        "x = np.ones((600, 3)); m = np.ones((5, 3))\n"
        "kernel.posterior_moments(x, m, 1.0, np.zeros(5), threads=2)\n"
        "loaded = {i['filepath'] for i in threadpool_info() if i['user_api'] == 'blas'}\n"
        "with kernel.single_threaded_blas():\n"
        "    inside = {i['filepath']: i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}\n"
        "print(len(loaded), sorted(loaded) == sorted(inside), set(inside.values()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, same, threads = out.stdout.split(maxsplit=2)
    assert int(count) >= 1 and same == "True" and threads.strip() == "{1}"


def test_a_context_of_another_thread_limits_the_blas_while_one_is_open_anywhere():
    """Contexts of several threads: each sees every BLAS at one thread inside, also a thread other than the one that
    first set a limit (which threadpoolctl 3.8 alone would ignore for OpenBLAS), and the counts come back only when
    the last context closes. Run in a fresh process with OpenBLAS at 2 threads."""
    import json
    import subprocess
    import sys

    code = (
        "import threading\n"
        "import scipy.linalg.cython_blas\n"
        "from threadpoolctl import threadpool_info, threadpool_limits\n"
        "from cfgphase.solvers.score import blas\n"
        "counts = lambda: sorted(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas')\n"
        "threadpool_limits(2)\n"  # the main thread sets a limit first (threadpoolctl's controlling thread)
        "before = counts()\n"
        "seen, go, done = [], threading.Event(), threading.Event()\n"
        "def other():\n"
        "    with blas.single_threaded_blas():\n"
        "        seen.append(counts()); go.set(); done.wait()\n"
        "    seen.append(counts())\n"
        "t = threading.Thread(target=other); t.start(); go.wait()\n"
        "with blas.single_threaded_blas():\n"
        "    seen.append(counts())\n"
        "seen.append(counts()); done.set(); t.join()\n"
        "import json; print(json.dumps([before, seen]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, seen = json.loads(out)
    assert 2 in before
    assert seen == [[1] * len(before)] * 3 + [before], seen


def test_a_nested_single_threaded_blas_context_limits_only_libraries_loaded_since(monkeypatch):
    """single_threaded_blas inside one of the same thread that has limited the same libraries leaves
    the libraries alone, and leaving it keeps the outer limit; once another BLAS-bearing module has been
    loaded (here a stand-in added to sys.modules) the nested context limits again; another thread's context
    is its own."""
    import sys
    import threading
    import types

    from cfgphase.solvers.score import blas
    from threadpoolctl import threadpool_info

    built = []
    libraries = blas._blas_libraries

    def counting(loaded):
        built.append(loaded)
        return libraries(loaded)

    monkeypatch.setattr(blas, "_blas_libraries", counting)
    monkeypatch.setattr(blas, "_BLAS_MODULES", blas._BLAS_MODULES + ("cfgphase_test_blas_stand_in",))
    with blas.single_threaded_blas():
        assert len(built) == 1
        with blas.single_threaded_blas():
            with blas.single_threaded_blas():
                assert len(built) == 1
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}

        def other_thread():
            with blas.single_threaded_blas():
                pass

        other = threading.Thread(target=other_thread)
        other.start()
        other.join()
        assert len(built) == 2  # the other thread's context limited for itself
        monkeypatch.setitem(sys.modules, "cfgphase_test_blas_stand_in", types.ModuleType("stand_in"))
        with blas.single_threaded_blas():
            assert len(built) == 3 and built[-1] != built[0]
        with blas.single_threaded_blas():
            assert len(built) == 4
    with blas.single_threaded_blas():
        assert len(built) == 5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunk, threads", [(None, 1), (7, 2), (250, 3), (1000, 2)])
def test_generated_means_give_the_stored_numbers_bit_for_bit(dtype, chunk, threads):
    """Means generated chunk by chunk inside the kernel (eq. 64) against the materialised array of the
    same generator, with the same chunk and threads: every output equal, hinted or not."""
    from cfgphase.physics.mixture import GeneratedMixture

    stored = GaussianMixture.random(6, classes=999, seed=4)
    generated = GeneratedMixture(6, 999, seed=4)
    x = stored.sample_noised(0.4, OU(), 41, np.random.default_rng(2))[0].astype(dtype)
    for t, hint in ((0.05, 3), (0.5, None), (3.0, np.arange(41) % 5)):
        scale, bias = stored.logit_coefficients(t, OU())
        g_scale, g_bias = generated.logit_coefficients(t, OU())
        a = posterior_moments(x, stored.means.astype(dtype), scale, bias, chunk=chunk, threads=threads, hint=hint)
        b = posterior_moments(x, generated.means_generator, g_scale, g_bias, chunk=chunk, threads=threads, hint=hint)
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("generated", [False, True])
@pytest.mark.parametrize("chunk, threads", [(None, 1), (7, 2), (250, 3)])
def test_float64_particles_are_cast_by_the_lanes_to_the_numbers_of_float32_ones(generated, chunk, threads):
    """float32 means with float64 particles: the lanes cast each block of rows as they take it, and every output
    is that of the particles cast beforehand, bit for bit (the casts round to nearest alike), hinted or not, with
    stored and generated means (these computed in float32 by ``dtype``)."""
    from cfgphase.physics.mixture import GeneratedMixture

    stored = GaussianMixture.random(6, classes=999, seed=4)
    source = GeneratedMixture(6, 999, seed=4) if generated else stored
    means = source.means_generator if generated else stored.means.astype(np.float32)
    x = stored.sample_noised(0.4, OU(), 41, np.random.default_rng(2))[0]
    for t, hint in ((0.05, 3), (0.5, None), (3.0, np.arange(41) % 5)):
        scale, bias = source.logit_coefficients(t, OU())
        kwargs = dict(chunk=chunk, threads=threads, hint=hint, dtype=np.float32)
        cast = posterior_moments(x.astype(np.float32), means, scale, bias, **kwargs)
        lanes = posterior_moments(x, means, scale, bias, **kwargs)
        for u, v in zip(cast, lanes):
            np.testing.assert_array_equal(u, v)


def test_generated_results_depend_on_chunk_and_threads_only_through_rounding():
    """Chunk size and thread count regroup the float64 sums only (eqs. 7, 50): relative 1e-13."""
    from cfgphase.physics.mixture import GeneratedMixture

    generated = GeneratedMixture(6, 999, seed=4)
    x = np.random.default_rng(3).standard_normal((33, 6))
    scale, bias = generated.logit_coefficients(0.5, OU())
    ref = posterior_moments(x, generated.means_generator, scale, bias, chunk=999, threads=1, skip=False)
    for chunk, threads in ((1, 2), (64, 3), (500, 1)):
        res = posterior_moments(x, generated.means_generator, scale, bias, chunk=chunk, threads=threads, skip=False)
        np.testing.assert_allclose(res.mean, ref.mean, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(res.log_partition, ref.log_partition, rtol=1e-13)
        np.testing.assert_allclose(res.entropy, ref.entropy, rtol=1e-11, atol=1e-13)
        np.testing.assert_array_equal(res.argmax, ref.argmax)


def test_generated_means_need_their_own_bias():
    from cfgphase.physics.disorder import NormBias, RandomMeans

    means = RandomMeans(10, 3)
    with pytest.raises(ValueError, match="bias"):
        posterior_moments(np.zeros((2, 3)), means, 1.0, np.zeros(10))
    with pytest.raises(ValueError, match="bias"):
        posterior_moments(np.zeros((2, 3)), means, 1.0, NormBias(RandomMeans(10, 3), 0.0, 1.0))
    with pytest.raises(ValueError, match="shapes"):
        posterior_moments(np.zeros((2, 4)), means, 1.0, NormBias(means, 0.0, 1.0))


@pytest.mark.parametrize("K", [1, 2, 64])
def test_numpy_dense_kernel_equals_the_reference_and_the_streaming_kernel(K):
    """cfgphase.solvers.score.dense (the path of models with at most DENSE_COMPONENTS components) against
    SciPy's softmax and the streaming kernel: float64 to 1e-12 (rounding of sums over K <= 64 terms of
    size <= 1, far below), float32 to 1e-5 relative (single-precision logits and weights, K <= 64)."""
    from cfgphase.solvers.score.dense import dense_posterior_moments

    rng = np.random.default_rng(K)
    model = GaussianMixture.random(9, classes=K, seed=K, weights=rng.uniform(0.5, 2, K))
    x = rng.standard_normal((50, 9)) * 1.5
    for t in (0.02, 0.5, 3.0):
        scale, bias = model.logit_coefficients(t, OU())
        ref = dense(x, model.means, scale, bias)
        hint = np.arange(50) % K
        got = dense_posterior_moments(x, model.means, scale, bias, hint=hint)
        stream = posterior_moments(x, model.means, scale, bias, skip=False, hint=hint)
        for res in (got, stream):
            np.testing.assert_allclose(res.hint_logit, (scale * x @ model.means.T + bias)[np.arange(50), hint],
                                       rtol=1e-13, atol=1e-12)
            np.testing.assert_allclose(res.mean, ref[0], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(res.log_partition, ref[1], rtol=1e-13, atol=1e-12)
            np.testing.assert_allclose(res.entropy, ref[2], rtol=1e-10, atol=1e-12)
            np.testing.assert_array_equal(res.argmax, ref[3])
        f32 = dense_posterior_moments(x.astype(np.float32), model.means.astype(np.float32), scale, bias)
        assert f32.mean.dtype == np.float64 and f32.log_partition.dtype == np.float64
        np.testing.assert_allclose(f32.mean, ref[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(f32.log_partition, ref[1], rtol=1e-5, atol=1e-5)


def test_a_small_simulation_needs_neither_numba_nor_scipy():
    """A model with at most DENSE_COMPONENTS components runs on the NumPy kernel and NumPy-drawn means: in a
    fresh process, `cfgphase simulate` at the issue's small size imports neither Numba nor SciPy."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from cfgphase.solvers.cli import main\n"
            "status = main(['simulate', '--d', '8', '--classes', '4', '--particles', '64', '--steps', '10',"
            " '--sampler', 'sde'])\n"
            "print(status, sorted(m for m in ('numba', 'scipy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []"


def test_weights_below_the_floor_are_zero_and_above_it_exact():
    """Weights under 2**-96 (float32) / 2**-992 (float64) are 0, so no subnormal reaches the second GEMM
    (exponential.WEIGHT_FLOOR32); above the floor the weight is the fast exponential itself, bit for bit."""
    import numba as nb

    from cfgphase.solvers.score.exponential import WEIGHT_FLOOR32, WEIGHT_FLOOR64, _exp_nonpositive32, _exp_weight

    weight = nb.njit(lambda z: _exp_weight(z))
    for floor, exp, dt in ((WEIGHT_FLOOR32, _exp_nonpositive32, np.float32), (WEIGHT_FLOOR64, _exp_nonpositive, np.float64)):
        below = np.array([np.nextafter(dt(floor), dt(-np.inf)), dt(floor) - 1, dt(-87), dt(-1e4)], dtype=dt)
        assert all(weight(v) == 0 for v in below if v < floor)
        above = np.array([dt(floor), dt(floor) + 1, dt(-10), dt(0)], dtype=dt)
        for v in above:
            assert weight(v) == exp(v) > np.finfo(dt).tiny * 2.0**29  # a normal product with any |mu| > 2**-30


def test_condensed_float32_posterior_matches_dense():
    """Most logits far below the maximum (weights floored to 0): float32 agrees with the float64 dense posterior
    to single precision, log-partition included."""
    rng = np.random.default_rng(8)
    means = rng.standard_normal((2000, 16))
    x = means[rng.integers(0, 2000, 64)] + 0.01 * rng.standard_normal((64, 16))
    scale, bias = 50.0, -25.0 * np.sum(means**2, axis=1)
    ref = dense(x, means, scale, bias)
    res = posterior_moments(x.astype(np.float32), means.astype(np.float32), scale, bias, chunk=128)
    np.testing.assert_allclose(res.mean, ref[0], rtol=0, atol=1e-4)  # float32 logits of order 1e3: error ~1e-4 each
    np.testing.assert_allclose(res.log_partition, ref[1], rtol=1e-5)
    assert np.all(res.argmax == ref[3])


def test_gemm_library_choice_and_bad_names(monkeypatch):
    """None picks MKL only on an Intel CPU with the mkl wheel installed, else SciPy's OpenBLAS; CFGPHASE_BLAS
    overrides it; an unknown name, or MKL when it is not installed, is a ValueError naming the parameter."""
    monkeypatch.delenv("CFGPHASE_BLAS", raising=False)
    assert blas_module.gemm_library("openblas").name == "openblas"
    monkeypatch.setattr(blas_module, "_intel_cpu", lambda: False)
    assert blas_module.gemm_library().name == "openblas"
    if blas_module._mkl_path() is not None:
        monkeypatch.setattr(blas_module, "_intel_cpu", lambda: True)
        assert blas_module.gemm_library().name == "mkl"
        monkeypatch.setenv("CFGPHASE_BLAS", "openblas")
        assert blas_module.gemm_library().name == "openblas"
        monkeypatch.delenv("CFGPHASE_BLAS")
    monkeypatch.setattr(blas_module, "_mkl_path", lambda: None)
    monkeypatch.setattr(blas_module, "_intel_cpu", lambda: True)
    assert blas_module.gemm_library().name == "openblas"
    with pytest.raises(ValueError, match="blas: 'mkl' needs the mkl package"):
        blas_module.gemm_library("mkl")
    with pytest.raises(ValueError, match="blas must be one of openblas, mkl"):
        blas_module.gemm_library("atlas")
    monkeypatch.setenv("CFGPHASE_BLAS", "atlas")
    with pytest.raises(ValueError, match="CFGPHASE_BLAS must be one of openblas, mkl"):
        blas_module.gemm_library()
    x, m = np.ones((4, 3)), np.ones((5, 3))
    with pytest.raises(ValueError, match="blas must be one of"):
        posterior_moments(x, m, 1.0, np.zeros(5), blas="atlas")


@pytest.mark.skipif(blas_module._mkl_path() is None, reason="the mkl wheel is not installed")
def test_mkl_runs_without_threads_of_its_own_and_in_a_forked_child():
    """MKL is loaded with its sequential layer: no OpenMP runtime in the process and no thread added by a kernel
    call beyond the kernel's own lanes; a forked child computes the parent's numbers bit for bit. In a fresh
    process, where nothing else has loaded MKL."""
    import subprocess
    import sys

    code = (
        "import multiprocessing, threading, numpy as np\n"
        "from cfgphase.solvers.score import kernel\n"
        "rng = np.random.default_rng(0)\n"
        "x, m = rng.standard_normal((600, 16)), rng.standard_normal((3000, 16))\n"
        "def f(_=None):\n"
        "    return kernel.posterior_moments(x, m, 0.3, np.zeros(3000), threads=2, blas='mkl').mean\n"
        "here = f()\n"
        "with open('/proc/self/maps') as maps:\n"
        "    omp = any(line.rsplit('/', 1)[-1].startswith(('libiomp', 'libgomp', 'libomp')) for line in maps)\n"
        "with multiprocessing.get_context('fork').Pool(1) as pool:\n"
        "    there = pool.map_async(f, [0]).get(timeout=60)[0]\n"
        "print(omp, threading.active_count(), bool(np.array_equal(here, there)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    omp, threads, same = out.stdout.split()
    assert omp == "False" and int(threads) == 3 and same == "True"  # the main thread and two lanes


def test_the_softmax_pass_uses_512_bit_vectors_where_the_cpu_has_them(tmp_path):
    """kernel._prefer_wide_vectors: on an AVX-512 CPU the compiled softmax pass uses zmm registers (LLVM's default
    there is 256-bit ymm); elsewhere it compiles as before. Guards the llvmlite attribute it relies on. Compiled
    in a fresh process with an empty Numba cache (a function loaded from the cache has no assembly to show)."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from cfgphase.solvers.score import kernel\n"
        "kernel.posterior_moments(np.ones((4, 3)), np.ones((500, 3)), 1.0, np.zeros(500), threads=1)\n"
        "asm = ''.join(kernel._chunk_pass.inspect_asm(s) for s in kernel._chunk_pass.signatures)\n"
        "print(len(asm) > 0, 'zmm' in asm)\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    with open("/proc/cpuinfo") as f:
        avx512 = " avx512f" in f.read()
    assert out.stdout.split() == ["True", str(avx512)]


@pytest.mark.parametrize("blas", LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_zero_dimensional_points_give_the_uniform_posterior(blas, dtype, capfd):
    """d = 0: every logit is its bias, the posterior is softmax(bias), the means are empty; the GEMMs' leading
    dimensions stay >= 1, so the BLAS neither refuses them (MKL printed an error and left the logits unset) nor
    prints anything."""
    bias = np.log(np.arange(1.0, 501.0))
    res = posterior_moments(np.ones((300, 0), dtype), np.ones((500, 0), dtype), 1.0, bias, chunk=64, blas=blas)
    assert res.mean.shape == (300, 0)
    np.testing.assert_allclose(res.log_partition, logsumexp(bias), rtol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_array_equal(res.argmax, 499)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("blas", LIBRARIES)
def test_the_second_gemm_accumulates_in_float64_and_writes_T_in_float32(blas):
    """kernel._weighted_product, the chunk's second GEMM as the stream calls it (here from Python, which takes the
    same branch as Numba's compile-time choice): float64 adds S means into acc and leaves T; float32 writes T and
    leaves the float64 acc to the next pass's fold."""
    from cfgphase.solvers.score.kernel import _weighted_product, gemm_library

    rng = np.random.default_rng(2)
    library = gemm_library(blas)
    for dtype, gemm in ((np.float64, library.dgemm), (np.float32, library.sgemm)):
        S, means = rng.random((5, 7)).astype(dtype), rng.standard_normal((7, 3)).astype(dtype)
        acc, T = rng.standard_normal((5, 3)), np.full((5, 3), 9.0, dtype=dtype)
        before = acc.copy()
        pending = _weighted_product(gemm, S, means, acc, T)
        product = S.astype(np.float64) @ means.astype(np.float64)
        if dtype == np.float64:
            assert not pending and np.all(T == 9.0)
            np.testing.assert_allclose(acc, before + product, rtol=1e-13, atol=1e-13)
        else:
            assert pending and np.array_equal(acc, before)
            np.testing.assert_allclose(T, product, rtol=1e-5, atol=1e-5)


@nb.njit
def _vexp_of(z, out, constants):
    W = lanes(z)
    for i in range(0, z.size, W):
        vstore(out, i, exponential._vexp(vload(z, i), constants))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_fused_exponential_is_within_one_and_a_half_ulps_of_exp(dtype):
    """The fused chunk's exponential (exponential._vexp, eq. 31a) against exp in extended precision (x87 long double,
    11 more bits than float64) on 2**21 points from the weight floor to FUSED_LIMIT and 2**16 on [-1, 1]: within
    1.5 ulp of the dtype (measured 1.13 in float64, 1.01 in float32: half an ulp from the table entry, half from the
    last multiply-add, the polynomial's 1.4e-17 and 1.5e-10); 0 below the floor, for -inf and for a padding class's
    bias. Its tables are 2**(j/T) correctly rounded: checked exactly, with rationals."""
    floor, limit = (exponential.WEIGHT_FLOOR32, fused.FUSED_LIMIT32) if dtype == np.float32 else \
        (exponential.WEIGHT_FLOOR64, fused.FUSED_LIMIT64)
    constants = exponential._exp_constants(dtype)
    z = np.concatenate([np.linspace(floor, limit, 2**21), np.linspace(-1, 1, 2**16)]).astype(dtype)
    out = np.empty_like(z)
    _vexp_of(z, out, constants)
    exact = np.exp(z.astype(np.longdouble))
    assert np.finfo(np.longdouble).nmant >= 63  # the reference is extended precision
    ulps = np.abs(out.astype(np.longdouble) - exact) / np.spacing(exact.astype(dtype)).astype(np.longdouble)
    assert ulps.max() <= 1.5, ulps.max()
    below = np.array([floor * 1.001, -1e30, -np.inf] + [2 * floor] * 29, dtype=dtype)
    result = np.empty_like(below)
    _vexp_of(below, result, constants)
    assert np.array_equal(result, np.zeros_like(below))
    T, _ = exponential._exp_layout(constants)
    for j, entry in enumerate(constants[:T]):  # |entry - 2**(j/T)| <= half an ulp, as powers of T
        half = Fraction(float(np.spacing(entry))) / 2
        assert (Fraction(float(entry)) - half) ** T <= 2**j <= (Fraction(float(entry)) + half) ** T, j


@pytest.mark.parametrize("generated", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_fused_chunk_keeps_the_bound_of_float32_and_its_overflow_guard(dtype, generated):
    """The fused chunk (eq. 31a) against the float64 dense formula, at B = 45 (a partial tile of rows), d = 33 and
    chunks of 100 (partial tiles of classes and of mean entries), from condensed to spread posteriors: within
    1e-12 in float64, within eq. 31's bound 2 dL max|mu - m| + 2 gamma_kc |mu|_max in float32; the Bayes class
    as in float64 wherever the two largest logits are further apart than 2 dL. Then a chunk whose logits jump
    above the running maximum by more than the guard (32 in float32, 512 in float64), which must be computed again
    relative to its own maximum: the same agreement, all finite."""
    from cfgphase.physics.mixture import GeneratedMixture

    u = 2.0**-24 if dtype == np.float32 else 2.0**-53
    chunk = 100
    gamma = chunk * u / (1 - chunk * u)
    source = GeneratedMixture(33, 700, seed=8) if generated else GaussianMixture.random(33, classes=700, seed=8)
    means = source.means_generator if generated else source.means.astype(dtype)
    means64 = source.means_generator.rows(np.arange(700), dtype=dtype)[0].astype(np.float64) if generated else \
        source.means.astype(dtype).astype(np.float64)
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((45, 33)) * 1.5).astype(dtype)
    x64 = x.astype(np.float64)
    for t in (0.02, 0.5, 3.0):
        scale, bias = source.logit_coefficients(t, OU())
        if generated:  # the kernel's bias of generated means: float64, then rounded to the dtype
            bias64 = (bias.log_weight - bias.coefficient * (means64**2).sum(1)).astype(dtype).astype(np.float64)
        else:
            bias64 = bias.astype(dtype).astype(np.float64)
        ref = dense(x64, means64, scale, bias64)
        res = posterior_moments(x, means, scale, bias, chunk=chunk, threads=2, fused=True)
        logits = scale * x64 @ means64.T + bias64
        dL = u * (33 * scale * np.linalg.norm(x64, axis=1).max() * np.linalg.norm(means64, axis=1).max()
                  + np.abs(logits).max())
        spread = np.abs(means64[None, :, :] - ref[0][:, None, :]).max()
        bound = 2 * dL * spread + 2 * gamma * np.abs(means64).max() if dtype == np.float32 else 1e-12 * spread
        assert np.abs(res.mean - ref[0]).max() <= bound, (t, bound)
        assert np.abs(res.log_partition - ref[1]).max() <= 2 * dL + gamma + 1e-12
        top = np.sort(logits, axis=1)[:, -2:]
        clear = top[:, 1] - top[:, 0] > 2 * dL
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(res.argmax[clear], ref[3][clear])
    if generated:
        return
    jump = 150.0 if dtype == np.float32 else 1000.0  # beyond FUSED_LIMIT32 = 32, FUSED_LIMIT64 = 512
    scale, bias = source.logit_coefficients(3.0, OU())
    bias = bias.astype(np.float64)
    bias[350:] += jump  # chunks 0-2 set the running maximum; chunk 3 (classes 300-399) jumps above it
    ref = dense(x64, means64, scale, bias.astype(dtype).astype(np.float64))
    res = posterior_moments(x, means, scale, bias.astype(dtype), chunk=chunk, threads=1, fused=True)
    assert np.isfinite(res.mean).all() and np.isfinite(res.log_partition).all() and np.isfinite(res.entropy).all()
    dL = u * (33 * scale * np.linalg.norm(x64, axis=1).max() * np.linalg.norm(means64, axis=1).max() + jump + 10)
    tolerance = 2 * dL * 2 * np.abs(means64).max() + 2 * gamma * np.abs(means64).max() if dtype == np.float32 \
        else 1e-11
    assert np.abs(res.mean - ref[0]).max() <= tolerance
    np.testing.assert_allclose(res.log_partition, ref[1], rtol=4 * u * 10, atol=0)
    np.testing.assert_allclose(res.entropy, ref[2], rtol=0, atol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_condensed_block_leaves_the_fused_chunk_for_the_skipping_one(dtype):
    """Condensed rows (t = 0.01, samples of class 0) without a hint: the first chunk is fused (nothing skipped
    there), then most rows would skip, and the following chunks take the BLAS path, which skips them (eq. 30); a
    spread posterior (t = 3) stays on the fused path and skips nothing. Both against the dense formula."""
    rng = np.random.default_rng(3)
    model = GaussianMixture.random(32, classes=2000, seed=6)
    x = model.sample_noised(0.01, OU(), 300, rng, target=0)[0]
    for t, condensed in ((0.01, True), (3.0, False)):
        scale, bias = model.logit_coefficients(t, OU())
        ref = dense(x, model.means, scale, bias)
        res = posterior_moments(x.astype(dtype), model.means.astype(dtype), scale, bias.astype(dtype), chunk=100,
                                fused=True)
        assert (res.skipped > 0.5) if condensed else res.skipped == 0
        atol = 1e-10 if dtype == np.float64 else 1e-3
        np.testing.assert_allclose(res.mean, ref[0], rtol=0, atol=atol)
        np.testing.assert_array_equal(res.argmax, ref[3])


def test_the_fused_path_follows_cfgphase_fused(monkeypatch):
    """CFGPHASE_FUSED (read at each call) chooses the path when ``fused`` is not given: "1" gives the numbers of
    fused=True, "0" those of fused=False, bit for bit; anything else is a ValueError naming the variable."""
    rng = np.random.default_rng(4)
    means, x, bias = rng.standard_normal((300, 7)), rng.standard_normal((20, 7)), rng.uniform(-1, 0, 300)
    for setting, fused in (("1", True), ("0", False)):
        monkeypatch.setenv("CFGPHASE_FUSED", setting)
        np.testing.assert_array_equal(posterior_moments(x, means, 0.7, bias, chunk=64).mean,
                                      posterior_moments(x, means, 0.7, bias, chunk=64, fused=fused).mean)
    assert not np.array_equal(posterior_moments(x, means, 0.7, bias, chunk=64, fused=True).mean,
                              posterior_moments(x, means, 0.7, bias, chunk=64, fused=False).mean)
    monkeypatch.setenv("CFGPHASE_FUSED", "yes")
    with pytest.raises(ValueError, match="CFGPHASE_FUSED"):
        posterior_moments(x, means, 0.7, bias)
