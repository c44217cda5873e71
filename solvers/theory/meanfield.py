r"""Leading-order mean-field theory of guided sampling with K = e^{alpha d} classes (eqs. 23-25).

Before condensation the class posterior of a typical particle is spread over exponentially many
classes in the annealed phase (cfgphase.solvers.theory.condensation), whose average mean is the tilted mean
:math:`a_t\sigma_\mu^2 x/Q_t`; the unconditional score is then that of
:math:`\mathcal N(0, Q_t I)`, :math:`Q_t = \Gamma_t + a_t^2\sigma_\mu^2` (eq. 23). Guided sampling
is the jointly Gaussian problem of cfgphase.solvers.theory.gaussian with :math:`\lambda_c = s^2`,
:math:`\lambda_u = \sigma_\mu^2 + s^2`, per eigendirection: the direction of :math:`\mu_c` (mean
gap :math:`|\mu_c|`) and the orthogonal ones (no gap). The order parameters are the overlap
ratio :math:`r = x\cdot\mu_c/|\mu_c|^2` and the orthogonal variance :math:`v_\perp`.

The particles condense on the target at :math:`t^*`, where the target's log-weight per
dimension :math:`-(\rho(r-a_t)^2 + v_\perp)/(2\Gamma_t)` (:math:`\rho = |\mu_c|^2/d`) reaches the
free entropy of the other classes :math:`\phi(\alpha, q = \rho r^2 + v_\perp, t)` (eq. 24; annealed
or frozen). After :math:`t^*` the unconditional score equals the conditional one and guidance
vanishes: the remaining dynamics is conditional sampling (eq. 25).

The O(1) variance along :math:`\mu_c` (var_par) needs one more ingredient (eq. 27): particles
condense at times spread by O(1/sqrt d) around :math:`t^*`, because their log-odds
:math:`d\,\Delta` fluctuate by O(sqrt d) through their own coordinate along :math:`\mu_c` and
their own :math:`|x_\perp|^2`; over that spread the guidance velocity along :math:`\mu_c`, O(sqrt d),
is on for some particles and off for others, which changes their coordinate by O(1).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.optimize import brentq
from scipy.optimize.elementwise import find_root

from cfgphase.physics.gaussian import GaussianPair
from cfgphase.physics.guidance import as_guidance
from cfgphase.physics.model import Model
from cfgphase.physics.processes import get_process
from cfgphase.physics.schedules import bind_schedule, needs_grid
from cfgphase.physics.statistics import describe
from cfgphase.physics.weights import excess_weight, weight_at
from cfgphase.solvers.sampling.sampler import as_sampler
from cfgphase.solvers.theory.condensation import alpha_at_free_entropy, others_free_entropy
from cfgphase.solvers.theory.gaussian import integrate_moments, moment_rhs


@dataclass
class MeanFieldPrediction:
    """Predicted final statistics (d -> infinity), the condensation time and the inputs."""

    inputs: dict
    t_condensation: float | None
    r_condensation: float | None  #: bulk overlap ratio at t*
    v_perp_condensation: float | None  #: bulk orthogonal variance at t*
    mean_ratio: float
    var_par: float
    var_perp: float
    distortion: float
    accuracy: float | None
    phase_at_condensation: str | None
    nfev: int
    success: bool
    message: str
    #: the guided bulk (eq. 23) as a function of t: ``bulk(t) -> (mean, var)``, rows (along mu_c,
    #: orthogonal); the mean along mu_c is the overlap ratio r. Valid before t*.
    bulk: object = None
    #: the largest alpha at which the particles condense under this guidance (eq. 49): above it the
    #: final law is the guided bulk's (dense classes). Equals alpha_max without guidance.
    alpha_condensation: float | None = None
    #: entropy s(1) of the other classes at t*: >= 0 annealed, < 0 frozen (eq. 20); None without t*
    entropy_at_condensation: float | None = None
    #: Monte-Carlo standard errors of the finite-d prediction (cfgphase.solvers.theory.finite_d,
    #: eqs. 50-63); None for the d -> infinity theory, which is not a Monte-Carlo estimate.
    mean_ratio_stderr: float | None = None
    var_par_stderr: float | None = None
    var_perp_stderr: float | None = None
    distortion_stderr: float | None = None
    t_condensation_stderr: float | None = None
    #: finite-d only: the mean target posterior p(c|x_t) at the end of sampling, and its Monte-Carlo
    #: error. It decides whether t* exists (it must reach 1/2), and is compared with a simulation's
    #: ``observable("target_posterior")`` at its last node where one of them condenses and the other not.
    target_posterior: float | None = None
    target_posterior_stderr: float | None = None
    #: finite-d population only: the draw's shared mean S of eqs. (104)-(105), already subtracted from
    #: ``var_perp`` (which is the spread about the draw's own mean, as a simulation's); ``var_perp + shared_mean``
    #: is the second moment about zero. None where it is not separate (the reduction of eq. 63, d -> infinity).
    shared_mean: float | None = None
    shared_mean_stderr: float | None = None

    def summary(self):
        """The flat JSON-ready record, with the statistic names of a simulation (None: not defined)."""
        out = dict(self.inputs)
        out.update(mean_ratio=self.mean_ratio, var_par=self.var_par, var_perp=self.var_perp, distortion=self.distortion,
                   accuracy=self.accuracy, inv_prob=None, t_condensation=self.t_condensation,
                   phase_at_condensation=self.phase_at_condensation, alpha_condensation=self.alpha_condensation,
                   entropy_at_condensation=self.entropy_at_condensation, nfev=self.nfev, success=self.success,
                   message=self.message)
        out.update({key: value for key in STDERR_KEYS if (value := getattr(self, key)) is not None})
        if self.target_posterior is not None:
            out.update(target_posterior=self.target_posterior, target_posterior_stderr=self.target_posterior_stderr)
        if self.shared_mean is not None:
            out.update(shared_mean=self.shared_mean, shared_mean_stderr=self.shared_mean_stderr)
        return out

    def trajectory(self, times):
        r"""The predicted ``m`` = :math:`x\cdot\mu_c/d` and ``q`` = :math:`|x|^2/d` at forward ``times``
        (d -> infinity): the guided bulk before :math:`t^*` (eq. 23), its conditional transport after
        (eq. 29, from t* to t). Returns (m, q), arrays like ``times``."""
        inputs = self.inputs
        process = get_process(inputs["process"])
        rho, s2 = inputs["target_norm"], inputs["class_var"]
        if self.bulk is None:
            raise ValueError("trajectory: this prediction has no bulk trajectory (finite d or failed integration)")
        times = np.atleast_1d(np.asarray(times, dtype=float))
        r, v_perp = np.empty_like(times), np.empty_like(times)
        ts = self.t_condensation
        before = times >= ts if ts is not None else np.ones(times.shape, bool)
        if np.any(before):
            mean, var = self.bulk(times[before])
            r[before], v_perp[before] = mean[0], var[1]
        for i in np.flatnonzero(~before):
            r[i], v_perp[i] = _conditional_transport(process, inputs["sampler"], s2, ts, self.r_condensation,
                                                     self.v_perp_condensation, 1.0, t_to=times[i])
        return rho * r, rho * r * r + v_perp

    def to_xarray(self, times=None):
        """An ``xarray.Dataset`` with the final statistics as scalars (the names of a simulation) and,
        at ``times`` (default: the bulk solver's steps), the predicted ``m`` and ``q`` over ``time``;
        inputs in ``attrs`` (NaN where not defined)."""
        import xarray as xr

        data = {}
        for key in ("mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "t_condensation"):
            meaning, units = describe(key)
            value = getattr(self, key)
            data[key] = xr.Variable((), np.nan if value is None else float(value), {"long_name": meaning, "units": units})
            if (error := getattr(self, key + "_stderr", None)) is not None:
                data[key + "_stderr"] = xr.Variable((), float(error), {"long_name": f"Monte-Carlo standard error of {key}",
                                                                       "units": units})
        coords = {}
        if self.success and self.bulk is not None:
            times = np.sort(self.bulk.times)[::-1] if times is None else np.asarray(times, dtype=float)
            m, q = self.trajectory(times)
            for key, values in (("m", m), ("q", q)):
                meaning, units = describe(key)
                data[key] = xr.Variable(("time",), values, {"long_name": meaning + " (mean field)", "units": units})
            coords["time"] = ("time", times, {"long_name": "forward time (t = 0 is data)", "units": "forward time"})
        attrs = {k: (np.nan if v is None else int(v) if isinstance(v, bool) else v) for k, v in self.inputs.items()}
        attrs.update(kind="mean-field prediction", phase_at_condensation=self.phase_at_condensation or np.nan,
                     nfev=self.nfev, success=int(self.success), message=self.message)
        return xr.Dataset(data, coords=coords, attrs=attrs)


STDERR_KEYS = ("mean_ratio_stderr", "var_par_stderr", "var_perp_stderr", "distortion_stderr",
               "t_condensation_stderr")


def target_log_weight(r, v_perp, t, process, rho, class_var):
    r"""Log-weight per dimension of the target class, :math:`-(\rho(r - a_t)^2 + v_\perp)/(2\Gamma_t)` (eq. 24),
    with :math:`\rho = |\mu_c|^2/d`. Elementwise on arrays."""
    return -(rho * (r - process.a(t)) ** 2 + v_perp) / (2.0 * process.class_var(t, class_var))


def condensation_gap(t, r, v_perp, alpha, process, mean_var, class_var, rho=None):
    """Target log-weight minus the other classes' free entropy per dimension (eq. 24); zero at t*.

    ``rho`` = |mu_c|^2/d of the target (default ``mean_var``, its d -> infinity value); the other
    classes' means are drawn from N(0, mean_var I). Elementwise on arrays.
    """
    rho = mean_var if rho is None else rho
    return target_log_weight(r, v_perp, t, process, rho, class_var) - others_free_entropy(
        alpha, rho * r**2 + v_perp, t, process, mean_var, class_var).phi


def guided_prediction(alpha, omega=None, guidance_scale=None, process="ou", sampler="ode", mean_var=1.0,
                      class_var=0.25, t_max=None, target_norm=None):
    r"""Mean-field prediction for guided sampling of K = e^{alpha d} classes (eqs. 23-25, 27).

    ``omega`` is a number or a schedule of forward time (excess convention). ``t_max`` defaults
    to where one direction's signal-to-noise ratio is 1e-10, so that starting there is negligible.
    ``target_norm`` is :math:`\rho = |\mu_c|^2/d` of the target (default ``mean_var``, its
    d -> infinity value): at finite d it fluctuates by O(1/sqrt d) from one draw of the means to
    the next, and t* moves with it (eq. 44); conditioning on it removes that scatter when comparing
    with one simulation. Returns a :class:`MeanFieldPrediction`; ``t_condensation`` is None when
    the particles never condense (dense classes), and then the final law is the guided bulk's.
    """
    return guided_predictions([alpha], omega, guidance_scale, process, sampler, mean_var, class_var, t_max,
                              target_norm)[0]


def predict(model, guidance=None, *, sampler="ode", t_max=None, target_norm=None, d=None, particles=None, seed=0):
    r"""Mean-field prediction for a model and a guidance: the theory on the objects a simulation takes,
    with the same statistic names (eqs. 23-29; at finite ``d``, eqs. 50-63).

    ``model`` is a :class:`~cfgphase.physics.model.Model` with random means (``mean_var``, ``class_var``,
    ``process`` are read from it; alpha is ``model.alpha`` when given, else :math:`\log K/d`).
    ``guidance``: a Guidance (linear CFG with any schedule of forward time), a number (omega) or None
    (omega = 1). ``sampler``: 'ode', 'sde' or a Sampler (its ``t_max`` is used when set; default: one
    direction's signal-to-noise ratio 1e-10). ``target_norm``: condition on
    :math:`\rho = |\mu_c|^2/d` (e.g. ``model.target_norm``, the drawn target's; default ``mean_var``).
    A :meth:`~cfgphase.physics.model.Model.hierarchical` model is predicted at finite ``d`` only, averaged
    over draws of its tree (cfgphase.solvers.theory.tree, eqs. 74-79).
    ``d``: None (default) gives the d -> infinity limit; an integer D >= 2 gives the prediction at
    dimension D (cfgphase.solvers.theory.finite_d.finite_d_prediction): K = round(exp(alpha D)) with
    alpha from the model, or K = ``model.classes`` when the model fixes the number of classes; the
    sampler's grid and steps; a Monte-Carlo estimate over ``particles`` (default
    finite_d.PARTICLES, about 5 s) with random numbers from ``seed``, carrying ``*_stderr`` fields.
    Returns a :class:`MeanFieldPrediction`.
    """
    if d is not None:
        from cfgphase.solvers.theory.finite_d import check_dimension

        d = check_dimension(d)
    elif particles is not None:
        raise ValueError("particles: the d -> infinity theory is not a Monte-Carlo estimate; give d as well")
    if not isinstance(model, Model):
        raise ValueError(f"model: the mean-field theory needs a Model of random classes, got {type(model).__name__}")
    if model.hierarchy is not None:
        return _tree_prediction(model, guidance, sampler, t_max, target_norm, d, particles, seed)
    if model.means is not None or model.modes != 1 or model.unconditional is not None or model.weights is not None:
        raise ValueError("model: the mean-field theory covers one-mode classes with i.i.d. random means, uniform "
                         "weights and the mixture as unconditional model")
    if np.ndim(model.class_var) != 0:
        raise ValueError("class_var: the mean-field theory covers isotropic classes (one class_var), got a spectrum; "
                         "the exact Gaussian pair (cfgphase.gaussian) is per eigendirection")
    guidance = as_guidance(guidance)
    if guidance.rule.name != "cfg":
        raise ValueError(f"rule: the mean-field theory covers linear CFG, got {guidance.rule.name!r}")
    sampler = as_sampler(sampler)
    if d is not None:  # finite_d builds on this module: imported here, not at the top
        from cfgphase.solvers.theory.finite_d import PARTICLES, finite_d_prediction

        pred = finite_d_prediction(d, guidance.weight, alpha=None if model.classes is not None else model.alpha,
                                   classes=model.classes, sampler=sampler.replace(t_max=t_max), process=model.process,
                                   mean_var=model.mean_var, class_var=model.class_var, target_norm=target_norm,
                                   particles=PARTICLES if particles is None else particles, seed=seed)
        pred.inputs["rule"] = repr(guidance.rule)
        return pred
    alpha = model.alpha if model.alpha is not None else model.alpha_effective
    pred = guided_prediction(alpha, guidance.weight, process=model.process, sampler=sampler.kind,
                             mean_var=model.mean_var, class_var=model.class_var,
                             t_max=sampler.t_max if t_max is None else t_max, target_norm=target_norm)
    pred.inputs["rule"] = repr(guidance.rule)
    return pred


def _tree_prediction(model, guidance, sampler, t_max, target_norm, d, particles, seed):
    """:func:`predict` for a hierarchical model: the finite-d theory of a tree (eqs. 74-79) only."""
    if d is None:
        raise ValueError("d: the theory of a tree of classes is at finite d (eqs. 74-79); give d")
    if target_norm is not None:
        raise ValueError("target_norm: the theory of a tree averages over draws of the tree; it takes no target norm")
    guidance = as_guidance(guidance)
    if guidance.rule.name != "cfg":
        raise ValueError(f"rule: the mean-field theory covers linear CFG, got {guidance.rule.name!r}")
    from cfgphase.solvers.theory.tree import PARTICLES, tree_prediction  # builds on this module

    branching, level_vars, level = model.hierarchy
    pred = tree_prediction(d, guidance.weight, branching=branching, level_vars=level_vars, level=level,
                           sampler=as_sampler(sampler).replace(t_max=t_max), process=model.process,
                           class_var=model.class_var, particles=PARTICLES if particles is None else particles,
                           seed=seed)
    pred.inputs["rule"] = repr(guidance.rule)
    return pred


def guided_predictions(alphas, omega=None, guidance_scale=None, process="ou", sampler="ode", mean_var=1.0,
                       class_var=0.25, t_max=None, target_norm=None):
    r""":func:`guided_prediction` for many alphas at one guidance schedule; a list of predictions.

    Before condensation the bulk obeys the Gaussian moment equations (16)/(17), which do not
    depend on alpha: they are integrated once, with dense output, and each alpha's t* is the
    first zero of the gap (eq. 24) along them, from t_max down (bracketed on the solver's steps,
    then bisected to float64 resolution). After t* sampling is conditional and the Gaussian law
    is transported to t = 0 in closed form (eq. 29).
    """
    process = get_process(process)
    omega = bind_schedule(excess_weight(omega, guidance_scale), process=process)
    if needs_grid(omega):
        raise ValueError("schedule: schedules defined on a sampler's steps are not supported by the mean-field "
                         "theory; bind them to a grid first (cfgphase.physics.schedules.bind_schedule)")
    if sampler not in ("ode", "sde"):
        raise ValueError(f"sampler must be 'ode' or 'sde', got {sampler!r}")
    alphas = np.atleast_1d(np.asarray(alphas, dtype=float))
    for name, value in (("alpha", alphas), ("mean_var", mean_var), ("class_var", class_var)):
        if not (np.all(np.isfinite(value)) and np.all(np.asarray(value) >= 0)):
            shown = value.tolist() if isinstance(value, np.ndarray) else value
            raise ValueError(f"{name} must be a finite number >= 0, got {shown!r}")
    if class_var <= 0 or mean_var <= 0:
        raise ValueError("mean_var and class_var must be > 0 for the mean-field theory")
    rho = float(mean_var if target_norm is None else target_norm)
    if not (np.isfinite(rho) and rho > 0):
        raise ValueError(f"target_norm must be a finite number > 0, got {target_norm!r}")
    # direction 0: along mu_c with unit mean gap (r is the mean); direction 1: orthogonal
    pair = GaussianPair(mean_c=[1.0, 0.0], var_c=class_var, mean_u=0.0, var_u=mean_var + class_var)
    t_max = float(process.time_at_snr(1e-10 / pair.signal_var)) if t_max is None else float(t_max)
    t_max = min(t_max, process.t_upper if sampler == "ode" else np.nextafter(process.t_upper, 0))
    process.check_times(t_max, "t_max")
    weight_at(omega, t_max)
    mean, var = pair.noised_moments(t_max, process, conditional=False)
    end_mean, end_var, bulk, nfev, ok, message = integrate_moments(pair, process, omega, sampler, t_max, 0.0, mean,
                                                                   var, dense=True)

    def gap(t, a):
        m, v = bulk(t)
        return condensation_gap(t, m[0], v[1], a, process, mean_var, class_var, rho)

    t_star = np.full(alphas.shape, np.nan)
    alpha_c = None
    if ok:
        alpha_c = condensation_alpha(bulk, process, mean_var, class_var, rho)
        steps = bulk.times
        m, v = bulk(steps)
        above = condensation_gap(steps, m[0], v[1], alphas[:, None], process, mean_var, class_var, rho) >= 0
        first = np.where(above.any(axis=1), above.argmax(axis=1), -1)
        t_star[(first == 0) | (alphas == 0)] = t_max  # condensed from the start: K = 1, no guidance at all
        inner = (first > 0) & (alphas > 0)
        if np.any(inner):  # gap >= 0 at the lower end, < 0 at the upper one
            bracket = (steps[first[inner]], steps[first[inner] - 1])
            t_star[inner] = find_root(gap, bracket, args=(alphas[inner],),
                                      tolerances=dict(xatol=0.0, xrtol=4 * np.finfo(float).eps)).x

    out = []
    inputs = dict(d=None, K=None, omega=None if callable(omega) else omega,
                  guidance_scale=None if callable(omega) else 1.0 + omega, mean_var=mean_var, class_var=class_var,
                  target_norm=rho,
                  process=process.name, sampler=sampler,
                  schedule=repr(omega) if callable(omega) else "constant", t_max=t_max)
    if not ok:  # no moments: every statistic is undefined (NaN), the message says why
        end_mean, end_var = np.full(2, np.nan), np.full(2, np.nan)
    for alpha, ts in zip(alphas, t_star):
        phase, at_star, r, v_par, v_perp = None, (None, None), float(end_mean[0]), float(end_var[0]), float(end_var[1])
        entropy = None
        if np.isfinite(ts):
            m, v = bulk(ts)
            at_star = (float(m[0, 0]), float(v[1, 0]))
            others = others_free_entropy(alpha, rho * at_star[0] ** 2 + at_star[1], ts, process, mean_var, class_var)
            phase, entropy = str(others.phase), float(others.entropy)
            with np.errstate(all="ignore"):  # degenerate parameters give NaN, reported below
                v_par = v[0, 0] if ts == t_max else _variance_after_spread_condensation(
                    pair, process, omega, sampler, alpha, mean_var, class_var, rho, ts, *at_star)
            r, v_par = _conditional_transport(process, sampler, class_var, ts, at_star[0], v_par, 1.0)
            v_perp = _conditional_transport(process, sampler, class_var, ts, 0.0, at_star[1], 0.0)[1]
        with np.errstate(all="ignore"):
            distortion = (0.5 * (v_perp / class_var - 1 - np.log(v_perp / class_var))
                          + rho * (r - 1) ** 2 / (2 * class_var))
        good, why = ok, message
        finite = np.isfinite(r) and all(np.isfinite(v) and v > 0 for v in (v_par, v_perp)) and np.isfinite(distortion)
        if ok and not finite:
            good, why = False, (f"degenerate prediction: r = {r:.3g}, var_par = {v_par:.3g}, var_perp = {v_perp:.3g} "
                                "(a variance underflows or overflows at these parameters)")
        out.append(MeanFieldPrediction(dict(inputs, alpha=float(alpha)), None if np.isnan(ts) else float(ts),
                                       *at_star, float(r), float(v_par), float(v_perp), float(distortion),
                                       None if np.isnan(ts) else 1.0, phase, nfev, good, why, bulk, alpha_c,
                                       entropy))
    return out


def condensation_alpha(bulk, process, mean_var, class_var, rho, points=2000):
    r"""The largest alpha at which particles of the guided ``bulk`` condense on the target (eq. 49).

    At each time the target's log-weight per dimension along the bulk, :math:`\phi_c(t)`, is matched
    by the free entropy of :math:`e^{\alpha_0(t) d}` other classes
    (cfgphase.solvers.theory.condensation.alpha_at_free_entropy); the gap decreases in alpha, so
    the particles condense (t* exists) exactly for :math:`\alpha \le \max_t \alpha_0(t)`. Evaluated on
    the solver's steps and ``points`` uniform times; 0 if they never do (alpha_0 < 0 throughout).
    """
    t_max = float(bulk.times.max())
    times = np.union1d(bulk.times, np.linspace(0.0, t_max, points))
    m, v = bulk(times)
    target = target_log_weight(m[0], v[1], times, process, rho, class_var)
    alpha0, _ = alpha_at_free_entropy(target, rho * m[0] ** 2 + v[1], times, process, mean_var, class_var)
    return float(max(np.max(alpha0), 0.0))


def _variance_after_spread_condensation(pair, process, omega, sampler, alpha, mean_var, class_var, rho, t_star, r, v):
    r"""Variance along :math:`\mu_c` just after :math:`t^*`, from the spread of condensation times (eq. 27).

    With :math:`\Delta(t; r, v)` the target log-weight minus the bulk free entropy, a particle at
    :math:`r + \delta y/|\mu_c|` with :math:`|x_\perp|^2/d = v + \xi/\sqrt d` condenses at
    :math:`t^* + \delta t`, :math:`\delta t = -(\partial_r\Delta\,\delta y/\sqrt\rho + \partial_v\Delta\,\xi)/(\sqrt d\,\dot{\bar\Delta})`,
    and moves by :math:`\sqrt{\rho d}\,\Delta v_r\,\delta t` relative to the bulk, where
    :math:`\Delta v_r` is the guided minus conditional velocity of r. With
    :math:`\delta y \sim \mathcal N(0, v)` and :math:`\xi \sim \mathcal N(0, 2v^2)` independent:
    :math:`v(1 - \Delta v_r\partial_r\Delta/\dot{\bar\Delta})^2 + 2 v^2\rho(\Delta v_r\partial_v\Delta/\dot{\bar\Delta})^2`.
    Partial derivatives by central differences (h = 1e-6; the functions are smooth in the
    annealed phase, where guided condensation happens).
    """
    def gap(t, r_, v_):
        return condensation_gap(t, r_, v_, alpha, process, mean_var, class_var, rho)

    h = 1e-6
    d_r = (gap(t_star, r + h, v) - gap(t_star, r - h, v)) / (2 * h)
    d_v = (gap(t_star, r, v + h) - gap(t_star, r, v - h)) / (2 * h)
    d_t = (gap(t_star + h, r, v) - gap(t_star - h, r, v)) / (2 * h)
    y = np.array([r, 0.0, np.log(v), np.log(v)])
    segment = (t_star, t_star + 1e-6)  # guidance as it is just before condensation (t > t*)
    guided = moment_rhs(pair, process, omega, sampler, segment)(t_star, y)
    conditional = moment_rhs(pair, process, 0.0, sampler, segment)(t_star, y)
    gap_rate = d_t + d_r * guided[0] + d_v * guided[3] * v  # along the bulk: r' and v' = v (log v)'
    dv_r = guided[0] - conditional[0]
    return v * (1 - dv_r * d_r / gap_rate) ** 2 + 2 * v * v * rho * (dv_r * d_v / gap_rate) ** 2


def _conditional_transport(process, sampler, class_var, t, mean, var, target_mean, t_to=0.0):
    r"""Gaussian law (mean, var) at time t carried to ``t_to`` (default 0) by unguided sampling of
    :math:`\mathcal N(\mu, s^2)` (eq. 29): the probability-flow map
    :math:`x_{t'} = a_{t'}\mu + \sqrt{\Gamma_{t'}/\Gamma_t}\,(x_t - a_t\mu)`, or the exact reverse-SDE
    transition (eq. 12) with the posterior mean frozen at its exact value. ``target_mean`` is the mean
    along the direction (1 for the overlap ratio, 0 orthogonally); the variance is carried alike in
    every direction."""
    if sampler == "ode":
        k = np.sqrt(process.class_var(t_to, class_var) / process.class_var(t, class_var))
        return process.a(t_to) * target_mean + k * (mean - process.a(t) * target_mean), k * k * var
    rho, shift, noise = process.reverse_transition(t, t_to, class_var)
    return rho * mean + shift * target_mean, rho * rho * var + noise


def prediction_grid(alphas, omegas, sampler="ode", process="ou", mean_var=1.0, class_var=0.25, t_max=None,
                    workers=1):
    r"""Mean-field predictions on an (alpha, omega) grid of constant weights: arrays of shape
    (len(alphas), len(omegas)) keyed ``t_condensation`` (NaN: no condensation), ``mean_ratio``,
    ``var_par``, ``var_perp``, ``distortion``, ``success``. One bulk integration per omega
    (:func:`guided_predictions`); ``workers`` > 1 spreads the omegas over processes.
    """
    alphas = np.asarray(alphas, dtype=float)
    omegas = [float(w) for w in np.atleast_1d(omegas)]
    job = partial(_grid_column, alphas, sampler=sampler, process=process, mean_var=mean_var, class_var=class_var,
                  t_max=t_max)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            columns = list(pool.map(job, omegas, chunksize=max(1, len(omegas) // (4 * workers))))
    else:
        columns = [job(w) for w in omegas]
    return {key: np.stack([c[key] for c in columns], axis=1) for key in GRID_KEYS}


GRID_KEYS = ("t_condensation", "mean_ratio", "var_par", "var_perp", "distortion", "success")


def _grid_column(alphas, omega, **options):
    preds = guided_predictions(alphas, omega, **options)
    column = {key: np.array([getattr(p, key) for p in preds], dtype=float) for key in GRID_KEYS
              if key != "t_condensation"}
    column["t_condensation"] = np.array([np.nan if p.t_condensation is None else p.t_condensation for p in preds])
    return column


@dataclass
class EffectivePotential:
    """The two branches of the per-dimension log-weight as functions of the overlap ratio r (eq. 26)."""

    r: np.ndarray  #: overlap ratios x.mu_c / |mu_c|^2
    target: np.ndarray  #: target branch -(rho (r - a_t)^2 + v_perp) / (2 Gamma_t)
    others: np.ndarray  #: free entropy of the other classes at q = rho r^2 + v_perp
    potential: np.ndarray  #: -max(target, others): the d -> infinity effective potential
    crossings: np.ndarray  #: overlaps where the branches cross (linear interpolation)
    phases: list  #: 'annealed' / 'frozen' of the other classes at each r


def effective_potential(r, t, alpha, v_perp, process="ou", mean_var=1.0, class_var=0.25):
    r"""Effective potential of the overlap at time t, with its target and bulk branches (eq. 26).

    A particle with overlap ratio r and orthogonal variance ``v_perp`` has posterior condensed on
    the target where the target branch is above the other classes' free entropy. ``r`` is an
    array; the result's ``crossings`` are the overlaps where the branches exchange.
    """
    process = get_process(process)
    r = np.asarray(r, dtype=float)
    target = target_log_weight(r, v_perp, t, process, mean_var, class_var)  # rho = mean_var (d -> infinity)
    frees = others_free_entropy(alpha, mean_var * r**2 + v_perp, t, process, mean_var, class_var)
    others = np.asarray(frees.phi)
    diff = target - others
    idx = np.nonzero(np.diff(np.sign(diff)))[0]
    crossings = r[idx] - diff[idx] * (r[idx + 1] - r[idx]) / (diff[idx + 1] - diff[idx])
    return EffectivePotential(r, target, others, -np.maximum(target, others), crossings, list(np.atleast_1d(frees.phase)))


def distortion_boundary(alphas, threshold, sampler="ode", process="ou", mean_var=1.0, class_var=0.25,
                        omega_max=20.0, t_max=None):
    r"""For each alpha, the guidance weight omega_c >= 0 at which the predicted distortion per
    dimension reaches ``threshold`` (brentq; NaN where omega_max does not reach it). Above the
    curve in the (alpha, omega) plane the distortion is macroscopic.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")

    def excess(omega, alpha):
        return guided_prediction(alpha, omega, process=process, sampler=sampler, mean_var=mean_var,
                                 class_var=class_var, t_max=t_max).distortion - threshold

    out = []
    for alpha in np.atleast_1d(alphas):
        if excess(omega_max, alpha) < 0:
            out.append(np.nan)
        elif excess(0.0, alpha) >= 0:
            out.append(0.0)
        else:
            out.append(brentq(excess, 0.0, omega_max, args=(alpha,), xtol=1e-8))
    return np.array(out)


def finite_d_distortion(prediction, d):
    r"""Distortion per dimension at dimension d: the d -> infinity value plus the direction of
    :math:`\mu_c`, :math:`\tfrac{1}{2d}(v_\parallel/s^2 - 1 - \log(v_\parallel/s^2))` (eq. 13 at finite d, eq. 28)."""
    ratio = prediction.var_par / prediction.inputs["class_var"]
    return prediction.distortion + 0.5 * (ratio - 1 - np.log(ratio)) / d


def subexponential_distortion(classes, dims, omega=None, guidance_scale=None, sampler="ode", process="ou",
                              mean_var=1.0, class_var=0.25, t_max=None):
    r"""Predicted distortion per dimension at each d when K grows slower than e^{alpha d} (eq. 28).

    ``classes`` is a fixed K or a callable ``K(d)`` (e.g. ``lambda d: d**2``); each d uses the
    mean-field theory at :math:`\alpha_{eff} = \log K(d)/d` and :func:`finite_d_distortion`.
    As d grows, t* ~ (1/2) log d and the distortion vanishes. Any K(d) is accepted: for K = e^{alpha d}
    it tends to the d -> infinity distortion (the figure of cfgphase.solvers.figures.data.distortion_versus_d
    draws all three regimes with it). One bulk integration serves every d (:func:`guided_predictions`).
    Returns (dims, distortions).
    """
    dims = np.atleast_1d(np.asarray(dims, dtype=int))
    alphas = []
    for d in dims:
        K = classes(d) if callable(classes) else classes
        if K < 1 or d < 1:
            raise ValueError(f"classes and dims must be >= 1, got K={K}, d={d}")
        alphas.append(np.log(K) / d)
    preds = guided_predictions(alphas, omega, guidance_scale, process, sampler, mean_var, class_var, t_max)
    return dims, np.array([finite_d_distortion(pred, d) for pred, d in zip(preds, dims)])
