"""Finite-d theory (docs/theory.md section 12, eqs. 50-63): limits, its ingredients against direct
computation, the exact reduction against simulation, bad input. Every tolerance is 3 standard errors
of the quantities compared (Monte-Carlo errors of both sides in quadrature)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

import cfgphase as cp
from cfgphase.physics.processes import get_process
from cfgphase.solvers.sampling.steppers import heun
from cfgphase.solvers.sampling.timegrid import default_t_max, time_grid
from cfgphase.solvers.theory import finite_d
from cfgphase.solvers.theory.competitors import CAPACITY, AboveThreshold, Competition, environment
from cfgphase.solvers.theory.environment import EnergyLaw, draw_environments, quenched_statistics
from cfgphase.solvers.theory.finite_d import finite_d_prediction
from cfgphase.solvers.theory.meanfield import guided_prediction

KEYS = ("mean_ratio", "var_par", "var_perp", "t_condensation", "distortion")


def test_without_d_predict_is_exactly_the_leading_order():
    model = cp.Model(d=24, alpha=0.3, seed=2)
    pred = cp.predict(model, 1.5, sampler="sde", d=None, target_norm=model.target_norm)
    direct = guided_prediction(0.3, 1.5, sampler="sde", target_norm=model.target_norm)
    for key in KEYS:
        assert getattr(pred, key) == getattr(direct, key)
        assert getattr(pred, key + "_stderr") is None and key + "_stderr" not in pred.summary()
    assert pred.inputs["d"] is None


def test_with_d_predict_reads_k_from_the_model_and_carries_standard_errors():
    """K = round(exp(alpha D)) from the model's alpha, or the model's fixed K; the result has the
    statistic names of the d -> infinity one plus their Monte-Carlo errors."""
    pred = cp.predict(cp.Model(d=8, alpha=0.4), 1.0, sampler="sde", d=16, particles=400)
    assert pred.inputs["d"] == 16 and pred.inputs["K"] == round(math.exp(0.4 * 16))
    assert pred.inputs["method"] == "population" and pred.success
    summary = pred.summary()
    for key in KEYS:
        assert summary[key + "_stderr"] > 0
    fixed = cp.predict(cp.Model(d=8, classes=6), 1.0, d=12, particles=400)
    assert fixed.inputs["K"] == 6 and fixed.inputs["method"] == "reduction"
    assert float(fixed.to_xarray()["var_perp_stderr"]) == fixed.var_perp_stderr
    with pytest.raises(ValueError, match="trajectory"):
        fixed.trajectory([0.5])


def test_monte_carlo_errors_match_the_scatter_over_population_seeds():
    """8 population seeds at 500 particles (annealed others: fast): the sample sd of mean_ratio and
    var_perp over seeds against the mean reported error; sqrt(chi2_7 / 7) lies in [0.45, 1.5] with 95 %
    probability."""
    preds = [finite_d_prediction(16, 1.0, alpha=0.4, sampler="sde", particles=500, quenched=False, seed=s)
             for s in range(8)]
    for key in ("mean_ratio", "var_perp"):
        spread = np.std([getattr(p, key) for p in preds], ddof=1)
        reported = np.sqrt(np.mean([getattr(p, key + "_stderr") ** 2 for p in preds]))
        assert 0.45 < spread / reported < 1.5, (key, spread, reported)


@pytest.mark.parametrize("sampler, keys", [("ode", ("mean_ratio", "var_perp", "t_condensation")),
                                           ("sde", ("var_perp", "t_condensation"))])
def test_annealed_population_tends_to_the_leading_order_as_one_over_d(sampler, keys):
    """Check C: with annealed others (eqs. 50-55) d x (population - leading order) tends to a constant
    (eq. 55): the same at d = 256 and 1024 within 3 combined errors, and not zero at d = 64 (the
    correction is resolved). 800 steps from t_max = 7 make the ODE's discretisation negligible; the
    SDE's exponential step keeps an O(h) offset of mean_ratio (2e-4 at 800 steps), so there only
    var_perp and t* are checked."""
    leading = guided_prediction(0.4, 1.0, sampler=sampler, t_max=7.0)
    grid = cp.Sampler(kind=sampler, steps=800, t_max=7.0)
    scaled = {}
    for d in (64, 256, 1024):
        pred = finite_d_prediction(d, 1.0, alpha=0.4, sampler=grid, quenched=False, particles=6000, seed=1)
        scaled[d] = {key: (d * (getattr(pred, key) - getattr(leading, key)), d * getattr(pred, key + "_stderr"))
                     for key in keys}
    for key in keys:
        (c1, e1), (c2, e2) = scaled[256][key], scaled[1024][key]
        assert abs(c1 - c2) <= 3 * math.hypot(e1, e2), (key, scaled)
        c0, e0 = scaled[64][key]
        assert abs(c0) > 3 * e0, (key, scaled)


def _direct_sums(b, c, d, others, reps, rng):
    """X and the tilt of `reps` sets of `others` i.i.d. classes, summed directly (eqs. 56, 58)."""
    zeta = rng.standard_normal((reps, others))
    energy = b * zeta - 0.5 * c * (zeta ** 2 + rng.chisquare(d - 1, (reps, others)))
    top = energy.max(axis=1, keepdims=True)
    w = np.exp(energy - top)
    log_mean = -0.5 * d * math.log1p(c) + b * b / (2 * (1 + c))
    X = top[:, 0] + np.log(w.sum(axis=1)) - math.log(others) - log_mean
    return X, (w * zeta).sum(axis=1) / w.sum(axis=1) / (b / (1 + c))


@pytest.mark.parametrize("d, others, t, q, nodes", [(16, 15, 1.0, 1.1, 256), (16, 600, 0.5, 1.3, 64),
                                                    (32, 600, 1.2, 1.14, 64)])
def test_order_statistics_match_direct_sums_of_independent_classes(d, others, t, q, nodes):
    """Check B: the quenched X = log Z - log E Z and the others' tilt along x from the top-M order
    statistics plus the conditional mean of the rest (eqs. 56-58), against direct sums of N i.i.d.
    classes at the same (t, |x|); 3 combined standard errors. N = 15 has every class explicit, where
    the default 64-node table biases X by -0.010 +- 0.002 (measured), so 256 nodes are used there."""
    rng = np.random.default_rng(11)
    process = get_process("ou")
    a, gamma = float(process.a(t)), float(process.class_var(t, 0.25))
    x_norm = math.sqrt(q * d)
    b, c = a * x_norm / gamma, a * a / gamma
    reps = 40000 if others < 100 else 6000
    X_direct, tilt_direct = _direct_sums(b, c, d, others, reps, rng)
    top = others if others <= 64 else 12
    n = 100000
    levels, rest = draw_environments(n, others, top, rng)
    X, tilt, _, _ = quenched_statistics(EnergyLaw(b, c, d, others, top, nodes=nodes), levels, rest, np.full(n, x_norm))
    for ours, direct in ((X, X_direct), (tilt, tilt_direct)):
        err = math.hypot(ours.std() / math.sqrt(n), direct.std() / math.sqrt(direct.size))
        assert abs(ours.mean() - direct.mean()) <= 3 * err, (ours.mean(), direct.mean(), err)


@pytest.mark.parametrize("d, t, q", [(24, 0.5, 0.9), (48, 1.2, 1.1)])
def test_classes_drawn_above_the_threshold_follow_the_conditioned_prior(d, t, q):
    """Eq. (98): the survival S(e) and the draws of (zeta, R) given eps > e, against direct draws of
    zeta ~ N(0, 1), R ~ chi^2_{d-1} kept when eps > e; e at 20 expected classes out of 5000; 3
    standard errors of the direct estimates (the tabulated ones are far more precise)."""
    rng = np.random.default_rng(7)
    process = get_process("ou")
    a, gamma = float(process.a(t)), float(process.class_var(t, 0.25))
    b, c = a * math.sqrt(q * d) / gamma, a * a / gamma
    law = EnergyLaw(b, c, d, 5000, 20)
    e = law.top_classes(np.array([[math.log(20 / 5000)]]))[0][0, 0] + law.log_mean
    above = AboveThreshold(np.array([b]), c, d, np.array([e]))
    zeta, r = above.draw(np.zeros(20000, dtype=int), rng)
    assert np.all(b * zeta - 0.5 * c * (zeta ** 2 + r) > e - 1e-9)
    n = 4_000_000
    z_direct, r_direct = rng.standard_normal(n), rng.chisquare(d - 1, n)
    keep = b * z_direct - 0.5 * c * (z_direct ** 2 + r_direct) > e
    s = keep.mean()
    assert abs(above.survival[0] - s) <= 3 * math.sqrt(s / n), (above.survival[0], s)
    for ours, direct in ((zeta, z_direct[keep]), (r, r_direct[keep])):
        err = math.hypot(ours.std() / math.sqrt(ours.size), direct.std() / math.sqrt(direct.size))
        assert abs(ours.mean() - direct.mean()) <= 3 * err, (ours.mean(), direct.mean(), err)


def test_without_pull_the_pool_keeps_its_stationary_size(monkeypatch):
    """Eqs. (96), (98): with a negative weight too small to pull (omega = -1e-9; K = 602, d = 16, SDE,
    100 steps, 2000 particles) the renewal alone moves the pool, whose size must stay at its stationary
    value: the mean number of explicit classes at the end within 0.5 of the first renewal's (its
    Monte-Carlo error is about 0.1; a class's own innovation in the backward step keeps it at 11.8 ->
    11.6, the average class's innovation, used before, let it grow to 15.4)."""
    counts = []
    renew = Competition._renew

    def counting(self, t_next, *args, **kwargs):
        renew(self, t_next, *args, **kwargs)
        counts.append(self.pool.alive.sum(axis=1).mean())

    monkeypatch.setattr(Competition, "_renew", counting)
    process = get_process("ou")
    grid = time_grid(process, 100, default_t_max(process, 16 * 1.25), 0.0, class_var=0.25)
    model = finite_d._Model(16, 602, 1.0, 1.0, 0.25, process, -1e-9)
    finite_d._population_run(model, "sde", grid, 2000, np.random.default_rng(3), True, -1.0)
    assert len(counts) > 50
    assert abs(counts[-1] - counts[0]) < 0.5 and max(counts) - counts[0] < 0.5, counts


