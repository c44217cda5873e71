r"""Theory-optimal guidance schedules: least predicted distortion at a required separability.

The family is a smooth :math:`\omega(t)` through values at fixed noise levels
(cfgphase.physics.schedules.SplineSchedule, eq. 45). For a mixture with K = e^{alpha d} classes, the
objective is the mean-field distortion (cfgphase.solvers.theory.meanfield, eqs. 23-27) and the constraint a mean
ratio :math:`E[x\cdot\mu_c]/|\mu_c|^2` at least ``target`` (:func:`optimal_schedule`); for a jointly
Gaussian pair, the exact KL divergence to the conditional (eq. 18) under the same constraint
(:func:`optimal_gaussian_schedule`). Both are solved with
SLSQP (scipy) from the constant weight that meets the constraint, which the spline family
contains, so the optimum is never worse than constant guidance at the same separability
(docs/theory.md eq. 47). Baselines of other families are tuned to the same constraint by brentq on
their amplitude, so that every schedule is compared at equal separability.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq, minimize

from cfgphase.physics.processes import get_process
from cfgphase.physics.schedules import SplineSchedule, bind_schedule, make_schedule
from cfgphase.solvers.sampling.driver import integrate
from cfgphase.solvers.sampling.sampler import Sampler, SaveAt
from cfgphase.solvers.theory.gaussian import gaussian_moments
from cfgphase.solvers.theory.meanfield import guided_prediction


@dataclass
class OptimalSchedule:
    """The optimised schedule, its prediction, the baselines at the same separability, counters."""

    schedule: SplineSchedule
    prediction: object  #: MeanFieldPrediction of the optimum
    target: float
    baselines: dict = field(default_factory=dict)  #: name -> (schedule, prediction) at the same mean ratio
    inputs: dict = field(default_factory=dict)
    nfev: int = 0
    success: bool = True
    message: str = ""

    def table(self):
        """Rows (name, predicted distortion, mean ratio, var_perp, t*) with the optimum first."""
        rows = [("theory-optimal", self.prediction)] + [(n, p) for n, (_, p) in self.baselines.items()]
        return [(n, p.distortion, p.mean_ratio, p.var_perp, p.t_condensation) for n, p in rows]


def default_knots(process, count=6, low=0.05, high=20.0):
    """``count`` noise levels sigma_t/a_t, log-spaced from ``low`` to ``high``."""
    return np.geomspace(low, high, int(count))


def _bound(schedule, process):
    return bind_schedule(schedule, process=process)


def tune_amplitude(build, predict, target, bracket=(0.0, 20.0)):
    """The member of a one-parameter family ``build(A)`` whose predicted mean ratio is ``target``;
    ``predict(schedule)`` returns a prediction with ``mean_ratio`` and ``distortion``."""
    def residual(A):
        return predict(build(A)).mean_ratio - target

    low, high = bracket
    if np.sign(residual(low)) == np.sign(residual(high)):
        raise ValueError(f"target: no amplitude in [{low}, {high}] reaches mean ratio {target}")
    amplitude = brentq(residual, low, high, xtol=1e-8)
    schedule = build(amplitude)
    return schedule, predict(schedule)


#: Kynkaanniemi et al. (2024): guidance only for noise levels in (0.28, 5.42] (EDM2); the interval baseline.
PUBLISHED_WINDOW = (0.28, 5.42)


def baseline_families(sigmas, process, grid=None):
    """One-parameter families A -> schedule: interval (published window), negative-guidance window
    (linear in VE time, reaching 0 at the median knot's noise level), and with a sampler ``grid``
    TV-CFG and step-down, each with amplitude A."""
    pivot = float(np.median(sigmas)) ** 2
    families = {
        "interval": lambda A: _bound(make_schedule("interval", omega=A, sigma_lo=PUBLISHED_WINDOW[0],
                                                   sigma_hi=PUBLISHED_WINDOW[1]), process),
        "negative window": lambda A: _bound(make_schedule("linear", w0=-min(A, 1.0), slope=A / pivot), process),
    }
    if grid is not None:
        for name in ("tvcfg", "step-down"):
            families[name] = (lambda n: lambda A: bind_schedule(make_schedule(n, omega=A), process, grid))(name)
    return families


def _optimise(predict, target, sigmas, process, omega_max, grid, maxiter, inputs):
    """SLSQP over the spline values (eq. 47) from the constant weight that meets the constraint,
    then the baselines tuned to the same mean ratio."""
    if not target > 1.0:
        raise ValueError(f"target: a mean ratio above 1 is needed for a guidance problem, got {target!r}")
    reachable = predict(omega_max).mean_ratio
    if not target < reachable:
        raise ValueError(f"target: mean ratio {target!r} is beyond what constant guidance up to omega_max = "
                         f"{omega_max} reaches ({reachable:.4f})")
    constant, constant_pred = tune_amplitude(lambda A: A, predict, target, bracket=(0.0, omega_max))

    def spline(values):
        return _bound(SplineSchedule(sigmas, values), process)

    evaluations = {}

    def cached(values):
        key = tuple(np.round(values, 12))
        if key not in evaluations:
            evaluations[key] = predict(spline(values))
        return evaluations[key]

    result = minimize(lambda v: cached(v).distortion, np.full(sigmas.size, constant), method="SLSQP",
                      bounds=[(-1.0, omega_max)] * sigmas.size,
                      constraints=[dict(type="ineq", fun=lambda v: cached(v).mean_ratio - target)],
                      options=dict(maxiter=maxiter, ftol=1e-10))
    best = spline(result.x)
    prediction = predict(best)
    if prediction.mean_ratio < target - 1e-6 or prediction.distortion > constant_pred.distortion:
        # SLSQP may stop on the boundary of feasibility: never return worse than the constant it started from
        best, prediction = spline(np.full(sigmas.size, constant)), constant_pred
    baselines = {"constant": (constant, constant_pred)}
    for name, build in baseline_families(sigmas, process, grid).items():
        try:
            baselines[name] = tune_amplitude(build, predict, target, bracket=(0.0, 50.0))
        except ValueError:
            continue  # this family cannot reach the target separability
    inputs = dict(inputs, target=target, process=process.name, knots=sigmas.tolist(), omega_max=omega_max)
    return OptimalSchedule(best, prediction, target, baselines, inputs, int(result.nfev), bool(result.success),
                           str(result.message))


def optimal_schedule(alpha, target, sampler="ode", process="ou", mean_var=1.0, class_var=0.25, knots=None,
                     omega_max=8.0, grid=None, t_max=None, maxiter=60):
    r"""Minimise the mean-field distortion over spline schedules with mean ratio >= ``target`` (eq. 47).

    ``knots`` are the noise levels of the spline (default: 6 from 0.05 to 20); weights are bounded
    to [-1, ``omega_max``]. The baselines (:func:`baseline_families`, plus constant) are tuned to
    the same predicted mean ratio; ``grid`` (a sampler's forward times) adds TV-CFG and step-down.
    ``t_max``: the forward time the reverse process starts from (default: the mean-field solver's).
    Give the sampler's when the predictions are to be compared with simulation: schedules that grow
    with the noise level (the negative-guidance window grows as sigma^2) act mostly at the very start,
    so their effect depends on it.
    Returns an :class:`OptimalSchedule`.
    """
    process = get_process(process)
    sigmas = default_knots(process) if knots is None else np.asarray(knots, dtype=float)

    def predict(schedule):
        return guided_prediction(alpha, schedule, process=process, sampler=sampler, mean_var=mean_var,
                                 class_var=class_var, t_max=t_max)

    inputs = dict(model="mean-field", alpha=alpha, sampler=sampler, mean_var=mean_var, class_var=class_var,
                  t_max=t_max)
    return _optimise(predict, target, sigmas, process, omega_max, grid, maxiter, inputs)


@dataclass
class GaussianSummary:
    """The prediction of :func:`cfgphase.solvers.theory.gaussian.gaussian_moments` as the optimiser reads it."""

    distortion: float  #: KL divergence to the conditional per dimension (eq. 18)
    mean_ratio: float
    var_perp: float  #: orthogonal variance, or the variance along the mean in one dimension
    t_condensation: None = None


def optimal_gaussian_schedule(pair, target, sampler="ode", process="ve", knots=None, omega_max=8.0, grid=None,
                              t_max=None, maxiter=60):
    r"""Minimise the exact KL divergence to the conditional of a jointly Gaussian pair (eqs. 16-18)
    over spline schedules with final mean ratio :math:`E[x\cdot\mu_c]/|\mu_c|^2 \ge` ``target``
    (eq. 47; the lower bound is the mean-shift term, reached when the variance is preserved).
    Same family, baselines and return value as :func:`optimal_schedule`."""
    process = get_process(process)
    sigmas = default_knots(process) if knots is None else np.asarray(knots, dtype=float)

    def predict(schedule):
        s = gaussian_moments(pair, process, schedule, sampler=sampler, t_max=t_max).summary()
        spread = s["var_par"] if s["var_perp"] is None else s["var_perp"]
        return GaussianSummary(s["distortion"], s["mean_ratio"], spread)

    inputs = dict(model="gaussian", sampler=sampler, mean_c=pair.mean_c.tolist(), var_c=pair.var_c.tolist(),
                  mean_u=pair.mean_u.tolist(), var_u=pair.var_u.tolist(), t_max=t_max)
    return _optimise(predict, target, sigmas, process, omega_max, grid, maxiter, inputs)


def report(result):
    """Plain-text summary: the schedule as ``cfgphase simulate`` options, then the comparison table."""
    sched = result.schedule
    sigmas = ",".join(f"{v:.6g}" for v in sched.sigmas)
    values = ",".join(f"{v:.6g}" for v in sched.values)
    p = result.inputs
    model = f"alpha={p['alpha']:.4g}" if p["model"] == "mean-field" else "Gaussian pair"
    lines = [f"cfgphase optimize-schedule: {model}, target mean ratio {result.target:.4g} "
             f"({p['sampler']}, {p['process']}); {result.nfev} evaluations, {result.message}",
             f"  use it: cfgphase simulate --schedule spline --sigmas {sigmas} --values {values}",
             f"  {'schedule':<18}{'distortion':>12}{'mean ratio':>12}{'var_perp':>10}{'t*':>8}   "
             + ("(mean-field, d -> inf)" if p["model"] == "mean-field" else "(exact Gaussian)")]
    for name, distortion, ratio, var_perp, t_star in result.table():
        t_text = "n/a" if t_star is None else f"{t_star:.3f}"
        lines.append(f"  {name:<18}{distortion:>12.5f}{ratio:>12.4f}{var_perp:>10.4f}{t_text:>8}")
    return "\n".join(lines)


def record(result):
    """JSON-ready form of an :class:`OptimalSchedule`."""
    return dict(inputs=result.inputs, sigmas=result.schedule.sigmas.tolist(), values=result.schedule.values.tolist(),
                nfev=result.nfev, success=result.success, message=result.message,
                table=[dict(schedule=n, distortion=d, mean_ratio=r, var_perp=v, t_condensation=t)
                       for n, d, r, v, t in result.table()])


COMPARED = ("distortion", "mean_ratio", "var_perp", "accuracy", "energy_distance")


def simulate_schedules(field, schedules, grid, sampler="ode", method=None, particles=2048, seeds=(0, 1, 2)):
    """Every schedule on the same field, grid and seeds (equal cost, common random numbers).

    Returns name -> {key: (mean over seeds, standard error)} for the keys of :data:`COMPARED`
    (cfgphase.solvers.sampling.observables; the energy distance is to exact samples of the true conditional).
    """
    out = {}
    for name, schedule in schedules.items():
        steps = Sampler(kind=sampler, method=method, grid=grid)
        finals = [integrate(field, schedule, steps, particles=particles, seed=s, save=SaveAt(times=[grid[-1]])).final
                  for s in seeds]
        out[name] = {}
        for key in COMPARED:
            values = np.array([f[key] for f in finals], dtype=float)
            error = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else finals[0][key + "_stderr"]
            out[name][key] = (float(values.mean()), float(error))
    return out


def tune_by_simulation(field, families, grid, amplitudes, key="energy_distance", **options):
    """For each family A -> schedule, the amplitude among ``amplitudes`` (a sequence, or a dict
    name -> sequence) that minimises the simulated ``key`` (on the seeds in ``options``, which should
    differ from the evaluation seeds)."""
    best = {}
    for name, build in families.items():
        grid_of = amplitudes[name] if isinstance(amplitudes, dict) else amplitudes
        scores = simulate_schedules(field, {A: build(A) for A in grid_of}, grid, **options)
        amplitude = min(scores, key=lambda A: scores[A][key][0])
        best[name] = (amplitude, build(amplitude))
    return best
