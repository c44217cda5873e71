"""Exact scores of the Gaussian mixture against an independent mpmath log-density (eqs. 2, 5, 6)."""

import mpmath
import numpy as np
import pytest
from scipy import integrate

from cfgphase.physics.gaussian import GaussianPair
from cfgphase.physics.mixture import GaussianMixture, number_of_classes, score_from_mean
from cfgphase.physics.processes import Flow, OU, VE

mpmath.mp.dps = 40
PROCESSES = [OU(), VE(), Flow()]
# near t = 0 and at large t for each process
TIMES = {"ou": (1e-3, 4.0), "ve": (1e-3, 60.0), "flow": (1e-3, 0.97)}


def mp_log_density(model, process, t, x):
    """log p_t(x) from the definition sum_k pi_k N(x; a mu_k, Gamma I), in 40-digit arithmetic."""
    a = mpmath.mpf(float(process.a(t)))
    gamma = mpmath.mpf(float(process.class_var(t, model.class_var)))
    d = len(x)
    terms = []
    for w, mu in zip(model.weights, model.means):
        sq = mpmath.fsum((x[j] - a * mpmath.mpf(float(mu[j]))) ** 2 for j in range(d))
        terms.append(mpmath.log(mpmath.mpf(float(w))) - sq / (2 * gamma))
    top = max(terms)
    return top + mpmath.log(mpmath.fsum(mpmath.exp(v - top) for v in terms)) - d * mpmath.log(2 * mpmath.pi * gamma) / 2


def mp_gradient(model, process, t, x):
    x = [mpmath.mpf(float(v)) for v in x]
    grad = []
    for j in range(len(x)):
        def f(h, j=j):
            y = list(x)
            y[j] += h
            return mp_log_density(model, process, t, y)
        grad.append(float(mpmath.diff(f, 0)))
    return np.array(grad)


def model_for(K, d=4, seed=0):
    if K == 2:  # the symmetric +-mu mixture, where the posterior is a tanh
        mu = np.random.default_rng(seed).standard_normal(d)
        return GaussianMixture(np.stack([mu, -mu]), class_var=0.25)
    weights = np.random.default_rng(seed + 1).uniform(0.5, 1.5, K)
    return GaussianMixture.random(d, classes=K, class_var=0.25, weights=weights, seed=seed)


@pytest.mark.parametrize("K", [1, 2, 1000])
@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_score_is_the_gradient_of_the_exact_log_density(process, K):
    """Relative error 1e-6 (the issue's bound); mpmath makes the reference exact to ~1e-30."""
    model = model_for(K)
    rng = np.random.default_rng(K)
    for t in TIMES[process.name]:
        # points drawn from the noised data, so the posterior is neither trivial nor saturated
        x, _ = model.sample_noised(t, process, 2, rng)
        score = model.score(x, t, process)
        for i in range(2):
            ref = mp_gradient(model, process, t, x[i])
            assert np.linalg.norm(score[i] - ref) <= 1e-6 * np.linalg.norm(ref), (t, i)
            # Tweedie: the denoiser is (x + sigma^2 score) / a
            if process.a(t) > 0.1:
                tweedie = (x[i] + process.var(t) * ref) / process.a(t)
                np.testing.assert_allclose(model.denoiser(x[i : i + 1], t, process)[0], tweedie, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_conditional_score_is_the_gradient_of_the_class_log_density(process):
    model = model_for(3)
    single = GaussianMixture(model.means[2:3], class_var=model.class_var)
    rng = np.random.default_rng(3)
    for t in TIMES[process.name]:
        x = rng.standard_normal((1, model.d))
        ref = mp_gradient(single, process, t, x[0])
        np.testing.assert_allclose(model.conditional_score(x, t, process, target=2)[0], ref, rtol=1e-9)


def test_symmetric_two_class_score_is_a_tanh_of_the_overlap():
    model = model_for(2, d=6)
    mu = model.means[0]
    process = OU()
    x = np.random.default_rng(1).standard_normal((8, 6))
    for t in (0.05, 0.7, 3.0):
        a, gamma = process.a(t), process.class_var(t, model.class_var)
        closed = -(x - a * np.tanh(a * (x @ mu) / gamma)[:, None] * mu) / gamma
        np.testing.assert_allclose(model.score(x, t, process), closed, rtol=1e-12, atol=1e-12)


def test_log_density_is_normalised_in_one_dimension():
    model = GaussianMixture(np.array([[-1.0], [0.3], [2.0]]), class_var=0.2, weights=[0.2, 0.5, 0.3])
    for process, t in ((OU(), 0.4), (VE(), 2.0), (Flow(), 0.5)):
        total, err = integrate.quad(lambda y: np.exp(model.log_density(np.array([[y]]), t, process)[0]), -30, 30)
        assert total == pytest.approx(1.0, abs=1e-9)


def test_gaussian_pair_estimate_gives_the_exact_unconditional_score():
    pair = GaussianPair(mean_c=[1.0, -0.5], var_c=[0.2, 0.4], mean_u=[0.1, 0.0], var_u=[1.0, 2.0])
    x = np.random.default_rng(0).standard_normal((5, 2))
    for process, t in ((OU(), 0.3), (VE(), 3.0), (Flow(), 0.6)):
        m = pair.unconditional_mean_estimate(x, t, process)
        score = score_from_mean(x, m, t, process, pair.reference_var)
        a = process.a(t)
        exact = -(x - a * pair.mean_u) / (a * a * pair.var_u + process.var(t))
        np.testing.assert_allclose(score, exact, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(d=4, classes=0), "classes"),
        (dict(d=0, classes=3), "d"),
        (dict(d=4, classes=2.5), "classes"),
        (dict(d=4, alpha=-0.1), "alpha"),
        (dict(d=4, alpha=float("nan")), "alpha"),
        (dict(d=400, alpha=1.0), "alpha"),  # K = e^400 classes cannot be stored
        (dict(d=4, classes=3, alpha=0.1), "classes"),
    ],
)
def test_number_of_classes_rejects_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        number_of_classes(**kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(class_var=-0.1), "class_var"),
        (dict(class_var=float("nan")), "class_var"),
        (dict(mean_var=-1.0), "mean_var"),
        (dict(mean_var=float("nan")), "mean_var"),
        (dict(weights=[1.0, -1.0, 1.0]), "weights"),
        (dict(weights=[1.0, float("nan"), 1.0]), "weights"),
        (dict(weights=[1.0, 1.0]), "weights"),
    ],
)
def test_mixture_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GaussianMixture.random(4, classes=3, **kwargs)