@pytest.mark.slow
@pytest.mark.parametrize("exact_pulls", [False, True])
@pytest.mark.parametrize("sampler", ["sde", "ode"])
def test_dynamic_competitors_match_the_exact_reduction_under_negative_guidance(sampler, exact_pulls):
    """Eqs. (95)-(102) where the reduction of eq. (63) is exact: K = 25 classes at d = 32, omega = -0.5.
    The population with its explicit dynamic classes (forced, although K <= d) against the reduction,
    6000 particles each; 3 combined Monte-Carlo errors. Measured, SDE: mean_ratio 0.8444 +- 0.0019
    against 0.8519 +- 0.0025, var_perp 0.3213 +- 0.0016 against 0.3160 +- 0.0018 (var_par 1.50 against 1.46,
    t_condensation 0.437 against 0.437; before the entrants' own innovation of eq. 98: 0.8458, 0.3168,
    t_condensation 0.425); the frozen environment of eqs. (57)-(61) gives mean_ratio 0.9262,
    var_perp 0.2609, var_par 0.56, t_condensation 0.566. ODE (Heun, eqs. 100-102): mean_ratio 0.6946 +-
    0.0020 against 0.6942 +- 0.0040, var_perp 0.4335 +- 0.0021 against 0.4323 +- 0.0032, var_par 2.056 against
    2.058 (no condensation); the frozen environment with the pull of eq. (60) gives 0.6980, 0.4239 (-2.3
    combined errors) and var_par 1.83. With the classes as vectors (exact_pulls, eq. 103): SDE 0.8495 +- 0.0018
    and 0.3177 +- 0.0015, ODE 0.6934 +- 0.0020 and 0.4334 +- 0.0021."""
    process = get_process("ou")
    d, K = 32, 25
    grid = time_grid(process, 200, default_t_max(process, d * 1.25), 0.0, class_var=0.25)
    model = finite_d._Model(d, K, 1.0, 1.0, 0.25, process, -0.5)
    exact = finite_d._reduced_run(model, sampler, grid, 6000, np.random.default_rng(5))
    pool = finite_d._population_run(model, sampler, grid, 6000, np.random.default_rng(5), True, -1.0, exact_pulls)
    for key, se_key, scale in (("mean_y", "mean_y_se", model.target), ("mean_p", "mean_p_se", d - 1)):
        err = math.hypot(exact[se_key], pool[se_key])
        assert abs(exact[key] - pool[key]) <= 3 * err, (key, exact[key] / scale, pool[key] / scale, err / scale)


