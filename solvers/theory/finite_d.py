r"""Guided sampling at finite dimension d: the leading finite-size corrections to the mean-field
theory (docs/theory.md section 12, eqs. 50-63 and 95-102).

The d -> infinity theory (cfgphase.solvers.theory.meanfield, eqs. 23-27) switches guidance off for
every particle at one time t* and replaces the K - 1 other classes by their annealed average. At
finite d :func:`finite_d_prediction` keeps, with nothing fitted:

1. *each particle's own condensation* (eqs. 50-55): its log-odds between the target and the
   others is an exact function of its coordinate y along :math:`\mu_c`, of :math:`p = |x_\perp|^2`
   and of t, and given the others' partition function the guided dynamics closes on (y, p). The
   d-dimensional problem is a two-variable process per particle, integrated as a population on
   the sampler's own grid with the sampler's own stepper;
2. *the finitely many other classes* (eqs. 56-61): each particle carries a quenched environment,
   the top of its K - 1 other classes as exact order statistics (cfgphase.solvers.theory.environment),
   frozen along its path; for the probability flow the guidance pushes the particle away from
   its own dominant classes (self-avoidance, eq. 60); for the SDE the noise renews them (eq. 61), so
   there they are explicit and dynamic (item 4) whatever the sign of the weight (eq. 106);
3. *few classes* (eq. 63): for K <= d the posterior depends on x only through its K overlaps and the
   dynamics reduces exactly to K + 1 variables per particle, with the means drawn per particle;
4. *dynamic other classes* (eqs. 95-102, 106): the noise (SDE) renews the classes that dominate a
   particle, and negative guidance pulls it toward them while the rotation of the particle by those
   pulls (ODE, Heun's two stages) renews them; so for the SDE, and for the ODE under negative
   guidance, the classes near the top are explicit and dynamic (cfgphase.solvers.theory.competitors)
   instead of frozen at their ranks; their pull replaces the ODE's self-avoidance;
5. *the draw's shared mean* (eqs. 104-105, 107): the particles of one simulation share their other classes,
   so the guidance moves them together and the simulator's var_perp, about the draw's own mean, is lower
   than the population's :math:`E p/(d-1)` by S, predicted by passive test classes below the explicit
   classes' threshold and by the explicit classes above it (cfgphase.solvers.theory.shared_mean) and
   subtracted.

The result is a Monte-Carlo estimate: it carries its standard errors (``*_stderr``).
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.special import ndtr, ndtri

from cfgphase.physics.processes import get_process
from cfgphase.physics.schedules import bind_schedule
from cfgphase.physics.weights import excess_weight, weight_at
from cfgphase.solvers.sampling.brownian import check_seed
from cfgphase.solvers.sampling.observables import condensation_time, pooled
from cfgphase.solvers.sampling.sampler import as_sampler
from cfgphase.solvers.sampling.timegrid import check_grid, default_t_max, time_grid, with_breakpoints
from cfgphase.solvers.theory.competitors import Competition
from cfgphase.solvers.theory.environment import EnergyLaw, draw_environments, quenched_statistics
from cfgphase.solvers.theory.meanfield import MeanFieldPrediction, guided_prediction
from cfgphase.solvers.theory.reduction import draw_coordinates, over_draws, span_run
from cfgphase.solvers.theory.shared_mean import TestClasses
from cfgphase.solvers.theory.steps import step

#: Default population size: one prediction in about 5 s on one core (benchmarks/finite_size.py).
PARTICLES = 6000
#: Explicit other classes per particle (eq. 57); all of them when K - 1 <= ALL_EXPLICIT.
TOP_CLASSES, ALL_EXPLICIT = 12, 64
#: |x| nodes per time at which the energy law is tabulated (eq. 59).
NORM_NODES = 7
#: Groups of particles for the jackknife error of t_condensation (as the simulator's).
GROUPS = 20
#: Particles sharing one draw of the means in the K-dimensional reduction (eq. 63).
DRAW_SIZE = 100
#: The quenched corrections start once |E X| or sd X exceed these (eq. 59) and stop once every
#: particle has condensed, mean(1 - pi_c) < DONE.
SWITCH_MEAN, SWITCH_SD, DONE = 2e-4, 0.02, 1e-5
#: The explicit, dynamic other classes (eqs. 95-102, 106) take over from the frozen environment once the
#: dominant one carries this posterior weight among the others on average; before, its pull and its
#: renewal are negligible (docs/theory.md eq. 99).
PULL_START = 0.01


def check_dimension(d):
    """d as an int >= 2, or ValueError naming ``d``."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 2:
        raise ValueError(f"d must be an integer >= 2, got {d!r}")
    return int(d)


