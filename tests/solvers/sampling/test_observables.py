"""Final statistics on exact samples with known answers (eqs. 13-14)."""

import numpy as np
import pytest

from cfgphase.physics.mixture import GaussianMixture
from cfgphase.physics.processes import OU
from cfgphase.physics.rules import CFG, GuidanceContext
from cfgphase.solvers.sampling import observables as obs
from cfgphase.solvers.score.fields import DENSE_COMPONENTS, MixtureField


def statistics_of(x, model, target=0):
    field = MixtureField(model, "ou", target=target)
    ev = field.evaluate(x, 0.0)
    labels, counts = obs.group_labels(x.shape[0], 32)
    return obs.final_statistics(field, x, ev, labels, counts)


@pytest.fixture(scope="module")
def model():
    return GaussianMixture.random(24, classes=50, seed=1)


def test_exact_conditional_samples_have_no_distortion(model):
    rng = np.random.default_rng(0)
    x = model.means[0] + 0.5 * rng.standard_normal((4096, 24))
    s = statistics_of(x, model)
    for key, target in (("mean_ratio", 1.0), ("var_par", 0.25), ("var_perp", 0.25), ("distortion", 0.0)):
        assert abs(s[key] - target) <= 3 * s[key + "_stderr"], key


def test_distortion_of_a_shifted_shrunk_gaussian_matches_the_closed_form_kl(model):
    """Samples from N((1 + delta) mu_c, v I): KL/d = [d v/s2 + delta^2|mu|^2/s2 - d + d log(s2/v)]/(2d)."""
    rng = np.random.default_rng(1)
    delta, v, s2, d = 0.3, 0.15, 0.25, 24
    mu = model.means[0]
    x = (1 + delta) * mu + np.sqrt(v) * rng.standard_normal((8192, d))
    s = statistics_of(x, model)
    kl = (d * v / s2 + delta**2 * (mu @ mu) / s2 - d + d * np.log(s2 / v)) / (2 * d)
    assert abs(s["distortion"] - kl) <= 3 * s["distortion_stderr"]
    assert abs(s["mean_ratio"] - (1 + delta)) <= 3 * s["mean_ratio_stderr"]


def test_jackknife_error_of_a_mean_is_the_standard_error():
    rng = np.random.default_rng(2)
    values = rng.standard_normal(3200) * 2.0
    labels, counts = obs.group_labels(values.size, 32)
    mean, err = obs.pooled(obs.group_means(values, labels, counts), counts)
    assert mean == pytest.approx(values.mean(), rel=1e-12)
    # 32 groups: the jackknife error itself scatters by ~1/sqrt(2*31) = 13 %; allow 3 of those
    assert err == pytest.approx(values.std(ddof=1) / np.sqrt(values.size), rel=0.39)


def test_crossing_time_interpolates_in_sampling_order():
    times = np.array([3.0, 2.0, 1.0, 0.0])
    assert obs.crossing_time(times, np.array([0.1, 0.3, 0.7, 0.9])) == pytest.approx(1.5)
    assert obs.crossing_time(times, np.array([0.1, 0.2, 0.3, 0.4])) is None
    assert obs.crossing_time(times, np.array([0.6, 0.7, 0.8, 0.9])) is None


def test_guidance_norm_is_omega_a_over_gamma_times_the_mean_gap(model):
    rng = np.random.default_rng(3)
    field = MixtureField(model, "ou")
    x, t, omega = rng.standard_normal((5, 24)), 0.7, 2.5
    ev = field.evaluate(x, t)
    p = OU()
    expected = omega * p.a(t) / p.class_var(t, 0.25) * np.linalg.norm(model.means[0] - ev.uncond, axis=1)
    guided = CFG().guided_mean(GuidanceContext(x, t, 0.0, omega, ev.cond, ev.uncond, p, 0.25))
    np.testing.assert_allclose(obs.guidance_norm(obs.State(t, x, ev, guided, field)), expected, rtol=1e-12)