@pytest.mark.slow
def test_sde_condensation_time_follows_the_renewal_of_the_dominant_classes(monkeypatch):
    """Eq. (106) where the reduction of eq. (63) is exact: K = 25, d = 32, omega = 1, SDE. The population, whose
    explicit classes the noise renews (forced although K <= d; 12000 particles), against the reduction (48000
    particles): t_condensation, mean_ratio and E p/(d - 1) within 3 combined Monte-Carlo errors. Measured: t_c
    1.3143 +- 0.0019 against 1.3078 +- 0.0019 (+2.4 combined errors, the small-K remainder of docs/theory.md
    12.7), mean_ratio 1.0230 against 1.0235 +- 0.0004, E p/(d - 1) 0.2494 against 0.2497 +- 0.0003. The frozen
    environment of eqs. (57)-(61) (A7), checked here too with 6000 particles, condenses late: t_c 1.2844 +- 0.0028
    (-6.9 combined errors), the sign of the simulations' gap at K = 122 and 602 that eq. (106) closes."""
    process = get_process("ou")
    d, K = 32, 25
    grid = time_grid(process, 200, default_t_max(process, d * 1.25), 0.0, class_var=0.25)
    model = finite_d._Model(d, K, 1.0, 1.0, 0.25, process, 1.0)
    exact = finite_d._reduced_run(model, "sde", grid, 48000, np.random.default_rng(11))
    pool = finite_d._population_run(model, "sde", grid, 12000, np.random.default_rng(12), True, -1.0)
    for key, se_key, scale in (("t_c", "t_c_se", 1.0), ("mean_y", "mean_y_se", model.target),
                               ("mean_p", "mean_p_se", d - 1)):
        err = math.hypot(exact[se_key], pool[se_key])
        assert abs(exact[key] - pool[key]) <= 3 * err, (key, exact[key] / scale, pool[key] / scale, err / scale)
    monkeypatch.setattr(finite_d, "Competition", lambda *args, **kwargs: None)  # the frozen environment
    frozen = finite_d._population_run(model, "sde", grid, 6000, np.random.default_rng(5), True, -1.0)
    assert exact["t_c"] - frozen["t_c"] > 3 * math.hypot(exact["t_c_se"], frozen["t_c_se"])