def finite_d_prediction(d, omega=None, *, alpha=None, classes=None, guidance_scale=None, sampler="ode",
                        process="ou", mean_var=1.0, class_var=0.25, target_norm=None, particles=PARTICLES,
                        quenched=True, exact_pulls=False, seed=0):
    r"""Prediction of guided sampling at dimension ``d`` (docs/theory.md eqs. 50-63, 95-102).

    Parameters
    ----------
    d : int >= 2
    omega : float or schedule of forward time (excess convention); or ``guidance_scale`` = 1 + omega.
    alpha, classes : K = round(exp(alpha d)) classes, or K = ``classes`` (exactly one of them).
    sampler : 'ode', 'sde' or a Sampler
        Its grid (default 200 steps, log grid, eq. 15) and start ``t_max`` (default: data
        signal-to-noise 1e-4 with :math:`E|x_0|^2 = d(\sigma_\mu^2 + s^2)`) are those of the
        prediction; steppers: heun (ode), exponential (sde), as the simulator's defaults.
    process, mean_var, class_var : the model (:math:`\sigma_\mu^2`, :math:`s^2`).
    target_norm : float, optional
        :math:`\rho = |\mu_c|^2/d` of the target (default ``mean_var``), eq. 44.
    particles : int
        Population size (the Monte-Carlo error falls as its inverse square root).
    quenched : bool
        False keeps the annealed partition function of the others (eqs. 50-55 only): no draw of the
        means, so no shared mean either (``shared_mean`` None, eq. 105). For K <= d the exact reduction
        (eq. 63) is used, to which it does not apply. For the SDE, and for the ODE with a weight
        that is negative somewhere, the other classes near the top are explicit and dynamic
        (eqs. 95-99 and 106 for the SDE, 100-102 for the ODE).
    exact_pulls : bool
        With the explicit classes of eqs. 95-102, follow each as a vector in the complement of
        :math:`\mu_c` (eq. 103) instead of taking their pull directions orthogonal (A6): exact for any
        geometry, about 1.7 times the cost. At the two negative-guidance cells of docs/theory.md
        section 12.7 it moves the predictions by less than 0.001 (eq. 103); the default keeps A6.
    seed : int or numpy Generator
        The population's random numbers (environments, start, noise).

    Returns a :class:`~cfgphase.solvers.theory.meanfield.MeanFieldPrediction` with the finite-d
    statistics (``inputs['d']`` = d, ``inputs['K']`` = K), their standard errors ``*_stderr`` and no
    bulk trajectory; var_perp is the spread about the draw's own mean, as a simulation's (eq. 13): the
    population's :math:`E p/(d-1)` less the draw's shared mean ``shared_mean`` (eqs. 105, 107, 112; the reduction
    for K <= d has it inside); ``phase_at_condensation``, ``alpha_condensation`` and
    ``entropy_at_condensation`` are the leading order's at :math:`\alpha = \log K/d`.
    """
    start = time.perf_counter()
    d = check_dimension(d)
    if (alpha is None) == (classes is None):
        raise ValueError("alpha, classes: give exactly one of them")
    if classes is None and not (isinstance(alpha, (int, float, np.number)) and 0 <= alpha * d < 700):
        raise ValueError(f"alpha must be a number >= 0 with exp(alpha d) finite, got alpha={alpha!r}, d={d}")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, (int, np.integer))):
        raise ValueError(f"classes must be an integer, got {classes!r}")
    if not isinstance(exact_pulls, (bool, np.bool_)):
        raise ValueError(f"exact_pulls must be True or False, got {exact_pulls!r}")
    exact_pulls = bool(exact_pulls)
    K = round(math.exp(alpha * d)) if classes is None else int(classes)
    if K < 2:
        raise ValueError(f"alpha, classes: the finite-d theory needs K >= 2 classes, got K = {K}")
    seed, process, sampler = check_inputs(particles, 2 * GROUPS, seed, process, sampler)
    rho = float(mean_var if target_norm is None else target_norm)
    grid, omega = sampler_grid(sampler, process, d * (mean_var + class_var), class_var,
                               excess_weight(omega, guidance_scale))
    leading = guided_prediction(math.log(K) / d, omega, process=process, sampler=sampler.kind, mean_var=mean_var,
                                class_var=class_var, t_max=float(grid[0]), target_norm=rho)
    if not leading.success:
        raise ValueError(f"the leading-order prediction failed: {leading.message}")
    model = _Model(d, K, rho, mean_var, class_var, process, omega)
    rng = np.random.default_rng(seed)
    if K <= d:
        run = _reduced_run(model, sampler.kind, grid, int(particles), rng)
    else:
        t_cv = -1.0 if leading.t_condensation is None else leading.t_condensation
        run = _population_run(model, sampler.kind, grid, int(particles), rng, quenched, t_cv, exact_pulls)
    return _prediction(model, sampler.kind, grid, run, leading, particles=int(particles), quenched=quenched,
                       exact_pulls=exact_pulls,
                       seed=seed if isinstance(seed, (int, np.integer)) else None,
                       method="reduction" if K <= d else "population", seconds=time.perf_counter() - start)


