"""The numbers behind each publication figure: theory and simulation side by side.

Every function returns a :class:`FigureData` (a kind, named arrays and the parameters that
produced them); :meth:`FigureData.save` stores it and
:mod:`cfgphase.solvers.figures.plots` draws it, from the object or from the file (``cfgphase plot FILE.h5``).
``quick`` selects small sizes for the test suite; the defaults make the figures. Simulated
quantities carry standard errors across draws of the means (seeds), or the grouped jackknife
of one run where a single draw is the point.

=====================  ==========================================================================
kind                   content
=====================  ==========================================================================
``distortion-vs-d``    distortion per dimension against d for fixed, polynomial and exponential K
``potential``          the two branches of the effective potential at several times (eq. 26)
``gaussian``           final mean and variance against omega, ODE and SDE, exact and simulated
``schedules``          separability against diversity, one point per schedule at one mean weight
``inverse-probability`` E[1/p(c|X)] and quantile shifts of p(c|X) against omega
``schedule-design``    learned, theory-optimal and baseline schedules: distortion, separability,
                       energy distance, in the exponential regime and with a degraded denoiser
=====================  ==========================================================================

Phase diagrams (cfgphase.solvers.sweeps.runner) and trajectories (``cfgphase simulate --out``) have files of
their own and are drawn from those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scipy.optimize import brentq

from cfgphase.physics.gaussian import GaussianPair
from cfgphase.physics.mixture import GaussianMixture
from cfgphase.physics.processes import get_process
from cfgphase.physics.schedules import bind_schedule, make_schedule
from cfgphase.solvers.score.fields import DegradedField, GaussianField, MixtureField
from cfgphase.solvers.theory.gaussian import gaussian_moments
from cfgphase.solvers.design.learned import learn_guidance
from cfgphase.solvers.theory.meanfield import effective_potential, guided_prediction, subexponential_distortion
from cfgphase.solvers.design.optimal import (COMPARED, PUBLISHED_WINDOW, baseline_families, default_knots, optimal_schedule,
                                     simulate_schedules, tune_by_simulation)
from cfgphase.physics.model import Model
from cfgphase.solvers.io.hdf5 import read_arrays, write_arrays
from cfgphase.solvers.sampling.driver import integrate, simulate
from cfgphase.solvers.sampling.sampler import Sampler, SaveAt
from cfgphase.solvers.sampling.timegrid import default_t_max, time_grid


def notebook_mode():
    """(quick, out) for a notebook: quick mode when CFGPHASE_QUICK=1 (the test suite), figures and
    their data written to CFGPHASE_FIGURES (default ``figures/``, created)."""
    out = Path(os.environ.get("CFGPHASE_FIGURES", "figures"))
    out.mkdir(parents=True, exist_ok=True)
    return os.environ.get("CFGPHASE_QUICK") == "1", out


@dataclass
class FigureData:
    """A figure's numbers: ``arrays`` (name -> ndarray) and the ``params`` that produced them."""

    kind: str
    arrays: dict
    params: dict = field(default_factory=dict)

    def __getitem__(self, name):
        return self.arrays[name]

    def save(self, path):
        """Write to an HDF5 file atomically (cfgphase.solvers.io.hdf5.write_arrays)."""
        write_arrays(path, self.kind, self.arrays, self.params)

    @classmethod
    def load(cls, path):
        """The figure data stored in ``path``."""
        return cls(*read_arrays(path))


def _seed_stats(values):
    values = np.asarray(values, dtype=float)
    err = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else np.nan
    return values.mean(), err


REGIMES = ("fixed", "polynomial", "exponential")


def classes_for(regime, d, fixed=16, power=2, alpha=0.1):
    """Number of classes at dimension d: fixed K, K = d**power, or K = round(exp(alpha d))."""
    if regime == "fixed":
        return fixed
    if regime == "polynomial":
        return int(d**power)
    if regime == "exponential":
        return max(1, round(np.exp(alpha * d)))
    raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")