def _guided_in_d_dimensions(model, population, means, norm2, alive, x, t):
    r"""The guided estimate at x (n, d) from explicit class means (n, S, d) and the rest below the threshold
    (eq. 98) along x, written directly in d dimensions: energies from :math:`x\cdot\mu_k` (eqs. 56, 95)."""
    a, gamma, _ = model.at(t)
    s = math.sqrt(model.mean_var)
    beta, c = a * s / gamma, a * a * model.mean_var / gamma
    q = (x * x).sum(axis=1)
    x_norm = np.sqrt(q)
    _, _, _, log_rest, rest_zeta, _ = environment(population, t, x_norm)
    e = np.where(alive, beta * np.einsum("nkd,nd->nk", means, x) / s - 0.5 * c * norm2, -np.inf)
    shift = np.maximum(e.max(axis=1), log_rest)
    explicit, rest = np.exp(e - shift[:, None]), np.exp(log_rest - shift)
    z = explicit.sum(axis=1) + rest
    target = -(q - 2 * a * model.target * x[:, 0] + a * a * model.target ** 2) / (2 * gamma)
    pi = 1.0 / (1.0 + np.exp(-(target - shift - np.log(z) + q / (2 * gamma))))
    g = model.omega * (1.0 - pi)
    others = np.einsum("nk,nkd->nd", explicit / z[:, None], means) + (rest / z * rest_zeta * s / x_norm)[:, None] * x
    guided = -g[:, None] * others
    guided[:, 0] += (1 + g) * model.target
    return guided, explicit / z[:, None]