def check_inputs(particles, minimum, seed, process, sampler):
    """(seed, process, sampler) of a prediction, checked: ValueError naming ``particles`` unless it is an
    integer >= ``minimum``; the seed (an int, or a numpy Generator kept as it is), the process by name and
    the sampler by kind are normalised."""
    if isinstance(particles, bool) or not isinstance(particles, (int, np.integer)) or particles < minimum:
        raise ValueError(f"particles must be an integer >= {minimum}, got {particles!r}")
    if not isinstance(seed, np.random.Generator):
        seed = check_seed(seed)
    return seed, get_process(process), as_sampler(sampler)


def sampler_grid(sampler, process, signal, class_var, omega):
    """The sampler's grid and the weight bound to it, as the simulator builds them: ``sampler.grid``
    (default log grid, eq. 15) from ``sampler.t_max`` (default: signal-to-noise 1e-4 for
    :math:`E|x_0|^2` = ``signal``), nodes added at the schedule's breakpoints. Refuses other steppers
    than the defaults (heun, exponential) or another start than the unconditional law."""
    if sampler.method != {"ode": "heun", "sde": "exponential"}[sampler.kind] or sampler.init != "unconditional":
        raise ValueError("sampler: the finite-d theory follows the default steppers (heun, exponential) from the "
                         f"unconditional start, got {sampler.method!r}, {sampler.init!r}")
    if isinstance(sampler.grid, str):
        t_max = default_t_max(process, signal) if sampler.t_max is None else sampler.t_max
        grid = time_grid(process, sampler.steps, t_max, sampler.t_min, kind=sampler.grid, class_var=class_var)
    else:
        grid = check_grid(sampler.grid, process)
    omega = bind_schedule(omega, process=process)
    grid = with_breakpoints(grid, getattr(omega, "breakpoints", ()))
    return grid, bind_schedule(omega, grid=grid)