def distortion_versus_d(omega=1.0, sampler="ode", fixed=16, power=2, alpha=0.1, dims=None, seeds=4,
                        particles=1024, steps=150, t_max=9.0, quick=False):
    """Distortion per dimension against d in the three regimes of K (eqs. 25, 28).

    Theory: the mean-field prediction at :math:`\\alpha_{eff} = \\log K(d)/d` plus the finite-d term
    along :math:`\\mu_c` (:func:`cfgphase.solvers.theory.meanfield.finite_d_distortion`); for K = e^{alpha d} it tends
    to a positive constant, for fixed and polynomial K it vanishes like 1/d (ODE).
    """
    if dims is None:
        dims = [16, 24, 32] if quick else [16, 32, 48, 64, 96]
    if quick:
        seeds, particles, steps = 2, 256, 60
    dims = np.asarray(dims, dtype=int)
    fine = np.unique(np.geomspace(dims.min(), 4 * dims.max(), 20 if quick else 40).astype(int))  # theory curve
    arrays = {"d": dims, "d_theory": fine}
    for regime in REGIMES:
        k = dict(fixed=fixed, power=power, alpha=alpha)
        arrays[f"theory_{regime}"] = subexponential_distortion(lambda d: classes_for(regime, d, **k), fine, omega,
                                                             sampler=sampler, t_max=t_max)[1]
        means, errs, ks = [], [], []
        for d in dims:
            K = classes_for(regime, d, **k)
            values = [simulate(Model(d=int(d), classes=K, seed=s), omega, sampler=sampler, steps=steps, t_max=t_max,
                               particles=particles, seed=s, save=SaveAt(times=[0.0])).final["distortion"]
                      for s in range(seeds)]
            mean, err = _seed_stats(values)
            means.append(mean)
            errs.append(err)
            ks.append(K)
        arrays[f"sim_{regime}"], arrays[f"sim_{regime}_err"], arrays[f"K_{regime}"] = (np.array(means),
                                                                                     np.array(errs), np.array(ks))
    params = dict(omega=omega, sampler=sampler, fixed=fixed, power=power, alpha=alpha, seeds=seeds,
                  particles=particles, steps=steps, t_max=t_max, process="ou", mean_var=1.0, class_var=0.25)
    return FigureData("distortion-vs-d", arrays, params)


def potential_landscape(alpha=0.2, omega=1.0, sampler="ode", offsets=(0.3, 0.1, 0.0, -0.1), points=2501):
    """The effective potential's two branches against the overlap ratio r at times around t* (eq. 26).

    The times are t* + ``offsets`` (forward time; positive is earlier in sampling). At each time the
    branches use the guided bulk's orthogonal variance, and ``r_bulk`` is the bulk overlap there
    (eq. 23; after t* the bulk is the one that would have continued without condensing). The
    branches cross at the bulk overlap exactly at t*.
    """
    pred = guided_prediction(alpha, omega, sampler=sampler)
    if pred.t_condensation is None:
        raise ValueError(f"alpha: no condensation at alpha = {alpha} (dense classes)")
    r = np.linspace(-0.5, 2.0, points)
    times = np.array([pred.t_condensation + o for o in offsets])
    mean, var = pred.bulk(times)
    landscapes = [effective_potential(r, t, alpha, v) for t, v in zip(times, var[1])]
    arrays = dict(r=r, times=times, r_bulk=mean[0], v_perp=var[1], target=np.array([p.target for p in landscapes]),
                  others=np.array([p.others for p in landscapes]), t_star=np.array(pred.t_condensation),
                  r_star=np.array(pred.r_condensation))
    return FigureData("potential", arrays, dict(alpha=alpha, omega=omega, sampler=sampler, process="ou",
                                                mean_var=1.0, class_var=0.25))


DIRECTIONS = 16