def test_alpha_gives_round_exp_alpha_d_classes():
    assert number_of_classes(32, alpha=0.2) == round(np.exp(6.4))
    assert GaussianMixture.random(10, alpha=0.3).K == round(np.exp(3.0))


def _class_model(labels):
    """Six components in 3-D grouped into classes by ``labels``, unequal weights."""
    rng = np.random.default_rng(8)
    return GaussianMixture(rng.standard_normal((6, 3)), class_var=0.3, weights=rng.uniform(0.5, 1.5, 6),
                           labels=labels)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_multimodal_conditional_score_is_the_gradient_of_the_class_log_density(process):
    """Class 1 = components {1, 3, 4}: its score is the mpmath gradient of its own mixture density."""
    model = _class_model([0, 1, 2, 1, 1, 0])
    sub = GaussianMixture(model.means[[1, 3, 4]], class_var=0.3, weights=model.weights[[1, 3, 4]])
    x = np.random.default_rng(9).standard_normal((2, 3))
    for t in TIMES[process.name]:
        score = model.conditional_score(x, t, process, target=1)
        for i in range(2):
            np.testing.assert_allclose(score[i], mp_gradient(sub, process, t, x[i]), rtol=1e-6, atol=1e-9)


def test_class_posterior_is_bayes_rule_on_the_class_densities():
    model = _class_model([0, 1, 2, 1, 1, 0])
    process, t = OU(), 0.4
    x = np.random.default_rng(10).standard_normal((5, 3))
    log_joint = np.stack([np.log(model.class_weights[c]) + model.log_density(x, t, process, model.components(c))
                          for c in range(3)], axis=1)
    expected = np.exp(log_joint - np.logaddexp.reduce(log_joint, axis=1, keepdims=True))
    np.testing.assert_allclose(model.class_posterior(x, t, process), expected, rtol=1e-12)
    np.testing.assert_allclose(model.class_weights, [model.weights[[0, 5]].sum(), model.weights[[1, 3, 4]].sum(),
                                                     model.weights[2]], rtol=1e-15)


def test_random_multimodal_classes_and_bad_labels():
    model = GaussianMixture.random(4, classes=3, modes=2, mode_weights=[0.3, 0.7], seed=0)
    assert model.K == 6 and model.n_classes == 3 and model.multimodal
    np.testing.assert_allclose(model.weights, np.tile([0.1, 7 / 30], 3))
    np.testing.assert_array_equal(model.components(2), [4, 5])
    with pytest.raises(ValueError, match="labels"):
        GaussianMixture(np.zeros((3, 2)), labels=[0, 2, 2])
    with pytest.raises(ValueError, match="mode_weights"):
        GaussianMixture.random(4, classes=3, modes=2, mode_weights=[1.0], seed=0)
    with pytest.raises(ValueError, match="target"):
        model.components(3)


def test_independent_unconditional_model_drives_the_sampler_with_its_own_score():
    """An N(0, v I) unconditional converted to the field's reference variance (eq. 8) gives back
    the score -x / (a^2 v + sigma^2) of N(0, v I) noised."""
    from cfgphase.solvers.score.fields import MixtureField

    model = GaussianMixture.random(5, classes=1, modes=2, class_var=0.1, seed=1)
    field = MixtureField(model, "ou", unconditional=GaussianMixture(np.zeros((1, 5)), class_var=2.0))
    x = np.random.default_rng(2).standard_normal((4, 5))
    for t in (0.05, 0.7, 3.0):
        ev = field.evaluate(x, t)
        p = OU()
        score = score_from_mean(x, ev.uncond, t, p, model.class_var)
        np.testing.assert_allclose(score, -x / (p.a(t) ** 2 * 2.0 + p.var(t)), rtol=1e-12)
        assert ev.log_partition is None and ev.responsibilities.shape == (4, 2)