class _Model:
    """The inputs every stage needs: dimension, classes, target norm, variances, process, weight."""

    def __init__(self, d, K, rho, mean_var, class_var, process, omega):
        self.d, self.K, self.rho, self.mean_var, self.class_var = d, K, rho, mean_var, class_var
        self.process, self.omega = process, omega
        self.target = math.sqrt(rho * d)  # |mu_c|

    def at(self, t):
        """(a_t, Gamma_t, Q_t = Gamma_t + a_t^2 sigma_mu^2) as floats."""
        a = float(self.process.a(t))
        gamma = float(self.process.class_var(t, self.class_var))
        return a, gamma, gamma + a * a * self.mean_var


class _Population:
    r"""Particles (y, p) and their environments: the guided class-mean estimate of each (eqs. 50-52, 58-60).

    ``active``: the quenched corrections are on; ``done``: every particle has condensed.
    ``pushed`` (n, M): the self-avoidance displacement of each top class's overlap (eq. 60), or None."""

    def __init__(self, model, n, rng, quenched, self_avoiding):
        self.model, self.n, self.quenched = model, n, quenched
        self.others = model.K - 1
        self.top = self.others if self.others <= ALL_EXPLICIT else min(TOP_CLASSES, self.others)
        self.log_levels, self.rest_scale = draw_environments(n, self.others, self.top, rng)
        self.pushed = np.zeros((n, self.top)) if quenched and self_avoiding else None
        self.active = self.done = False
        self._laws, self._nodes = {}, {}

    def _energy_law(self, t, x_norm):
        """The law of one other class's energy seen from a point of norm ``x_norm`` at time t (eq. 56)."""
        a, gamma, _ = self.model.at(t)
        b = a * x_norm * math.sqrt(self.model.mean_var) / gamma
        return EnergyLaw(b, a * a * self.model.mean_var / gamma, self.model.d, self.others, self.top)

    def _law(self, t, x_norm):
        """:meth:`_energy_law`, kept for both Heun stages and the next step."""
        key = (t, x_norm)
        if key not in self._laws:
            self._laws[key] = self._energy_law(t, x_norm)
        return self._laws[key]

    def forget_before(self, t):
        """Drop the tables of times later than t (sampling runs down in t)."""
        self._laws = {k: v for k, v in self._laws.items() if k[0] <= t}
        self._nodes = {k: v for k, v in self._nodes.items() if k <= t}

    def _norm_nodes(self, t, x_norm):
        """|x| nodes at time t, normal quantiles of the population's |x| from -3.3 to 3.3 sd; fixed
        once chosen, so both Heun stages and the next step share the tables."""
        if t not in self._nodes:
            nodes = np.quantile(x_norm, ndtr(np.linspace(-3.3, 3.3, NORM_NODES)))
            pad = 0.05 * (nodes[-1] - nodes[0]) + 1e-9
            nodes[0] -= pad
            nodes[-1] += pad
            self._nodes[t] = np.maximum.accumulate(nodes + 1e-12 * np.arange(nodes.size))
        return self._nodes[t]

    def _quenched(self, t, x_norm):
        """X, tilt, top weights and E[R] per particle, linear between the |x| nodes (eq. 59)."""
        a, gamma, _ = self.model.at(t)
        nodes = self._norm_nodes(t, x_norm)
        j = np.clip(np.searchsorted(nodes, x_norm) - 1, 0, nodes.size - 2)
        f = np.clip((x_norm - nodes[j]) / (nodes[j + 1] - nodes[j]), 0.0, 1.0)
        out = [np.empty(self.n), np.empty(self.n), np.empty((self.n, self.top)), np.empty((self.n, self.top))]
        for k in np.unique(j):
            idx = np.flatnonzero(j == k)
            pushed = None if self.pushed is None else self.pushed[idx]
            ends = [quenched_statistics(self._law(t, float(nodes[k + i])), self.log_levels[idx], self.rest_scale[idx],
                                        x_norm[idx], pushed, a / gamma, math.sqrt(self.model.mean_var)) for i in (0, 1)]
            w = f[idx]
            for o, lo, hi in zip(out, *ends):
                o[idx] = lo * (1 - w if lo.ndim == 1 else (1 - w)[:, None]) + hi * (w if hi.ndim == 1 else w[:, None])
        return out

    def evaluate(self, y, p, t):
        r"""(m_par, k_perp, pi_c, g, weights, chi2) at time t (eq. 52): the guided estimate's
        coordinate along :math:`\mu_c`, its perpendicular part :math:`k x_\perp`, the target posterior,
        :math:`g = \omega(1 - \pi_c)` and, when self-avoiding, the top classes' weights and E[R]."""
        m = self.model
        a, gamma, Q = m.at(t)
        q = y * y + p
        x_norm = np.sqrt(q)
        target = -(q - 2 * a * m.target * y + a * a * m.target ** 2) / (2 * gamma)  # eq. 50
        annealed = math.log(self.others) + 0.5 * m.d * math.log(gamma / Q) - q / (2 * Q)  # eq. 51
        tilt = a * m.mean_var * x_norm / Q  # annealed posterior mean of the others along x
        X, weights, chi2 = 0.0, None, None
        if self.active and not self.done:
            X, ratio, weights, chi2 = self._quenched(t, x_norm)
            tilt = tilt * ratio
        log_odds = target - annealed - X
        pi = 0.5 * (1.0 + np.tanh(0.5 * log_odds))  # logistic without overflow
        g = weight_at(m.omega, t) * (1.0 - pi)
        return m.target + g * (m.target - tilt * y / x_norm), -g * tilt / x_norm, pi, g, weights, chi2

    def corrections_matter(self, y, p, t):
        """Whether the quenched corrections exceed SWITCH_MEAN in mean or SWITCH_SD in spread at the
        population's rms |x| (earlier the annealed sums are exact to that accuracy)."""
        if self.model.at(t)[0] < 1e-3:
            return False
        x_norm = float(np.sqrt(np.mean(y * y + p)))
        law = self._energy_law(t, x_norm)
        m = min(self.n, 4000)
        X = quenched_statistics(law, self.log_levels[:m], self.rest_scale[:m], np.full(m, x_norm))[0]
        return abs(X.mean()) > SWITCH_MEAN or X.std() > SWITCH_SD

    def avoid(self, y, p, f, coef, g, weights, chi2):
        r"""Self-avoidance over one step (eq. 60): the guidance lowers :math:`x\cdot\mu_j` of each top
        class by coef g w_j sigma_mu^2 E[R_j]; the accumulated push is perpendicular to x, so |x| is kept
        and x turns away from :math:`\mu_c` (y shrinks, p grows). Returns the new (y, p)."""
        turn = coef * g * np.sum(weights * self.pushed, axis=1) / (y * y + p)
        y_new = y * (1.0 - turn)
        self.pushed = self.pushed * (f * (1.0 - turn))[:, None] + (coef * g)[:, None] * weights * chi2 * \
            self.model.mean_var
        return y_new, np.maximum(p + y * y - y_new * y_new, 0.0)