def _started_competition(d, K, t, vectors):
    """Six particles at time t (omega = -0.5) with their pool of explicit classes filled (eq. 98):
    (model, population, competition, y, p)."""
    n = 6
    model = finite_d._Model(d, K, 1.0, 1.0, 0.25, get_process("ou"), -0.5)
    rng = np.random.default_rng(3)
    population = finite_d._Population(model, n, rng, True, False)
    a, gamma, _ = model.at(t)
    y = a * model.target * rng.uniform(0.3, 0.9, n)
    p = gamma * rng.chisquare(d - 1, n)
    competition = Competition(model, population, rng, vectors=vectors)
    competition.start(y, p, t)
    return model, population, competition, y, p


@pytest.mark.parametrize("t, t_next", [(0.5, 0.45), (0.03, 0.0)])
def test_heun_step_of_the_explicit_classes_is_the_simulators_heun_step(t, t_next):
    """Eqs. (100)-(101): the two-stage step of the explicit classes (Competition.heun_step) is the
    simulator's Heun stepper (steppers.heun) written in the frame (u, x_perp, e_k). With the classes'
    own directions e_k exactly orthogonal (d = 48 > 2 + CAPACITY), x and the means built as
    d-dimensional vectors and stepped by steppers.heun give the same y, p and w_k of every explicit
    class, to rounding; omega = -0.5, K = 5000, and a step into zero noise (Euler)."""
    d = 48
    model, population, competition, y, p = _started_competition(d, 5000, t, vectors=False)
    pool = competition.pool
    pool.renew = lambda *args: None  # compare the step alone, before the pool's renewal (eq. 98)
    C, w, norm2, alive = pool.C.copy(), pool.w.copy(), pool.norm2.copy(), pool.alive.copy()
    r_orth = np.where(alive, np.maximum(norm2 - C ** 2 - w ** 2, 0.0), 0.0)
    assert d >= 2 + CAPACITY
    means = np.zeros((y.size, CAPACITY, d))
    means[:, :, 0], means[:, :, 1] = C, w
    means[:, np.arange(CAPACITY), 2 + np.arange(CAPACITY)] = np.sqrt(r_orth)
    x = np.zeros((y.size, d))
    x[:, 0], x[:, 1] = y, np.sqrt(p)
    y_new, p_new, _ = competition.heun_step(t, t_next, y, p)

    def guided(z, time):
        return _guided_in_d_dimensions(model, population, means, norm2, alive, z, time)[0]

    field = SimpleNamespace(process=model.process, reference_var=model.class_var, evaluate=lambda z, time: None)
    x_new, _ = heun(field, lambda z, time, ev, towards: guided(z, time), t, t_next, x, None, guided(x, t))
    weights = _guided_in_d_dimensions(model, population, means, norm2, alive, x, t)[1]
    assert weights.sum(axis=1).max() > 0.5  # the explicit classes carry the others' weight: the pull matters
    perp = x_new[:, 1:]
    np.testing.assert_allclose(y_new, x_new[:, 0], rtol=1e-12)
    np.testing.assert_allclose(p_new, (perp * perp).sum(axis=1), rtol=1e-12)
    w_direct = np.einsum("nkd,nd->nk", means[:, :, 1:], perp) / np.sqrt(p_new)[:, None]
    np.testing.assert_allclose(np.where(alive, pool.w, 0.0), np.where(alive, w_direct, 0.0), rtol=1e-10, atol=1e-12)
    assert np.abs(pool.w - w)[alive].max() > 1e-3  # the classes moved
    # eq. 107: x started in the plane (u, x_perp), so its coordinate along a class's own direction e_k is its
    # whole displacement along that class, q_k sqrt(R'_k) (sigma_mu = 1); pulled toward the class (omega < 0)
    np.testing.assert_allclose(pool.q * np.sqrt(r_orth), x_new[:, 2:2 + CAPACITY], rtol=1e-10, atol=1e-14)
    assert np.all(pool.q[alive] >= 0) and pool.q.max() > 1e-6 and np.all(pool.q[~alive] == 0)