def gaussian_versus_omega(lambda_c=0.25, lambda_u=1.0, mean_gap=1.0, process="ve", t_max=None, omegas=None,
                          sim_omegas=None, particles=4096, steps=200, sde_steps=2000, quick=False):
    """Final mean and variance of guided sampling of a Gaussian pair against constant omega (eqs. 16-17).

    Exact solutions for the ODE and the SDE on a fine omega grid, simulations of the same problem
    (errors over independent copies of the direction) on a coarse one, Heun with ``steps`` and
    the first-order SDE step with ``sde_steps``, and for VE the closed form
    :math:`\\lambda_c(\\lambda_c/\\lambda_u)^\\omega` of the ODE's variance.
    """
    omegas = np.linspace(-1.0, 4.0, 26 if quick else 101) if omegas is None else np.asarray(omegas, dtype=float)
    sim_omegas = np.array([-1.0, 0.0, 1.0, 2.0, 4.0] if sim_omegas is None else sim_omegas, dtype=float)
    if quick:
        particles, steps = 512, 100
    if t_max is None:
        t_max = 400.0 if process == "ve" else None
    pair = GaussianPair(mean_c=mean_gap, var_c=lambda_c, mean_u=0.0, var_u=lambda_u)
    arrays = {"omega": omegas, "sim_omega": sim_omegas}
    for sampler in ("ode", "sde"):
        preds = [gaussian_moments(pair, process, omega=w, sampler=sampler, t_max=t_max) for w in omegas]
        arrays[f"mean_{sampler}"] = np.array([p.mean[0] for p in preds])
        arrays[f"var_{sampler}"] = np.array([p.var[0] for p in preds])
        # DIRECTIONS independent copies of the eigendirection per particle: per-copy moments,
        # their mean and its standard error over the copies
        field = GaussianField(GaussianPair(mean_gap, lambda_c, 0.0, lambda_u, d=DIRECTIONS), process)
        n_steps = steps if sampler == "ode" else sde_steps
        sims = [integrate(field, w, Sampler(kind=sampler, steps=n_steps, t_max=t_max), particles=particles, seed=3,
                          save=SaveAt(times=[0.0], samples=True)).samples for w in sim_omegas]
        for name, moment in (("mean", lambda x: x.mean(0)), ("var", lambda x: x.var(0, ddof=1))):
            per_copy = np.array([moment(x) for x in sims])
            arrays[f"sim_{name}_{sampler}"] = per_copy.mean(1)
            arrays[f"sim_{name}_{sampler}_err"] = per_copy.std(1, ddof=1) / np.sqrt(DIRECTIONS)
    if process == "ve":
        arrays["var_closed_form"] = lambda_c * (lambda_c / lambda_u) ** omegas
    return FigureData("gaussian", arrays, dict(lambda_c=lambda_c, lambda_u=lambda_u, mean_gap=mean_gap,
                                               process=process, t_max=t_max, particles=particles, steps=steps,
                                               sde_steps=sde_steps))


def matched_schedules(mean_omega, grid, process):
    """Each schedule family scaled so that its time-average over ``grid`` is ``mean_omega`` (eq. 33).

    Shapes: constant; the limited interval on the middle third of the grid's log noise levels;
    a negative-guidance window linear in t (omega = A (t / t_mid - 1), floored at -1, negative in
    the second half of sampling); a switch to the unconditional score after 60 % of the steps;
    TV-CFG; step-up and step-down. The amplitude A of each family is found with brentq (the
    average increases with it). Returns name -> schedule bound to ``process`` and ``grid``.
    """
    grid = np.asarray(grid, dtype=float)
    fractions = -np.diff(grid) / (grid[0] - grid[-1])
    mids = 0.5 * (grid[:-1] + grid[1:])

    def average(schedule):
        return float(np.dot([schedule(t) for t in mids], fractions))

    def scaled(build):
        amplitude = brentq(lambda A: average(build(A)) - mean_omega, -1.0, 1e3, xtol=1e-12)
        return build(amplitude)

    def bound(name, **params):
        return bind_schedule(make_schedule(name, **params), process, grid)

    log_sigma = 0.5 * np.log(np.asarray(process.var(mids)) / np.asarray(process.a(mids)) ** 2)
    lo, hi = np.exp(np.quantile(log_sigma, [1 / 3, 2 / 3]))
    t_mid = float(np.median(mids))
    return {
        "constant": mean_omega,
        "interval": scaled(lambda A: bound("interval", omega=A, sigma_lo=lo, sigma_hi=hi)),
        "negative window": scaled(lambda A: bound("linear", w0=-A, slope=A / t_mid, clock="time")),
        "switch": scaled(lambda A: bound("switch", omega=A, fraction=0.6)),
        "tvcfg": bound("tvcfg", omega=mean_omega),
        "step-up": bound("step-up", omega=mean_omega),
        "step-down": bound("step-down", omega=mean_omega),
    }