def _population_run(model, kind, grid, n, rng, quenched, t_cv, exact_pulls=False, field=None, own_pull=False,
                    probe=False):
    r"""Integrate the population on ``grid`` (eqs. 53-54). Control variate: the same particles and
    noise driven by the annealed linear dynamics with guidance on only before t_cv (the leading
    order's t*), whose exact moments follow from the same step applied to probe values. ``field`` and
    ``own_pull``: the test classes' field and own-pull displacement of eq. (110) (quenched only), the explicit
    classes' too (their field with a random sign per class, eq. 111, with ``probe``); the run's ``test_classes``
    are returned with a field, with the fine cells' mean displacement per step under the explicit classes in their
    ``fine_profile``, and the explicit classes' ``pool`` at the end; with ``probe`` the signed displacement of
    eq. 111 as ``signed``."""
    # the noise renews the dominant classes whatever the weight's sign (eq. 106); without noise only
    # negative guidance moves them (eqs. 100-102)
    dynamic = quenched and (kind == "sde" or _negative_somewhere(model.omega, grid))
    # with the explicit classes of eqs. 95-102 their pull replaces the self-avoidance of eq. 60 (eq. 102)
    pop = _Population(model, n, rng, quenched, self_avoiding=kind == "ode" and not dynamic)
    a0, gamma0, Q0 = model.at(grid[0])
    y = math.sqrt(Q0) * ndtri((rng.permutation(n) + rng.random(n)) / n)  # stratified N(0, Q)
    p = Q0 * rng.chisquare(model.d - 1, n)
    y_cv, p_cv = y.copy(), p.copy()
    moments = np.array([0.0, Q0, Q0 * (model.d - 1)])  # exact E y, E y^2, E p of the control variate
    labels = np.arange(n) % GROUPS
    posterior = []
    # the draw's shared mean (eqs. 105, 107), with its own random numbers: the population's are unchanged; annealed
    # others are no draw, so they share none
    tests = TestClasses(model, n, _spawn(rng), field=field, own_pull=own_pull, signed=probe) if quenched else None
    competition = Competition(model, pop, rng, vectors=exact_pulls, own_pull=own_pull, field=field if probe else None,
                              probe=_spawn(rng) if probe else None) if dynamic else None
    for t, t_next in zip(grid[:-1], grid[1:]):
        t, t_next = float(t), float(t_next)
        if quenched and not pop.active and len(posterior) % 2 == 0:
            pop.active = pop.corrections_matter(y, p, t)
        noise = None if kind == "ode" else (rng.standard_normal(n), rng.standard_normal(n),
                                           rng.chisquare(model.d - 2, n) if model.d > 2 else np.zeros(n))
        if competition is not None and competition.started:
            # eq. 107: above the pool's threshold the explicit classes carry the displacement, not the test classes
            tests.step(kind, t, t_next, y, p, *_linear_factor(competition, y, p, t), competition.threshold)
            y, p, pi = competition.heun_step(t, t_next, y, p) if kind == "ode" else \
                competition.step(t, t_next, y, p, noise)
            tests.absorb(*competition.pool.collect())
            if field is not None:
                tests.fine_profile.append((t_next, tests.displacement(competition.pool)[0].mean(axis=0)))
            posterior.append(np.bincount(labels, pi, minlength=GROUPS))
        else:
            m_par, k_perp, pi, g, weights, chi2 = pop.evaluate(y, p, t)
            if tests is not None:
                tests.step(kind, t, t_next, y, p, pi, k_perp)
            posterior.append(np.bincount(labels, pi, minlength=GROUPS))
            if pop.active and pop.pushed is None and np.mean(1.0 - pi) < DONE:
                pop.done = True
            y, p, f, coef = step(model, kind, t, t_next, y, p, (m_par, k_perp), lambda *s: pop.evaluate(*s)[:2],
                                 noise)
            if pop.pushed is not None and weights is not None:
                y, p = pop.avoid(y, p, f, coef, g, weights, chi2)
            if competition is not None and weights is not None and weights.max(axis=1).mean() > PULL_START:
                competition.start(y, p, t_next)
        linear = _linear_estimate(model, t > t_cv)
        y_cv, p_cv, _, _ = step(model, kind, t, t_next, y_cv, p_cv, linear(y_cv, p_cv, t), linear, noise)
        off, _, _, _ = step(model, kind, t, t_next, 0.0, 0.0, linear(0.0, 0.0, t), linear)
        lin, p_factor, _, _ = step(model, kind, t, t_next, 1.0, 1.0, linear(1.0, 1.0, t), linear)
        lin -= off
        V = 0.0 if kind == "ode" else float(model.process.reverse_transition(t, t_next, model.class_var)[2])
        Ey, Ey2, Ep = moments
        moments = np.array([lin * Ey + off, lin * lin * Ey2 + 2 * lin * off * Ey + off * off + V,
                            p_factor * Ep + V * (model.d - 1)])
        pop.forget_before(t_next)
    pool = competition.pool if competition is not None and competition.started else None
    if pool is not None:
        final, k_final = _linear_factor(competition, y, p, float(grid[-1]))
    else:
        _, k_final, final, _, _, _ = pop.evaluate(y, p, float(grid[-1]))
    shared = shared_se = None
    if tests is not None:
        tests.finish(y, p, float(grid[-1]), final, k_final, None if pool is None else competition.threshold)
        shared, shared_se = tests.shared_mean(labels, GROUPS, pool, along=True)
    posterior.append(np.bincount(labels, final, minlength=GROUPS))

    def controlled(values, control, exact):
        diff = values - control
        return float(diff.mean() + exact), float(diff.std(ddof=1) / math.sqrt(n))

    mean_y, mean_y_se = controlled(y, y_cv, moments[0])
    mean_y2, _ = controlled(y * y, y_cv * y_cv, moments[1])
    mean_p, mean_p_se = controlled(p, p_cv, moments[2])
    counts = np.bincount(labels, minlength=GROUPS)
    t_c, t_c_se = condensation_time(grid, np.array(posterior) / counts, counts)
    end, end_se = pooled(posterior[-1] / counts, counts)
    return dict(mean_y=mean_y, mean_y_se=mean_y_se, var_y=(mean_y2 - mean_y ** 2) * n / (n - 1), mean_p=mean_p,
                mean_p_se=mean_p_se, t_c=t_c, t_c_se=t_c_se, posterior=float(end), posterior_se=float(end_se),
                quenched_active=pop.active, shared_mean=shared, shared_mean_se=shared_se,
                test_classes=tests if field is not None else None, pool=pool if field is not None else None,
                signed=tests.signed_displacement(pool) if probe and pool is not None else None)