@pytest.mark.parametrize("t, t_next", [(0.5, 0.45), (0.03, 0.0)])
def test_heun_step_of_the_explicit_vectors_is_the_simulators_heun_step(t, t_next):
    """Eq. (103): with the explicit classes as vectors, Competition.heun_step is the simulator's Heun
    stepper for any geometry. At d = 10, each particle's explicit classes (up to CAPACITY = 40 of them in
    9 dimensions) overlap, which eq. (101)'s frame cannot hold; built as d-dimensional vectors and stepped
    by steppers.heun, x and the means give the same y, p and w_k of every explicit class, to rounding;
    omega = -0.5, K = 300, and a step into zero noise (Euler)."""
    d = 10
    model, population, competition, y, p = _started_competition(d, 300, t, vectors=True)
    pool = competition.pool
    pool.renew = lambda *args: None  # compare the step alone, before the pool's renewal (eq. 98)
    alive, w = pool.alive.copy(), pool.w.copy()
    means = np.concatenate([pool.C[:, :, None], pool.Z], axis=2)
    np.testing.assert_allclose((means ** 2).sum(axis=2)[alive], pool.norm2[alive], rtol=1e-12)
    assert alive.sum(axis=1).max() > d - 1  # more explicit classes than the d - 1 directions: not orthogonal
    x = np.concatenate([y[:, None], competition.xperp], axis=1)
    np.testing.assert_allclose((competition.xperp ** 2).sum(axis=1), p, rtol=1e-12)
    y_new, p_new, _ = competition.heun_step(t, t_next, y, p)

    def guided(z, time):
        return _guided_in_d_dimensions(model, population, means, pool.norm2, alive, z, time)[0]

    field = SimpleNamespace(process=model.process, reference_var=model.class_var, evaluate=lambda z, time: None)
    x_new, _ = heun(field, lambda z, time, ev, towards: guided(z, time), t, t_next, x, None, guided(x, t))
    weights = _guided_in_d_dimensions(model, population, means, pool.norm2, alive, x, t)[1]
    assert weights.sum(axis=1).max() > 0.5  # the explicit classes carry the others' weight: the pull matters
    perp = x_new[:, 1:]
    np.testing.assert_allclose(y_new, x_new[:, 0], rtol=1e-12)
    np.testing.assert_allclose(competition.xperp, perp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p_new, (perp * perp).sum(axis=1), rtol=1e-12)
    w_direct = np.einsum("nkd,nd->nk", means[:, :, 1:], perp) / np.sqrt(p_new)[:, None]
    np.testing.assert_allclose(np.where(alive, pool.w, 0.0), np.where(alive, w_direct, 0.0), rtol=1e-10, atol=1e-12)
    assert np.abs(pool.w - w)[alive].max() > 1e-3  # the classes moved