def test_energy_distance_and_its_jackknife_against_brute_force():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((30, 3)) + 0.3
    labels, counts = obs.group_labels(40, 8)

    def u_statistic(a, b):
        dab = np.linalg.norm(a[:, None] - b[None], axis=2).mean()
        daa = np.linalg.norm(a[:, None] - a[None], axis=2).sum() / (len(a) * (len(a) - 1))
        dbb = np.linalg.norm(b[:, None] - b[None], axis=2).sum() / (len(b) * (len(b) - 1))
        return 2 * dab - daa - dbb

    value, stderr = obs.energy_distance(x, y, labels, counts)
    assert value == pytest.approx(u_statistic(x, y), rel=1e-12)
    loo = np.array([u_statistic(x[labels != g], y) for g in range(8)])
    assert stderr == pytest.approx(np.sqrt(7 / 8 * np.sum((loo - loo.mean()) ** 2)), rel=1e-10)


def test_quantiles_and_their_bootstrap_errors():
    values = np.random.default_rng(5).uniform(size=20000)
    q, se = obs.quantiles(values)
    np.testing.assert_allclose(q, obs.QUANTILES, atol=0.01)
    # the asymptotic standard error of a uniform quantile is sqrt(p (1 - p) / n)
    p = np.array(obs.QUANTILES)
    np.testing.assert_allclose(se, np.sqrt(p * (1 - p) / values.size), rtol=0.25)


def test_the_distortion_estimator_is_unbiased_on_exact_conditional_samples():
    """Exact samples of N(mu_c, s^2 I), d = 8, B = 128, 200 repetitions: the mean estimate is 0 within
    3 standard errors (1.5e-4). Without the digamma correction of the log-variances (eq. 13) it
    would be 1/(d (B - 1)) = 9.8e-4, more than 6 standard errors away; a Gaussian pair with one
    variance has the statistic too."""
    import cfgphase as cp
    from cfgphase.solvers.score.fields import field_for

    model = cp.Model(d=8, classes=3, seed=0)
    field = field_for(model)
    rng = np.random.default_rng(1)
    labels, counts = obs.group_labels(128, 32)
    values = []
    for _ in range(200):
        x = model.target_mean + 0.5 * rng.standard_normal((128, 8))
        values.append(obs.final_statistics(field, x, field.evaluate(x, 0.0), labels, counts)["distortion"])
    assert abs(np.mean(values)) < 3 * np.std(values, ddof=1) / np.sqrt(len(values))
    assert cp.simulate(cp.GaussianModel(var_c=0.25, var_u=1.25, d=4), 1.0, particles=64, steps=10).final[
        "distortion"] is not None


@pytest.mark.parametrize("classes", [20, 3000])  # the dense and the streaming kernel
def test_the_per_step_target_posterior_of_a_float32_field_is_consistent_with_its_partition(classes):
    """The field's target logit is the kernel's own (``hint_logit``): in float32 the per-step target posterior
    exp(target_logit - log_partition) then exceeds 1 by at most the rounding of a float32 sum over a chunk
    (gamma_kc + 3u: 1.4e-6 for the 20 classes of the dense path, 6.1e-5 for chunks of 1024; measured 0 and 1.4e-8)
    where the posterior has condensed, and agrees with the float64 field's to eq. 31's logit error, 2 dL with
    dL = u (d scale |x| |mu|_max + |L|_max + |b|_max) (1 %, a worst case; measured 1.4e-8). A float64 target logit
    against the float32 partition had put it 1.6e-4 and 1.8e-4 above 1."""
    from cfgphase.solvers.score.kernel import block_layout

    d, u = 128, 2.0**-24
    model = GaussianMixture.random(d, classes=classes, seed=2)
    x = model.sample_noised(0.02, OU(), 256, np.random.default_rng(3), target=0)[0]
    f64 = MixtureField(model, "ou").evaluate(x, 0.02)
    f32 = MixtureField(model, "ou", dtype=np.float32).evaluate(x, 0.02)
    p32, p64 = np.exp(f32.target_logit - f32.log_partition), np.exp(f64.target_logit - f64.log_partition)
    scale, b = model.logit_coefficients(0.02, OU())
    L = scale * x @ model.means.T + b
    dL = u * (d * scale * np.linalg.norm(x, axis=1).max() * np.linalg.norm(model.means, axis=1).max()
              + np.abs(L).max() + np.abs(b).max())
    chunk = classes if classes <= DENSE_COMPONENTS else block_layout(256, classes, 4)[1]  # one float32 sum's terms
    assert p64.min() > 0.99 and p32.max() <= 1 + chunk * u / (1 - chunk * u) + 3 * u
    np.testing.assert_allclose(p32, p64, rtol=2 * dL, atol=0)