def _spawn(rng):
    """An independent generator from ``rng`` that leaves its stream as it is (numpy's spawn), or, for a
    generator without a seed sequence, one seeded from it."""
    try:
        return rng.spawn(1)[0]
    except (TypeError, ValueError):
        return np.random.default_rng(rng.integers(2 ** 63))


def _linear_factor(competition, y, p, t):
    r"""(pi_c, k) of the explicit classes' population at (y, p, t): the target posterior and the guided
    estimate's part orthogonal to :math:`\mu_c` per unit of :math:`x_\perp` from the classes below the
    threshold, :math:`k = -g\sigma_\mu\,\pi_{rest}\bar\zeta_{rest}/|x|` (eq. 98), for the test classes of eq. (105)."""
    pi, g, _, _, _, tilt = competition.state(y, p, t)
    return pi, -g * math.sqrt(competition.model.mean_var) * tilt


def _negative_somewhere(omega, grid):
    """Whether the weight is negative at some node of the grid (the ODE's pool of eqs. 100-102 is used then)."""
    return any(weight_at(omega, float(t)) < 0 for t in grid)


def _linear_estimate(model, guided):
    """The control variate's estimate (eq. 23 per particle): annealed tilt, guidance on or off."""
    def estimate(y, p, t):
        a, _, Q = model.at(t)
        g = weight_at(model.omega, t) if guided else 0.0
        k = -g * a * model.mean_var / Q
        return model.target * (1 + g) + k * y, k
    return estimate