@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_k_dimensional_reduction_matches_the_dense_simulation(sampler):
    """Check E: K = 16 classes at d = 16, omega = 1: the exact reduction (eq. 63) against cp.simulate,
    4 draws of the means x 1024 particles, each draw against the reduction at its own rho and t_max.
    Standard error: the larger of the between-draw spread and the jackknife errors, over the draws,
    with the reduction's Monte-Carlo error in quadrature; 3 of them."""
    residuals = {key: [] for key in ("mean_ratio", "var_par", "var_perp")}
    errors = {key: [] for key in residuals}
    mc = {key: [] for key in residuals}
    for seed in range(4):
        model = cp.Model(d=16, classes=16, seed=seed)
        sim = cp.simulate(model, 1.0, sampler=sampler, particles=1024, seed=seed, save=cp.SaveAt(times=[0.0]))
        final = sim.final
        pred = finite_d_prediction(16, 1.0, classes=16, sampler=cp.Sampler(kind=sampler, t_max=sim.params["t_max"]),
                                   target_norm=model.target_norm, particles=4000, seed=100 + seed)
        for key in residuals:
            residuals[key].append(final[key] - getattr(pred, key))
            errors[key].append(final[key + "_stderr"])
            mc[key].append(getattr(pred, key + "_stderr"))
    for key, res in residuals.items():
        n = len(res)
        var = max(np.var(res, ddof=1), np.mean(np.square(errors[key]))) / n + np.mean(np.square(mc[key])) / n
        assert abs(np.mean(res)) <= 3 * math.sqrt(var), (key, np.mean(res), math.sqrt(var))


@pytest.mark.parametrize("kwargs, name", [
    (dict(d=1), "d"), (dict(d=2.5), "d"), (dict(d=True), "d"), (dict(d="16"), "d"),
    (dict(d=16, particles=3), "particles"), (dict(d=16, seed=-1), "seed"),
    (dict(particles=100), "particles"),
])
def test_bad_input_names_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        cp.predict(cp.Model(d=16, alpha=0.2), 1.0, **kwargs)


def test_bad_class_counts():
    with pytest.raises(ValueError, match="alpha, classes"):
        finite_d_prediction(16, 1.0, alpha=0.2, classes=5)
    with pytest.raises(ValueError, match="classes"):
        finite_d_prediction(16, 1.0, classes=1)
    with pytest.raises(ValueError, match="classes"):
        finite_d_prediction(16, 1.0, classes=2.5)
    for alpha in (float("nan"), -1.0, 100.0):
        with pytest.raises(ValueError, match="alpha"):
            finite_d_prediction(16, 1.0, alpha=alpha)
    with pytest.raises(ValueError, match="sampler"):
        finite_d_prediction(16, 1.0, alpha=0.2, sampler=cp.Sampler(kind="ode", method="euler"))
    with pytest.raises(ValueError, match="exact_pulls"):
        finite_d_prediction(16, -0.5, alpha=0.2, exact_pulls="yes")