def schedule_comparison(mean_omega=1.0, d=32, alpha=0.2, sampler="ode", steps=100, particles=2048, seeds=2,
                        quick=False):
    """Separability (mean_ratio, accuracy) against diversity (var_perp / s^2, energy distance) for every
    schedule at one time-averaged weight, in the exponential regime, on rectified flow with a
    uniform grid in t (where the time-average is the step average, as in Jin, Shi and Gu)."""
    if quick:
        d, particles, seeds, steps = 16, 512, 1, 60
    process = get_process("flow")
    grid = time_grid(process, steps, 1.0 - 1e-4, 0.0, kind="uniform")
    schedules = matched_schedules(mean_omega, grid, process)
    names = ["conditional"] + list(schedules)
    keys = ("mean_ratio", "var_perp", "var_par", "energy_distance", "accuracy")
    values = {k: [] for k in keys}
    errors = {k: [] for k in keys}
    for name in names:
        omega = 0.0 if name == "conditional" else schedules[name]
        runs = [simulate(Model(d=d, alpha=alpha, process=process, seed=s), omega, sampler=Sampler(kind=sampler, grid=grid),
                         particles=particles, seed=s, save=SaveAt(times=[0.0])).final for s in range(seeds)]
        for k in keys:
            if seeds > 1:
                mean, err = _seed_stats([r[k] for r in runs])
            else:
                mean, err = runs[0][k], runs[0][k + "_stderr"]
            values[k].append(mean)
            errors[k].append(err)
    arrays = {"schedule": np.array(names)}
    for k in keys:
        arrays[k], arrays[k + "_err"] = np.array(values[k], dtype=float), np.array(errors[k], dtype=float)
    return FigureData("schedules", arrays, dict(mean_omega=mean_omega, d=d, alpha=alpha, sampler=sampler, steps=steps,
                                                particles=particles, seeds=seeds, process="flow", grid="uniform",
                                                class_var=0.25, mean_var=1.0))


#: Li & Jiao's metric on a 1-D overlapping mixture (docs/theory.md section 10, claim 4).
OVERLAP_MODEL = dict(means=[[0.0], [-1.5], [4.0]], weights=[0.2, 0.4, 0.4], class_var=1.0, target=0)


def inverse_probability_versus_omega(omegas=None, particles=20000, steps=100, quick=False):
    """E[1/p(c|X)] with its 95 % bootstrap interval and the quantile shifts of p(c|X) against omega."""
    omegas = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 4.0] if omegas is None else omegas, dtype=float)
    if quick:
        particles, steps = 4000, 60
    model = Model(**OVERLAP_MODEL)
    finals = [simulate(model, w, particles=particles, steps=steps, save=SaveAt(times=[0.0]), seed=5).final
              for w in omegas]
    arrays = {"omega": omegas}
    for key in ("inv_prob", "inv_prob_stderr", "inv_prob_ci_low", "inv_prob_ci_high"):
        arrays[key] = np.array([f[key] for f in finals])
    levels = sorted(k for k in finals[0] if k.startswith("p_target_q") and k.endswith("_shift"))
    for key in levels:
        arrays[key] = np.array([f[key] for f in finals])
        arrays[key + "_stderr"] = np.array([f[key + "_stderr"] for f in finals])
    return FigureData("inverse-probability", arrays, dict(particles=particles, steps=steps, **{
        k: str(v) for k, v in OVERLAP_MODEL.items()}))


#: The under-trained conditional model of the schedule-design comparison (cfgphase.solvers.score.fields.DegradedField).
DEGRADATION = dict(shrink=0.3, mix=0.3)


def _rows(results, setting):
    rows = []
    for name, values in results.items():
        rows.append(dict(setting=setting, schedule=name, **{k: values[k][0] for k in COMPARED},
                         **{k + "_err": values[k][1] for k in COMPARED}))
    return rows