def _reduced_run(model, kind, grid, n, rng):
    r"""K <= d classes: the exact K-dimensional reduction (eq. 63). The particles come in draws of
    DRAW_SIZE, each sharing one set of means through the Cholesky factor L of their Gram matrix
    (Bartlett: :math:`|\mu_c|^2 = \rho d` fixed, the others :math:`\sigma_\mu^2`-Wishart), integrated by
    cfgphase.solvers.theory.reduction. Statistics are those of the simulator for each draw (sample
    variances about the draw's own mean, eq. 13), averaged over draws: exact in expectation over draws
    of the means."""
    d, K = model.d, model.K
    L = draw_coordinates(d, K, model.target, model.mean_var, max(n // DRAW_SIZE, 2), rng)
    run = span_run(model, kind, grid, L, [0], DRAW_SIZE, rng)
    (my, my_se), (vy, vy_se), (vp, vp_se), (t_c, t_c_se) = (over_draws(run[key]) for key in (
        "mean_ratio", "var_par", "var_perp", "t_c"))
    end, end_se = over_draws(run["posterior"][-1])
    return dict(mean_y=my * model.target, mean_y_se=my_se * model.target, var_y=vy, var_y_se=vy_se,
                mean_p=vp * (d - 1), mean_p_se=vp_se * (d - 1), t_c=t_c, t_c_se=t_c_se, posterior=end,
                posterior_se=end_se, quenched_active=True)


def _prediction(model, kind, grid, run, leading, **record):
    """The MeanFieldPrediction of a finished run: final statistics at dimension d (eq. 54), the
    distortion of eq. (13) at dimension d without its finite-B terms, and their standard errors."""
    d, s2, n = model.d, model.class_var, record["particles"]
    ratio = run["mean_y"] / model.target
    # the population's E p/(d - 1) less the draw's shared mean S (eq. 104): the spread about the draw's
    # own mean, as the simulator's var_perp and the reduction's (eq. 63, where S is already inside)
    shared, shared_se = run.get("shared_mean"), run.get("shared_mean_se")
    var_par, var_perp = run["var_y"], run["mean_p"] / (d - 1) - (shared or 0.0)
    ratio_se, var_perp_se = run["mean_y_se"] / model.target, math.hypot(run["mean_p_se"] / (d - 1), shared_se or 0.0)
    var_par_se = run.get("var_y_se", var_par * math.sqrt(2.0 / (n - 1)))

    def excess(v):  # v/s^2 - 1 - log(v/s^2): one direction's KL, times 2
        return v / s2 - 1 - math.log(v / s2)

    distortion = 0.5 / d * ((d - 1) * excess(var_perp) + excess(var_par)) + model.rho * (ratio - 1) ** 2 / (2 * s2)
    distortion_se = math.hypot(0.5 * (d - 1) / d * (1 / s2 - 1 / var_perp) * var_perp_se,
                               model.rho * (ratio - 1) / s2 * ratio_se)
    t_c, t_c_se = run["t_c"], run["t_c_se"]
    inputs = dict(leading.inputs, d=d, K=model.K, alpha=math.log(model.K) / d, steps=grid.size - 1,
                  t_max=float(grid[0]), quenched_active=bool(run["quenched_active"]), **record)
    finite = bool(np.all(np.isfinite([ratio, var_par, var_perp, distortion])))
    message = f"finite-d {record['method']}" if finite else "degenerate population: a statistic is not finite"
    return MeanFieldPrediction(
        inputs, t_c, None, None, ratio, var_par, var_perp, distortion, None if t_c is None else 1.0,
        leading.phase_at_condensation, leading.nfev, finite, message, None, leading.alpha_condensation,
        leading.entropy_at_condensation, mean_ratio_stderr=ratio_se, var_par_stderr=var_par_se,
        var_perp_stderr=var_perp_se, distortion_stderr=distortion_se, t_condensation_stderr=t_c_se,
        target_posterior=run["posterior"], target_posterior_stderr=run["posterior_se"], shared_mean=shared,
        shared_mean_stderr=shared_se)