def test_the_pool_carries_each_class_displacement_and_hands_over_those_that_leave():
    """Eq. (107) bookkeeping: a class's displacement q stays with its class through the pool's renewal
    (slots are reordered by energy), entrants start at q = 0, and every class that leaves, below the
    threshold or evicted, is handed over once by ``collect`` with its q. Classes are told apart by their
    squared norms (continuous draws, distinct)."""
    model, population, competition, y, p = _started_competition(16, 602, 0.5, vectors=False)
    pool = competition.pool
    assert pool.collect()[0].size == 0  # the first filling loses nothing
    pool.q = np.where(pool.alive, np.random.default_rng(0).random(pool.q.shape) + 0.1, 0.0)
    before = {(i, n): q for i, n, q in zip(*np.nonzero(pool.alive)[:1], pool.norm2[pool.alive], pool.q[pool.alive])}
    beta, c, threshold, _, _, sampler = environment(population, 0.45, np.sqrt(y * y + p))
    pool.renew(beta, c, y, p, threshold + 1.0, sampler, np.full(y.size, 0.99))  # a raised threshold: many leave
    particle, C, norm2, q, _ = pool.collect()
    assert particle.size > 0 and pool.collect()[0].size == 0  # handed over once
    after = {(i, n): q for i, n, q in zip(*np.nonzero(pool.alive)[:1], pool.norm2[pool.alive], pool.q[pool.alive])}
    for key, value in after.items():
        assert value == before.get(key, 0.0)  # stayed with its class, or an entrant with q = 0
    left = {(i, n): value for i, n, value in zip(particle, norm2, q)}
    assert set(left) | {key for key in after if key in before} == set(before)  # nothing lost, nothing twice
    assert all(left[key] == before[key] for key in left)


def test_the_probe_gives_each_explicit_class_its_own_sign_of_the_field_and_keeps_it_with_the_class():
    """Eq. (111) bookkeeping: with a probe every explicit class carries a sign s = +-1 drawn at entry, its energy is
    the natural one plus beta s times the field, the sign stays with its class through the renewal's reordering
    (classes told apart by their squared norms) and a class that leaves is handed over with it."""
    model, population, competition, y, p = _started_competition(16, 602, 0.5, vectors=False)
    rng = np.random.default_rng(3)
    probed = Competition(model, population, rng, field=lambda t: 0.7, probe=np.random.default_rng(5))
    probed.start(y, p, 0.5)
    pool = probed.pool
    assert set(np.unique(pool.sign[pool.alive])) == {-1.0, 1.0} and np.all(pool.sign[~pool.alive] == 0.0)
    beta, c, threshold, _, _, sampler = environment(population, 0.5, np.sqrt(y * y + p))
    shifted = pool.energies(beta, c, y, p)
    pool.shift = 0.0
    natural = pool.energies(beta, c, y, p)
    np.testing.assert_allclose(shifted[pool.alive] - natural[pool.alive], beta * 0.7 * pool.sign[pool.alive], rtol=1e-12)
    before = dict(zip(pool.norm2[pool.alive], pool.sign[pool.alive]))
    pool.shift = 0.7
    pool.renew(beta, c, y, p, threshold + 1.0, sampler, np.full(y.size, 0.99))  # a raised threshold: many leave
    _, _, norm2, _, sign = pool.collect()
    assert norm2.size > 0 and all(before[n] == s for n, s in zip(norm2, sign))
    for n, s in zip(pool.norm2[pool.alive], pool.sign[pool.alive]):
        assert s == before.get(n, s) and s in (-1.0, 1.0)


def test_a_zero_probe_field_changes_nothing():
    """Eq. (111): the probe draws its signs from its own generator, so with a zero field the population, its
    test classes and its shared mean are those of the run without a probe, bit for bit; the signed displacement
    is returned (and is finite)."""
    process = get_process("ou")
    grid = time_grid(process, 40, default_t_max(process, 20.0), 0.0, class_var=0.25)
    model = finite_d._Model(16, 25, 1.0, 1.0, 0.25, process, -0.5)
    plain = finite_d._population_run(model, "ode", grid, 400, np.random.default_rng(2), True, -1.0)
    probed = finite_d._population_run(model, "ode", grid, 400, np.random.default_rng(2), True, -1.0,
                                      field=lambda t: 0.0, probe=True)
    for key in ("mean_y", "mean_p", "var_y", "t_c", "shared_mean"):
        assert probed[key] == plain[key], key
    assert probed["signed"] is not None and np.all(np.isfinite(probed["signed"]))
    assert len(probed["test_classes"].fine_profile) > 0