def schedule_design(alpha=0.1, target=1.1, d=64, steps=200, particles=2048, seeds=(0, 1, 2), tuning_seeds=(10, 11),
                    quick=False):
    r"""Learned (eq. 46), theory-optimal (eq. 47) and baseline schedules, simulated at equal cost.

    Setting "exact": the mixture with K = e^{alpha d} classes and exact scores (OU, ODE, ``steps``
    log-grid steps, the sampler's own t_max in the theory); every family is tuned by the mean-field
    theory to the predicted mean ratio ``target``, and the learned weight is trained on the exact
    field (it should stay near 0). Setting "degraded": an 8-dimensional mixture of 4 classes whose
    conditional model is degraded by :data:`DEGRADATION` (rectified flow, 20 DDIM steps); each
    baseline's amplitude is the one with the least simulated energy distance on ``tuning_seeds``
    (disjoint from the evaluation seeds 0-2, 2048 particles), the interval both at the published
    window and at the best window of a grid ("oracle window"); the learned weight is trained on
    one-step pairs only.
    """
    if quick:
        d, steps, particles, seeds, tuning_seeds = 32, 100, 512, (0, 1), (10,)
    ou = get_process("ou")
    model = GaussianMixture.random(d, classes=round(np.exp(alpha * d)), class_var=0.25, seed=1)
    exact = MixtureField(model, "ou", target=0)
    grid = time_grid(ou, steps, default_t_max(ou, d * 1.25), 0.0, kind="log")
    opt = optimal_schedule(alpha, target, grid=grid, t_max=grid[0])
    learned_exact = learn_guidance(exact, pairs=12 if quick else 24, samples=128 if quick else 256)
    schedules = {"none": 0.0, "theory-optimal": opt.schedule, **{n: s for n, (s, _) in opt.baselines.items()},
                 "learned": learned_exact.model.schedule(0)}
    rows = _rows(simulate_schedules(exact, schedules, grid, particles=particles, seeds=seeds), "exact")

    small = GaussianMixture.random(8, classes=4, class_var=0.25, seed=1)
    degraded = DegradedField(MixtureField(small, "flow", target=0), **DEGRADATION)
    flow = get_process("flow")
    fgrid = time_grid(flow, 20, 1.0 - 1e-3, 0.0, kind="uniform")
    few = 2048  # the 8-dimensional setting is cheap: the same particles and seeds in quick mode
    options = dict(method="ddim", particles=few, seeds=tuning_seeds)
    families = {"constant": lambda A: A, **baseline_families(default_knots(flow), flow, fgrid)}
    base = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0) if quick else (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
    # the negative window grows as sigma^2 and the flow starts at sigma ~ 1e3: far smaller amplitudes
    amplitudes = {name: base for name in families} | {"negative window": np.geomspace(1e-6, 1e-1, 6 if quick else 11)}
    tuned = tune_by_simulation(degraded, families, fgrid, amplitudes, **options)
    windows = [(lo, hi) for lo in (0.1, 0.3, 1.0, 3.0) for hi in (1.0, 3.0, 10.0, np.inf) if hi > lo]
    oracle = {(w, lo, hi): bind_schedule(make_schedule("interval", omega=w, sigma_lo=lo, sigma_hi=hi), flow)
              for (lo, hi) in windows for w in ((1.0, 3.0) if quick else (0.5, 1.0, 2.0, 3.0))}
    scores = simulate_schedules(degraded, oracle, fgrid, **options)
    best_window = min(scores, key=lambda key: scores[key]["energy_distance"][0])
    learned = learn_guidance(degraded, pairs=12 if quick else 24, samples=128 if quick else 256)
    schedules = {"none": 0.0, **{n: s for n, (_, s) in tuned.items()},
                 "interval (oracle window)": oracle[best_window], "learned": learned.model.schedule(0)}
    rows += _rows(simulate_schedules(degraded, schedules, fgrid, method="ddim", particles=few, seeds=(0, 1, 2)),
                  "degraded")
    arrays = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    chosen = {n: float(A) for n, (A, _) in tuned.items()}
    # the largest learned weight with exact scores, on the training pairs and on the sampler's steps
    on_steps = [learned_exact.model(0, s, t) for t, s in zip(grid[:-1], grid[1:])]
    exact_max = float(max(np.max(learned_exact.weights()), max(on_steps)))
    return FigureData("schedule-design", arrays, dict(
        alpha=alpha, target=target, d=d, steps=steps, particles=particles, seeds=str(tuple(seeds)),
        tuning_seeds=str(tuple(tuning_seeds)), class_var=0.25, degradation=str(DEGRADATION),
        published_window=str(PUBLISHED_WINDOW), oracle_window=str(best_window), tuned_amplitudes=str(chosen),
        learned_exact_max=exact_max, learned_degraded_mean=float(np.mean(learned.weights())),
        optimal_sigmas=str(opt.schedule.sigmas.tolist()), optimal_values=str(opt.schedule.values.tolist())))


def design_table(data):
    """Markdown table of a ``schedule-design`` FigureData (value +- standard error over seeds)."""
    keys = ("distortion", "mean_ratio", "var_perp", "energy_distance")
    lines = ["| setting | schedule | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for i, name in enumerate(data["schedule"]):
        cells = [f"{data[k][i]:.4f} ± {data[k + '_err'][i]:.4f}" for k in keys]
        lines.append(f"| {data['setting'][i]} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["FigureData", "schedule_design", "design_table", "distortion_versus_d", "potential_landscape",
           "gaussian_versus_omega", "schedule_comparison", "inverse_probability_versus_omega", "matched_schedules", "classes_for"]
