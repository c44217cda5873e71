"""The draw's shared mean (docs/theory.md eqs. 104-105): the test classes' step against the simulator's
steppers, and the prediction's limits and Monte-Carlo error. The comparison with simulated S is in the
slow acceptance test (tests/solvers/theory/test_meanfield.py)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from cfgphase.physics.processes import get_process
from cfgphase.solvers.sampling.sampler import Sampler
from cfgphase.solvers.sampling.steppers import exponential, heun
from cfgphase.solvers.theory import finite_d
from cfgphase.solvers.theory.finite_d import finite_d_prediction
from cfgphase.solvers.sampling.timegrid import default_t_max, time_grid
from cfgphase.solvers.theory import reduction
from cfgphase.solvers.theory import competitors, shared_mean  # the modules, so that pytest does not collect its TestClasses


def _one_other_class(omega, n=7, d=6, seed=3):
    """The target and one other class in d dimensions (sigma_mu^2 = 1.3, s^2 = 0.25, OU), n particles,
    and the test classes reduced to that one class with its overlap: (model, mu_c, mu_k, x, tests)."""
    rng = np.random.default_rng(seed)
    model = finite_d._Model(d, 2, 0.9, 1.3, 0.25, get_process("ou"), omega)
    mu_c = np.zeros(d)
    mu_c[0] = model.target
    mu_k = math.sqrt(model.mean_var) * rng.standard_normal(d)
    mu_k[0] = 0.8 * model.target  # near the target: it carries weight
    x = 0.5 * (mu_c + mu_k) + 0.1 * rng.standard_normal((n, d))  # between the two: both carry weight
    tests = shared_mean.TestClasses(model, n, rng)
    sigma = math.sqrt(model.mean_var)
    tests.C = np.array([mu_k[0] / sigma])
    tests.R = np.array([mu_k[1:] @ mu_k[1:] / model.mean_var])
    tests.W = np.ones(1)
    tests.q = np.zeros((n, 1))
    tests.o = (x[:, 1:] @ mu_k[1:])[:, None] / sigma
    return model, mu_c, mu_k, x, tests


def _guided(model, mu_c, mu_k, x, t):
    """The CFG estimate of the class mean with the two classes, directly in d dimensions (eq. 7)."""
    a, gamma, _ = model.at(t)
    means = np.stack([mu_c, mu_k])
    logits = -((x[:, None, :] - a * means[None]) ** 2).sum(axis=2) / (2 * gamma)
    post = np.exp(logits - logits.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    w = finite_d.weight_at(model.omega, t)
    return (1 + w) * mu_c - w * post @ means, post[:, 1]


def _reduced(x, mu_c):
    u = mu_c / np.linalg.norm(mu_c)
    y = x @ u
    return y, (x * x).sum(axis=1) - y * y


@pytest.mark.parametrize("omega", [-0.7, 2.0])
@pytest.mark.parametrize("t, t_next", [(0.5, 0.45), (0.03, 0.0)])
def test_heun_step_of_a_test_class_is_the_simulators_heun_step(omega, t, t_next):
    """Eq. (105), probability flow: with the target and the one class as the whole mixture (pi_c of the
    rest = 1, k = 0), a test class's overlap o and displacement q over a Heun step are those of the
    simulator's stepper on the d-dimensional x, to rounding, when its second stage is evaluated at the
    predictor (the population evaluates it at the step's end). Checks the log-weight against the target,
    its units (sigma_mu != 1) and the sign of the pull for both signs of omega; a step into zero noise
    (Euler) too."""
    model, mu_c, mu_k, x, tests = _one_other_class(omega)
    sigma, ones = math.sqrt(model.mean_var), np.ones(x.shape[0])
    m, weight = _guided(model, mu_c, mu_k, x, t)
    assert 0.05 < weight.mean() < 0.95  # the class competes with the target
    field = SimpleNamespace(process=model.process, reference_var=model.class_var, evaluate=lambda z, time: None)
    x_new, _ = heun(field, lambda z, time, ev, towards: _guided(model, mu_c, mu_k, z, time)[0], t, t_next, x, None, m)
    y, p = _reduced(x, mu_c)
    tests.step("ode", t, t_next, y, p, ones, 0.0 * ones)
    if tests.pending is not None:
        A, B = model.process.ode_coefficients(t, model.class_var)
        y_pred, p_pred = _reduced(x + (t_next - t) * (A * x + B * m), mu_c)
        tests.finish(y_pred, p_pred, t_next, ones, 0.0 * ones)
    np.testing.assert_allclose(tests.o[:, 0], x_new[:, 1:] @ mu_k[1:] / sigma, rtol=1e-12)
    # x_perp moves by its linear factor (Heun's composite of A_t) plus q along mu_k_perp
    h, (A1, _), (A2, _) = t_next - t, *(model.process.ode_coefficients(time, model.class_var) for time in (t, t_next))
    f = 1 + h * A1 if float(model.process.var(t_next)) == 0.0 else 1 + 0.5 * h * (A1 + A2 * (1 + h * A1))
    np.testing.assert_allclose(x_new[:, 1:], f * x[:, 1:] + tests.q * mu_k[1:], rtol=1e-10, atol=1e-12)
    assert np.all(np.sign(tests.q) == -np.sign(omega))  # pushed away (omega > 0) or pulled toward (omega < 0)


@pytest.mark.parametrize("omega", [-0.7, 2.0])
def test_sde_step_of_a_test_class_is_the_simulators_exponential_step(omega):
    """Eq. (105), SDE: the exact transition with the estimate frozen (eq. 12) moves o and q as the simulator's
    exponential stepper moves x, with the noise zero on both sides (the test classes' own noise along the
    class, sqrt(V R) eta, through their generator)."""
    model, mu_c, mu_k, x, tests = _one_other_class(omega)
    sigma, ones, t, t_next = math.sqrt(model.mean_var), np.ones(x.shape[0]), 0.4, 0.37
    m, _ = _guided(model, mu_c, mu_k, x, t)
    field = SimpleNamespace(process=model.process, reference_var=model.class_var)
    x_new, _ = exponential(field, None, t, t_next, x, None, m, np.zeros_like(x))
    y, p = _reduced(x, mu_c)
    tests.rng = SimpleNamespace(standard_normal=lambda shape: np.zeros(shape))
    tests.step("sde", t, t_next, y, p, ones, 0.0 * ones)
    np.testing.assert_allclose(tests.o[:, 0], x_new[:, 1:] @ mu_k[1:] / sigma, rtol=1e-12)
    r = model.process.reverse_transition(t, t_next, model.class_var)[0]
    np.testing.assert_allclose(x_new[:, 1:], r * x[:, 1:] + tests.q * mu_k[1:], rtol=1e-12, atol=1e-14)


def test_class_nodes_integrate_the_prior_of_one_class():
    """The quadrature of eq. (105) integrates polynomials of C ~ N(0, 1) and R ~ chi^2_{d-1} exactly: the
    moments E C^2 = 1, E C^4 = 3, E R = d - 1, Var R = 2(d - 1), E R^3, at d = 3, 16 and 1024 (where
    scipy's generalised Laguerre weights overflow)."""
    for d in (3, 16, 1024):
        C, R, W = shared_mean.class_nodes(d)
        k = d - 1
        assert W.sum() == pytest.approx(1.0, rel=1e-13)
        assert (W * C ** 2).sum() == pytest.approx(1.0, rel=1e-12)
        assert (W * C ** 4).sum() == pytest.approx(3.0, rel=1e-12)
        assert (W * R).sum() == pytest.approx(k, rel=1e-12)
        assert (W * (R - k) ** 2).sum() == pytest.approx(2 * k, rel=1e-9)
        assert (W * R ** 3).sum() == pytest.approx(k * (k + 2) * (k + 4), rel=1e-9)


def test_node_cells_partition_the_prior_around_their_nodes():
    """Eq. (107): the cells of the quadrature nodes hold their own nodes, and their prior masses are positive and
    sum to 1; a class is in the cell whose C and R intervals hold it (d = 16, the 16 x 4 nodes and the 64 x 4)."""
    for c_nodes in (16, shared_mean.POOL_C_NODES):
        C, R, W = shared_mean.class_nodes(16, c_nodes)
        cell, mass = shared_mean.node_cells(16, c_nodes)(C, R)
        np.testing.assert_array_equal(cell, np.arange(C.size))
        assert mass.sum() == pytest.approx(1.0, rel=1e-12) and np.all(mass > 0)
    far, _ = shared_mean.node_cells(16)(np.array([-50.0, 50.0]), np.array([0.0, 1e4]))
    np.testing.assert_array_equal(far, [0, 16 * 4 - 1])


def test_no_guidance_no_shared_mean():
    """Without guidance the particles of one draw sample the conditional law exactly and share no mean:
    S = 0 and var_perp is the population's E p/(d - 1) (eq. 104); S = 0 at every step, so 50 steps do."""
    pred = finite_d_prediction(16, 0.0, alpha=0.2, sampler=Sampler(kind="sde", steps=50), particles=400, seed=2)
    assert pred.shared_mean == 0.0 and pred.shared_mean_stderr == 0.0
    assert pred.summary()["shared_mean"] == 0.0


def test_shared_mean_is_resolved_and_reported_only_for_a_quenched_draw():
    """alpha = 0.2, omega = 3, ODE, d = 16, K = 25 (where the slow test measures S = 0.0067 +- 0.0007; 80
    steps here): S is resolved, more than 5 errors; neither the exact reduction (K <= d, which has it inside) nor
    annealed others (no draw) report one."""
    pred = finite_d_prediction(16, 3.0, alpha=0.2, sampler=Sampler(kind="ode", steps=80), particles=600, seed=0)
    assert pred.shared_mean > 5 * pred.shared_mean_stderr, (pred.shared_mean, pred.shared_mean_stderr)
    assert finite_d_prediction(16, 3.0, classes=12, sampler="ode", particles=200).shared_mean is None
    assert finite_d_prediction(16, 3.0, alpha=0.2, sampler="ode", particles=200, quenched=False).shared_mean is None


@pytest.mark.slow
def test_shared_mean_error_matches_the_scatter_over_population_seeds():
    """The jackknife error of S (eq. 105) against its scatter over 8 population seeds (alpha = 0.2,
    omega = 3, ODE, d = 16, K = 25, 600 particles; about a minute): sqrt(chi2_7 / 7) lies in [0.45, 1.5]
    with 95 % probability."""
    preds = [finite_d_prediction(16, 3.0, alpha=0.2, sampler="ode", particles=600, seed=s) for s in range(8)]
    values = np.array([p.shared_mean for p in preds])
    reported = np.sqrt(np.mean([p.shared_mean_stderr ** 2 for p in preds]))
    assert 0.45 < np.std(values, ddof=1) / reported < 1.5, (values, reported)


@pytest.mark.parametrize("kind", ["ode", "sde"])
def test_above_the_threshold_a_test_class_leaves_the_displacement_to_the_explicit_classes(kind):
    """Eq. (107): with the pool's threshold a test class adds to q only while its energy is below it (an
    infinite threshold is eq. 105; a threshold below every energy leaves q to its linear factor), its
    overlap o moves as in eq. 105 either way, and the displacements handed over by the pool decay with the
    particle's linear factor from the end of the step in which they left (after Heun's second stage)."""
    omega, t, t_mid, t_end = 2.0, 0.5, 0.45, 0.4
    runs = {}
    for name, level in (("none", None), ("high", np.inf), ("low", -np.inf)):
        model, mu_c, mu_k, x, tests = _one_other_class(omega)
        tests.rng = SimpleNamespace(standard_normal=lambda shape: np.zeros(shape), chisquare=None)
        n, ones = x.shape[0], np.ones(x.shape[0])
        y, p = _reduced(x, mu_c)
        tests.q[:] = 0.3
        threshold = None if level is None else np.full(n, level)
        tests.step(kind, t, t_mid, y, p, ones, 0.0 * ones, threshold)
        tests.absorb(np.array([0, 0, 2]), np.zeros(3), np.full(3, 15.0), np.array([1.0, 2.0, 5.0]))
        if kind == "ode":
            np.testing.assert_array_equal(tests.departed_sums(), 0.0)  # held until the pending step is complete
        tests.step(kind, t_mid, t_end, y, p, ones, 0.0 * ones, threshold)
        tests.finish(y, p, t_end, ones, 0.0 * ones, threshold)
        runs[name] = tests
    np.testing.assert_array_equal(runs["high"].q, runs["none"].q)
    np.testing.assert_array_equal(runs["low"].o, runs["none"].o)
    A = [model.process.ode_coefficients(s, model.class_var)[0] for s in (t_mid, t_end)]
    h = t_end - t_mid
    f = (1 + 0.5 * h * (A[0] + A[1] * (1 + h * A[0]))) if kind == "ode" else \
        model.process.reverse_transition(t_mid, t_end, model.class_var)[0]
    r = 1.0
    for a, b in ((t, t_mid), (t_mid, t_end)):
        if kind == "ode":
            A1, A2 = (model.process.ode_coefficients(s, model.class_var)[0] for s in (a, b))
            r *= 1 + 0.5 * (b - a) * (A1 + A2 * (1 + (b - a) * A1))
        else:
            r *= model.process.reverse_transition(a, b, model.class_var)[0]
    np.testing.assert_allclose(runs["low"].q[:, 0], 0.3 * r, rtol=1e-12)  # no source: the linear factor alone
    assert np.all(np.abs(runs["none"].q[:, 0] - 0.3 * r) > 1e-4)  # with the source, q moves
    departed = runs["none"].departed_sums()
    cell = runs["none"].cells(np.zeros(1), np.full(1, 15.0))[0][0]
    np.testing.assert_allclose(departed[0, cell], 3.0 * f, rtol=1e-12)
    np.testing.assert_allclose(departed[2, cell], 5.0 * f, rtol=1e-12)
    assert np.count_nonzero(departed) == 2


def _tracked_run(kind, omega, K, d, seed=4, draws=3, size=40):
    process = get_process("ou")
    grid = time_grid(process, 30, default_t_max(process, 1.25 * d), 0.0, class_var=0.25)
    model = finite_d._Model(d, K, 1.0, 1.3, 0.25, process, omega)
    rng = np.random.default_rng(seed)
    L = reduction.draw_coordinates(d, K, model.target, model.mean_var, draws, rng)
    return L, reduction.span_run(model, kind, grid, L, [0], size, rng, track=True)


@pytest.mark.parametrize("kind", ["ode", "sde"])
@pytest.mark.parametrize("K, d", [(5, 9), (12, 6)])
def test_the_tracked_displacement_is_all_that_the_guidance_moves(kind, K, d):
    """x = sum_k q_k mu_k + the propagated noise (eq. 105's q, exact in the reduction): with the same random
    numbers the remainder x - q L is the same at omega = -0.5 and 3, to rounding, while x moves by O(1). In
    the span of the means (K < d) and in the whole space (K > d)."""
    L, weak = _tracked_run(kind, -0.5, K, d)
    _, strong = _tracked_run(kind, 3.0, K, d)
    remainders = [run["positions"] - run["coefficients"] @ L for run in (weak, strong)]
    np.testing.assert_allclose(remainders[0], remainders[1], rtol=0, atol=1e-10)
    assert np.abs(weak["positions"] - strong["positions"]).max() > 0.5


def test_shared_mean_terms_add_up_to_the_measured_shared_mean():
    """Eq. 108 splits the draw's mean orthogonal to mu_c into the classes' terms: with q tracked it is the S
    measured from the positions less the propagated noise's contribution, which has mean zero. Over 960 draws
    (K = d = 16, the test bed of docs/theory.md 12.7, SDE, omega = -0.5; 100 particles, 30 steps) the two
    estimates agree within 3 standard errors of their per-draw difference, and the cross terms are resolved,
    more than 3 errors below zero (the classes compete for the particles; eq. 105 takes them as zero)."""
    L, run = _tracked_run("sde", -0.5, 16, 16, draws=960, size=100)
    total, _, cross = reduction.shared_mean_terms(L, run["coefficients"], 16)
    difference = run["shared_mean"] - total
    assert abs(difference.mean()) < 3 * difference.std(ddof=1) / math.sqrt(difference.size)
    assert cross.mean() < -3 * cross.std(ddof=1) / math.sqrt(cross.size), (cross.mean(), cross.std(ddof=1))


def test_the_cross_terms_split_around_a_reference_b():
    """Eq. (109): cross = A + 2B + C to rounding for any reference b, here on a tracked run (K > d and K < d); and a
    planted linear response, every particle's q of class k equal to r_k + chi h_k (h_k = sum_l r_l G_kl), gives
    B = chi |h|^2 and C = chi^2 h.G.h, the forms computed directly from G."""
    for K, d in ((12, 6), (5, 9)):
        L, run = _tracked_run("sde", -0.5, K, d, draws=5)
        _, _, cross = reduction.shared_mean_terms(L, run["coefficients"], d)
        reference = np.random.default_rng(2).normal(size=(5, K)) * 0.1
        A, B, C = reduction.cross_term_split(L, run["coefficients"], d, reference)
        np.testing.assert_allclose(A + 2 * B + C, cross, rtol=1e-10, atol=1e-14)
    rng, K, d, chi = np.random.default_rng(5), 7, 11, -0.3
    L = reduction.draw_coordinates(d, K, 2.0, 1.0, 3, rng)
    perp = L.copy()
    perp[:, :, 0] = 0.0
    G = perp @ perp.transpose(0, 2, 1) / (d - 1)
    G[:, np.arange(K), np.arange(K)] = 0.0
    reference = rng.normal(size=(3, K))
    h = np.einsum("gkl,gl->gk", G, reference)
    coefficients = np.repeat((reference + chi * h)[:, None, :], 4, axis=1)
    A, B, C = reduction.cross_term_split(L, coefficients, d, reference)
    np.testing.assert_allclose(A, np.einsum("gk,gkl,gl->g", reference, G, reference), rtol=1e-12)
    np.testing.assert_allclose(B, chi * np.einsum("gk,gk->g", h, h), rtol=1e-12)
    np.testing.assert_allclose(C, chi ** 2 * np.einsum("gk,gkl,gl->g", h, G, h), rtol=1e-12)


def test_the_response_splits_along_each_particles_direction():
    """Eq. (111): the per-particle split of 2B adds up to cross_term_split's 2B to rounding (tracked runs, K > d and
    K < d), and is the direct double sum over each particle's pairs: particles placed with their part orthogonal to mu_c
    along one class's mean see that class's overlaps alone along their direction; with K < d, where x's part outside the
    span is not followed, it is refused, naming positions."""
    for K, d in ((12, 6), (9, 9)):
        L, run = _tracked_run("sde", -0.5, K, d, draws=5)
        reference = np.random.default_rng(2).normal(size=(5, K)) * 0.1
        _, B, _ = reduction.cross_term_split(L, run["coefficients"], d, reference)
        along, rest = reduction.response_along_particles(L, run["coefficients"], run["positions"], d, reference)
        np.testing.assert_allclose(along + rest, 2 * B, rtol=1e-10, atol=1e-14)
        assert np.abs(along).max() > 1e-6 and np.abs(rest).max() > 1e-6
    L, run = _tracked_run("sde", -0.5, 5, 9, draws=2)
    with pytest.raises(ValueError, match="positions"):
        reduction.response_along_particles(L, run["coefficients"], run["positions"], 9, np.zeros((2, 5)))
    rng, K, d = np.random.default_rng(4), 12, 9
    L = reduction.draw_coordinates(d, K, 2.0, 1.0, 2, rng)
    coefficients = rng.normal(size=(2, 3, K))
    reference = rng.normal(size=(2, K))
    positions = np.zeros((2, 3, L.shape[2]))
    positions[:, :, 0] = 1.7  # along mu_c: dropped
    positions[:, :, 1:] = L[:, 2:3, 1:] * np.array([1.0, 2.0, -0.5])[None, :, None]  # along mu_2's perp, either sign
    along, _ = reduction.response_along_particles(L, coefficients, positions, d, reference)
    perp = L[:, :, 1:]
    unit = perp[:, 2] / np.linalg.norm(perp[:, 2], axis=1)[:, None]
    w = np.einsum("gkj,gj->gk", perp, unit)
    delta = coefficients - reference[:, None, :]
    direct = np.zeros(2)
    for g in range(2):
        for i in range(3):
            direct[g] += sum(reference[g, l] * w[g, k] * w[g, l] * delta[g, i, k]
                             for k in range(K) for l in range(K) if k != l)
    np.testing.assert_allclose(along, 2 * direct / 3 / (d - 1), rtol=1e-12)


@pytest.mark.parametrize("omega", [-0.7, 2.0])
def test_the_field_of_eq_110_is_a_shared_displacement_along_the_class(omega):
    """Eq. (110): a field Delta added to a test class's overlap is the class's posterior of particles displaced by a
    vector v orthogonal to mu_c with v . mu_k_perp / sigma_mu = Delta (here v along mu_k_perp), computed directly in
    d dimensions; and a run with a field records the mean q of every completed step (Heun's at the step's end)."""
    model, mu_c, mu_k, x, tests = _one_other_class(omega)
    sigma, ones, t, delta = math.sqrt(model.mean_var), np.ones(x.shape[0]), 0.5, 0.7
    perp = mu_k.copy()
    perp[0] = 0.0
    shifted = x + delta * sigma * perp / (perp @ perp)
    _, direct = _guided(model, mu_c, mu_k, shifted, t)
    tests.field = lambda time: delta
    y, p = _reduced(x, mu_c)
    np.testing.assert_allclose(tests._posterior(y, p, t, ones, tests.o)[0][:, 0], direct, rtol=1e-12)
    tests.step("ode", t, 0.45, y, p, ones, 0.0 * ones)
    assert tests.profile == []
    tests.finish(y, p, 0.45, ones, 0.0 * ones)
    assert len(tests.profile) == 1 and tests.profile[0][0] == 0.45
    np.testing.assert_array_equal(tests.profile[0][1], tests.q.mean(axis=0))


def test_the_own_pull_leaves_out_the_linear_factor_on_q_only():
    """Eq. (110): with ``own_pull`` a test class's q advances with the process's linear part and its own pull, as
    the exact split's diagonal counts it, without the particle's linear factor k (its other classes' reaction),
    while o keeps k: over an SDE step q is the q of k = 0 and o the o of the given k, to rounding."""
    runs = {}
    for own_pull, k in ((False, 0.0), (False, 0.4), (True, 0.4)):
        model, mu_c, mu_k, x, tests = _one_other_class(-0.7)
        tests.own_pull, tests.q = own_pull, np.full_like(tests.q, 0.2)  # a displacement for k to act on
        tests.rng = SimpleNamespace(standard_normal=lambda shape: np.zeros(shape))
        y, p = _reduced(x, mu_c)
        ones = np.ones(x.shape[0])
        tests.step("sde", 0.4, 0.37, y, p, ones, k * ones)
        runs[own_pull, k] = tests.q.copy(), tests.o.copy()
    np.testing.assert_allclose(runs[True, 0.4][0], runs[False, 0.0][0], rtol=1e-14)
    np.testing.assert_allclose(runs[True, 0.4][1], runs[False, 0.4][1], rtol=1e-14)
    assert np.abs(runs[False, 0.4][0] - runs[False, 0.0][0]).max() > 1e-6


def test_the_own_pull_under_explicit_classes_drops_the_rests_tilt_from_their_q():
    """Eq. (110) under the explicit classes of eq. (107): with ``own_pull`` an explicit class's q advances over an SDE
    step with the process's factor and its own pull only, and the departed sums decay with the process's factor,
    while the particle (y, p) moves as without it, bit for bit; without it q carries the rest's tilt."""
    from cfgphase.solvers.theory.competitors import Competition
    process = get_process("ou")
    model = finite_d._Model(16, 602, 1.0, 1.0, 0.25, process, -0.5)
    out = {}
    for own_pull in (False, True):
        rng = np.random.default_rng(3)
        population = finite_d._Population(model, 6, rng, True, False)
        a, gamma, _ = model.at(0.5)
        y, p = a * model.target * rng.uniform(0.3, 0.9, 6), gamma * rng.chisquare(15, 6)
        competition = Competition(model, population, rng, own_pull=own_pull)
        competition.start(y, p, 0.5)
        pool = competition.pool
        pool.q = np.where(pool.alive, 0.3, 0.0)
        _, g, weights, _, _, tilt = competition.state(y, p, 0.5)
        r, coef, _ = process.reverse_transition(0.5, 0.45, model.class_var)
        tilted = competitors._pulled(pool.q, r, coef, g, 1.0, tilt, weights)
        own = competitors._pulled(pool.q, r, coef, g, 1.0, 0.0 * tilt, weights)
        noise = (rng.standard_normal(6), rng.standard_normal(6), rng.chisquare(14, 6))
        alive = pool.alive.copy()
        y_new, p_new, _ = competition.step(0.5, 0.45, y, p, noise)
        out[own_pull] = (y_new, p_new)
        assert np.abs(tilted - own)[alive].max() > 1e-6  # the tilt acts: the check can fail
        # the renewal reorders the slots and adds entrants at q = 0: every class that stayed has its variant's q
        stayed = pool.q[pool.alive & (pool.q != 0.0)]
        assert stayed.size > 0
        for mine, other in (((own, tilted) if own_pull else (tilted, own)),):
            gap = np.abs(stayed[:, None] - mine[alive][None, :]).min(axis=1)
            assert gap.max() < 1e-12 * np.abs(stayed).max()
            assert np.abs(stayed[:, None] - other[alive][None, :]).min(axis=1).max() > 1e-8
    np.testing.assert_array_equal(out[True][0], out[False][0])
    np.testing.assert_array_equal(out[True][1], out[False][1])
    for own_pull, k in ((False, 0.4), (True, 0.4)):
        model1, mu_c, mu_k, x, tests = _one_other_class(-0.7)
        tests.own_pull = own_pull
        yy, pp = _reduced(x, mu_c)
        ones = np.ones(x.shape[0])
        tests.step("sde", 0.4, 0.37, yy, pp, ones, k * ones)
        r1 = model1.process.reverse_transition(0.4, 0.37, model1.class_var)[0]
        c1 = model1.process.reverse_transition(0.4, 0.37, model1.class_var)[1]
        np.testing.assert_allclose(tests.growth, r1 if own_pull else r1 + c1 * k, rtol=1e-14)

def test_the_overlap_below_a_threshold_is_that_of_a_uniform_direction():
    """Eq. (111): E[w 1{w < level}] and P(w < level) for w = sqrt(R) cos(theta), theta uniform on the sphere of d - 1
    dimensions, against 400000 uniform directions, within 4 standard errors (levels inside and outside +-sqrt(R))."""
    rng, d, R = np.random.default_rng(8), 9, 6.5
    v = rng.standard_normal((400000, d - 1))
    w = math.sqrt(R) * v[:, 0] / np.linalg.norm(v, axis=1)
    for level in (-3.0, -0.7, 0.0, 0.4, 1.9, 3.0):
        first, below = shared_mean.below_threshold_overlap(d, np.array([R]), np.array([level]))
        inside = w < level
        assert abs(first[0] - np.mean(w * inside)) < 4 * np.std(w * inside) / math.sqrt(w.size) + 1e-15, level
        assert abs(below[0] - inside.mean()) < 4 * math.sqrt(max(below[0] * (1 - below[0]), 1e-12) / w.size) + 1e-15


def test_the_response_along_the_particles_counts_every_pair_of_classes():
    """Eq. (111): the population's 2B along each particle's direction equals the direct sum over the ordered pairs of
    a particle's classes, sum_{k != l} w_k (q_k - r_k) r_l w_l, times 2 sigma_mu^2/(d - 1), with its explicit classes
    as given and the other K - 1 classes drawn at the quadrature's nodes with uniform directions, those above the
    threshold left out (they are the explicit ones) and q = 0 below it: the mean over 20000 draws of the rest agrees
    within 4 standard errors."""
    rng = np.random.default_rng(11)
    d, K, n, mean_var = 8, 30, 3, 1.3
    model = SimpleNamespace(d=d, K=K, mean_var=mean_var)
    tests = shared_mean.TestClasses.__new__(shared_mean.TestClasses)
    C, R, W = np.array([-0.8, 0.3, 1.1]), np.array([4.0, 7.5, 6.0]), np.array([0.3, 0.5, 0.2])
    b = np.array([0.02, -0.05, 0.08])
    tests.model, tests.fine, tests.fine_moments = model, (C, R, W), (W, R)
    tests.cells = lambda c, r: (np.argmin(np.abs(np.asarray(c)[..., None] - C), axis=-1), W)
    tests.displacement = lambda pool: (np.tile(b, (n, 1)), W, R)
    beta, c = 1.4, 0.9
    y, p = np.array([0.5, 1.2, -0.3]), np.array([5.0, 6.5, 4.0])
    threshold = np.array([1.5, 2.0, 0.8])
    slots = np.array([[0, 2, 1], [1, 1, 0], [2, 0, 2]])  # each particle's explicit classes' nodes
    alive = np.array([[True, True, False], [True, True, True], [True, False, True]])
    pool = SimpleNamespace(previous=(beta, c, y, p, threshold), alive=alive, C=C[slots], norm2=C[slots] ** 2 + R[slots],
                           q=rng.normal(0.1, 0.2, slots.shape), w=rng.normal(1.5, 0.5, slots.shape))
    labels = np.arange(n) % 3
    value, _ = tests.response_along(pool, labels, 3)
    draws, totals = 20000, []
    for _ in range(draws):
        node = rng.choice(3, size=(n, K - 1), p=W)
        v = rng.standard_normal((n, K - 1, d - 1))
        w = np.sqrt(R[node]) * v[:, :, 0] / np.linalg.norm(v, axis=2)
        energy = beta * (y[:, None] * C[node] + np.sqrt(p)[:, None] * w) - 0.5 * c * (C[node] ** 2 + R[node])
        rest = energy < threshold[:, None]
        total = 0.0
        for i in range(n):
            a = np.concatenate([(pool.w[i] * (pool.q[i] - b[slots[i]]))[alive[i]], -b[node[i]][rest[i]] * w[i][rest[i]]])
            cc = np.concatenate([(b[slots[i]] * pool.w[i])[alive[i]], b[node[i]][rest[i]] * w[i][rest[i]]])
            total += a.sum() * cc.sum() - a @ cc
        totals.append(2 * mean_var / (d - 1) * total / n)
    totals = np.array(totals)
    assert abs(value - totals.mean()) < 4 * totals.std(ddof=1) / math.sqrt(draws), (value, totals.mean())
    assert abs(value) > 10 * totals.std(ddof=1) / math.sqrt(draws)  # resolved: the check can fail


def test_the_explicit_classes_shared_mean_weighs_each_cell_by_its_classes():
    """Eq. (107): with explicit classes b is an average over the classes of a cell, so S sums the cells with their prior
    masses and mean R, not with the quadrature's weights and nodes. 2000 particles each hold K - 1 = 40 classes drawn
    from the prior as explicit classes, with displacement g of their R cell (the test classes' q zero); S must be
    (K - 1) E[g^2 R]/(d - 1), from 10^6 independent draws of (C, R), within 4 combined standard errors. The
    Gauss-Laguerre weights and nodes (the first R cell: 0.219 at R = 7.68 against a mass of 0.259 with mean R 8.80)
    would give 17 % less, many errors away."""
    rng = np.random.default_rng(5)
    d, K, n = 16, 41, 2000
    model = finite_d._Model(d, K, 1.0, 1.0, 0.25, get_process("ou"), -0.5)
    tests = shared_mean.TestClasses(model, n, rng)
    G = np.array([0.03, 0.01, 0.0, 0.02])  # the displacement of a class of each R cell

    def displacement(C, R):
        return G[tests.cells(C, R)[0] % shared_mean.R_NODES]

    pool = competitors.CompetitorPool(n, d, K - 1, rng)
    C, R = rng.standard_normal((n, K - 1)), rng.chisquare(d - 1, (n, K - 1))
    pool.C[:, :K - 1], pool.norm2[:, :K - 1], pool.q[:, :K - 1] = C, C * C + R, displacement(C, R)
    pool.alive[:, :K - 1] = True
    value, error = tests.shared_mean(np.arange(n) % 20, 20, pool)
    C, R = rng.standard_normal(10 ** 6), rng.chisquare(d - 1, 10 ** 6)
    terms = (K - 1) * displacement(C, R) ** 2 * R / (d - 1)
    truth, truth_error = terms.mean(), terms.std(ddof=1) / 1e3
    assert abs(value - truth) < 4 * math.hypot(error, truth_error), (value, truth)
    b = tests.displacement(pool)[0].mean(axis=0)
    _, R_node, W = tests.fine
    quadrature = (K - 1) * np.sum(W * R_node * b * b) / (d - 1)
    assert truth - quadrature > 10 * math.hypot(error, truth_error), (quadrature, truth)  # the check can fail


def test_the_shared_mean_with_the_part_along_adds_it_to_the_diagonal():
    """Eq. (112): under the explicit classes S is the diagonal of eq. (107) plus eq. (111)'s cross terms along the
    particles' directions, both from the same particles (to rounding); without a pool the option changes nothing."""
    rng = np.random.default_rng(9)
    d, K, n = 12, 30, 400
    model = finite_d._Model(d, K, 1.0, 1.0, 0.25, get_process("ou"), -0.5)
    tests = shared_mean.TestClasses(model, n, rng)
    tests.q = rng.normal(0.0, 0.01, tests.q.shape)
    pool = competitors.CompetitorPool(n, d, K - 1, rng)
    C, R = rng.standard_normal((n, 8)), rng.chisquare(d - 1, (n, 8))
    pool.C[:, :8], pool.norm2[:, :8], pool.q[:, :8] = C, C * C + R, rng.normal(0.05, 0.03, (n, 8))
    pool.w[:, :8], pool.alive[:, :8] = rng.normal(1.0, 0.5, (n, 8)), True
    pool.previous = (1.2, 0.8, rng.normal(1.0, 0.3, n), rng.chisquare(d - 1, n), np.full(n, 1.5))
    labels = np.arange(n) % 20
    diagonal, along = tests.shared_mean(labels, 20, pool)[0], tests.response_along(pool, labels, 20)[0]
    assert abs(along) > 1e-4 * abs(diagonal)  # the check can fail
    assert tests.shared_mean(labels, 20, pool, along=True)[0] == pytest.approx(diagonal + along, rel=1e-12, abs=1e-15)
    assert tests.shared_mean(labels, 20, None, along=True) == tests.shared_mean(labels, 20, None)
