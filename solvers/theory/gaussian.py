r"""Exact guided dynamics of jointly Gaussian conditional and unconditional models.

Per eigendirection the guided class-mean estimate is affine in x (eqs. 8, 10),
:math:`\hat m_\omega = -\omega\alpha_t x + (1+\omega)\mu_c - \omega\beta_t`, so the samplers of
cfgphase.solvers.sampling.steppers are linear and the mean m and variance v of the particles obey closed ODEs
(docs/theory.md eqs. 16-17), integrated here backwards from :math:`t_{max}` with scipy's
``solve_ivp`` (DOP853, LSODA where stiff; in the variables m and log v):

probability-flow ODE:  :math:`\dot m = L m + B\beta_\omega,\ \dot v = 2 L v`, :math:`L = A + B\alpha_\omega`;
reverse SDE:           :math:`\dot m = L m - \kappa\beta_\omega,\ \dot v = 2 L v - g^2`,
:math:`L = \lambda - \kappa\alpha_\omega`.

:func:`design_schedule` solves for the one free parameter of a schedule family (linear window,
positive-then-switch, piecewise constant) that meets a target (variance preserved, or a given
mean shift) with scipy's ``brentq``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from cfgphase.physics.gaussian import GaussianPair, kl_divergence
from cfgphase.physics.guidance import as_guidance
from cfgphase.physics.model import GaussianModel
from cfgphase.physics.processes import get_process
from cfgphase.physics.statistics import describe
from cfgphase.physics.schedules import LinearSchedule, PiecewiseConstant, SwitchSchedule, bind_schedule, needs_grid
from cfgphase.physics.weights import excess_weight, guided_mean, weight_at
from cfgphase.solvers.sampling.sampler import INITS, as_sampler
from cfgphase.solvers.sampling.timegrid import check_grid, default_t_max, time_grid


@dataclass
class GaussianPrediction:
    """Final mean and variance per eigendirection, the inputs behind them and solver counters."""

    mean: np.ndarray  #: (d,)
    var: np.ndarray  #: (d,)
    pair: GaussianPair
    inputs: dict
    nfev: int
    success: bool
    message: str

    def summary(self):
        """JSON-ready record with the keys of ``cfgphase simulate`` (eq. 18), None where undefined."""
        p = self.pair
        mu2 = float(p.mean_c @ p.mean_c)
        with np.errstate(all="ignore"):  # a failed prediction's NaN moments give NaN statistics
            kl = float(np.mean(kl_divergence(self.mean, self.var, p.mean_c, p.var_c)))
        u = p.mean_c / np.sqrt(mu2) if mu2 > 0 else None
        var_par = None if u is None else float(self.var @ u**2)
        var_perp = None if u is None or p.d < 2 else float((self.var.sum() - var_par) / (p.d - 1))
        out = dict(self.inputs)
        out.update(
            mean=self.mean.tolist() if p.d > 1 else float(self.mean[0]),
            var=self.var.tolist() if p.d > 1 else float(self.var[0]),
            mean_conditional=p.mean_c.tolist() if p.d > 1 else float(p.mean_c[0]),
            var_conditional=p.var_c.tolist() if p.d > 1 else float(p.var_c[0]),
            mean_ratio=None if u is None else float(self.mean @ p.mean_c / mu2),
            var_par=var_par,
            var_perp=var_perp,
            distortion=kl,
            accuracy=None,
            inv_prob=None,
            t_condensation=None,
            nfev=self.nfev,
            success=self.success,
            message=self.message,
        )
        return out

    def to_xarray(self):
        """An ``xarray.Dataset``: ``mean``, ``var``, ``mean_conditional``, ``var_conditional`` over
        ``coordinate`` (eigendirections), the final statistics as scalars (NaN where not defined), and
        the inputs in ``attrs``."""
        import xarray as xr

        p, record = self.pair, self.summary()
        data = {name: xr.Variable(("coordinate",), values, {"long_name": text, "units": units}) for
                name, values, text, units in (
                    ("mean", self.mean, "final mean of guided sampling", "data units"),
                    ("var", self.var, "final variance of guided sampling", "data units^2"),
                    ("mean_conditional", p.mean_c, "mean of the conditional", "data units"),
                    ("var_conditional", p.var_c, "variance of the conditional", "data units^2"))}
        for key in ("mean_ratio", "var_par", "var_perp", "distortion"):
            meaning, units = describe(key)
            value = record[key]
            data[key] = xr.Variable((), np.nan if value is None else value, {"long_name": meaning, "units": units})
        attrs = {k: (np.nan if v is None else v) for k, v in self.inputs.items() if not isinstance(v, list)}
        attrs.update(kind="gaussian prediction", nfev=self.nfev, success=int(self.success), message=self.message)
        return xr.Dataset(data, attrs=attrs)


def gaussian(model, guidance=None, *, sampler="ode"):
    r"""Exact final moments of guided sampling of a :class:`~cfgphase.physics.model.GaussianModel`
    (eqs. 16-18), for any guidance schedule and either sampler; returns a :class:`GaussianPrediction`.

    ``guidance``: a Guidance (linear CFG), a number (omega) or None (omega = 1). ``sampler``: 'ode',
    'sde' or a Sampler (its ``t_max``, ``t_min`` and ``init`` are used; for schedules defined on the
    sampler's steps, its grid is built as a simulation would).
    """
    if not isinstance(model, GaussianModel):
        raise ValueError(f"model: the Gaussian closed forms need a GaussianModel, got {type(model).__name__}")
    guidance = as_guidance(guidance)
    if guidance.rule.name != "cfg":
        raise ValueError(f"rule: the Gaussian closed forms cover linear CFG, got {guidance.rule.name!r}")
    sampler = as_sampler(sampler)
    process, pair = model.process, model.pair
    grid = None
    if not isinstance(sampler.grid, str):
        grid = sampler.grid
    elif needs_grid(guidance.weight):
        t_max = default_t_max(process, pair.signal_var) if sampler.t_max is None else sampler.t_max
        grid = time_grid(process, sampler.steps, t_max, sampler.t_min, kind=sampler.grid, class_var=pair.var_c)
    return gaussian_moments(pair, process, omega=guidance.weight, sampler=sampler.kind, t_max=sampler.t_max,
                            t_min=sampler.t_min, init=sampler.init, grid=grid)


def moment_rhs(pair, process, omega, sampler, segment):
    """Right-hand side of eqs. (16)/(17) in (m, log v) on one segment between breakpoints.

    ``omega`` is read strictly inside the segment (low, high); returns ``rhs(t, y)``.
    """
    nu, d = pair.reference_var, pair.d
    low, high = min(segment), max(segment)
    margin = 1e-9 * (high - low)

    # the state is (m, log v): v spans orders of magnitude (VE starts at v ~ t_max)
    def rhs(t, y):
        m, v = y[:d], np.exp(y[d:])
        w = weight_at(omega, min(max(t, low + margin), high - margin))
        alpha_u, beta_u = pair.unconditional_estimate_coefficients(t, process)
        slope = guided_mean(0.0, alpha_u, w)  # -omega alpha_u
        intercept = guided_mean(pair.mean_c, beta_u, w)  # (1 + omega) mu_c - omega beta_u
        if sampler == "ode":
            A, B = process.ode_coefficients(t, nu)
            rate = A + B * slope
            return np.concatenate([rate * m + B * intercept, np.broadcast_to(2 * rate, (d,))])
        lam, kappa, g2 = process.sde_coefficients(t, nu)
        rate = lam - kappa * slope
        return np.concatenate([rate * m - kappa * intercept, 2 * rate - g2 / v])

    return rhs


def gaussian_moments(pair, process="ou", omega=None, guidance_scale=None, sampler="ode", t_max=None, t_min=None,
                     init="unconditional", grid=None):
    r"""Exact final mean and variance of guided sampling for a :class:`GaussianPair` (eqs. 16-17).

    Parameters
    ----------
    pair : GaussianPair
        Conditional :math:`\mathcal N(\mu_c,\lambda_c)`, unconditional :math:`\mathcal N(\mu_u,\lambda_u)`.
    process : {'ou', 've', 'flow'}
    omega, guidance_scale : float or callable of forward time t
        Excess weight (``guidance_scale = 1 + omega``); schedules with ``breakpoints``
        (cfgphase.physics.schedules) are integrated piecewise.
    sampler : {'ode', 'sde'}
    t_max, t_min : float
        Start (default: data signal-to-noise ratio 1e-4, as in :func:`cfgphase.solvers.sampling.driver.integrate`) and
        end of sampling (default 0).
    init : {'unconditional', 'conditional'}
        Initial law at t_max: the exact noised unconditional (or conditional) Gaussian.
    grid : array_like, optional
        The sampler's forward times, for schedules defined on its steps (TV-CFG, step-up/down,
        a switch after a fraction of the steps); ``t_max`` and ``t_min`` then default to its ends.

    Returns
    -------
    GaussianPrediction
    """
    process = get_process(process)
    omega = bind_schedule(excess_weight(omega, guidance_scale), process=process)
    if grid is not None:
        grid = check_grid(grid, process)
        t_max = float(grid[0]) if t_max is None else t_max
        t_min = float(grid[-1]) if t_min is None else t_min
        omega = bind_schedule(omega, grid=grid)
    elif needs_grid(omega):
        raise ValueError("grid: this schedule is defined on the sampler's steps; pass the sampler's grid")
    t_min = 0.0 if t_min is None else t_min
    if sampler not in ("ode", "sde"):
        raise ValueError(f"sampler must be 'ode' or 'sde', got {sampler!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if t_max is None:
        t_max = default_t_max(process, pair.signal_var)
    t_max, t_min = float(process.check_times(t_max, "t_max")), float(process.check_times(t_min, "t_min"))
    if not t_max > t_min:
        raise ValueError(f"t_max must be larger than t_min, got t_max={t_max}, t_min={t_min}")
    if sampler == "sde" and float(process.a(t_max)) <= 0:
        raise ValueError("t_max: the reverse SDE is singular where a_t = 0 (flow at t = 1)")
    weight_at(omega, t_max)
    mean0, var0 = pair.noised_moments(t_max, process, conditional=init == "conditional")
    mean, var, _, nfev, success, message = integrate_moments(pair, process, omega, sampler, t_max, t_min, mean0, var0)
    if not success:  # no moments: NaN, the message says why
        mean, var = np.full(pair.d, np.nan), np.full(pair.d, np.nan)
    elif not (np.all(np.isfinite(mean)) and np.all(var > 0) and np.all(np.isfinite(var))):
        success, message = False, (f"degenerate moments: the variance reaches {float(np.min(var)):.3g} "
                                   "(it underflows at this guidance weight)")
    d = pair.d
    inputs = dict(
        d=d, K=None, alpha=None, omega=None if callable(omega) else omega,
        guidance_scale=None if callable(omega) else 1.0 + omega, mean_var=None,
        class_var=float(pair.var_c[0]) if d == 1 else pair.var_c.tolist(),
        process=process.name, sampler=sampler, schedule=repr(omega) if callable(omega) else "constant",
        t_max=t_max, t_min=t_min, init=init,
    )
    return GaussianPrediction(mean, var, pair, inputs, nfev, success, message)


@dataclass
class MomentTrajectory:
    """Dense solution of eqs. (16)/(17) between breakpoints; ``traj(t)`` gives (mean, var), each (d, n)."""

    segments: list  #: (low, high, scipy OdeSolution in (m, log v)) per segment
    times: np.ndarray  #: the solver's step times, decreasing from t_from to t_to
    d: int

    def __call__(self, t):
        t = np.atleast_1d(np.asarray(t, dtype=float))
        y = np.full((2 * self.d, t.size), np.nan)
        for low, high, sol in self.segments:
            inside = (t >= low) & (t <= high)
            if np.any(inside):
                y[:, inside] = sol(t[inside])
        return y[:self.d], np.exp(y[self.d:])


#: The solvers tried on each segment, in order, with their tolerances and evaluation budgets: the
#: explicit DOP853 for the usual, non-stiff equations; where strong guidance makes them stiff (its
#: cost grows like |omega|: 1.9 s at 1e4, no answer at 1e6) LSODA, which switches to a stiff method
#: (0.05-0.4 s from omega = 1 to 1e10, agreeing with DOP853 to 1e-12 where both finish).
SOLVERS = (("DOP853", 1e-10, 1e-13, 20_000), ("LSODA", 1e-13, 1e-15, 50_000))


class _Budget(Exception):
    pass


def integrate_moments(pair, process, omega, sampler, t_from, t_to, mean, var, dense=False):
    """Integrate eqs. (16)/(17) from ``t_from`` down to ``t_to``, piecewise between breakpoints.

    Each segment is integrated by the first of :data:`SOLVERS` that finishes within its budget.
    Returns ``(mean, var, trajectory, nfev, success, message)``; ``trajectory`` is a
    :class:`MomentTrajectory` when ``dense`` (else None). A problem neither solver can integrate
    (|omega| of order 1e20, overflow) returns ``success = False`` with the reason, never raises.
    """
    d = pair.d
    cuts = sorted({t_from, t_to, *(b for b in getattr(omega, "breakpoints", ()) if t_to < b < t_from)}, reverse=True)
    y = np.concatenate([mean, np.log(var)])
    nfev, segments, times = 0, [], [np.array([t_from])]
    for start, stop in zip(cuts[:-1], cuts[1:]):
        rhs = moment_rhs(pair, process, omega, sampler, (start, stop))
        for method, rtol, atol, budget in SOLVERS:
            calls = [0]

            def counted(t, y_, budget=budget):
                calls[0] += 1
                if calls[0] > budget:
                    raise _Budget
                return rhs(t, y_)

            try:
                with np.errstate(over="raise", invalid="raise", divide="raise"):
                    sol = solve_ivp(counted, (start, stop), y, method=method, rtol=rtol, atol=atol,
                                    dense_output=dense)
                break
            except _Budget:
                nfev += calls[0]
                failure = f"the moment equations need more than {budget} evaluations on [{stop:.4g}, {start:.4g}]"
            except (ArithmeticError, ValueError) as err:  # overflow, or steps below float resolution
                nfev += calls[0]
                failure = (f"the moment equations cannot be integrated on [{stop:.4g}, {start:.4g}] ({err}); "
                           "the guidance weight is too large")
        else:
            return y[:d], np.exp(y[d:]), None, nfev, False, failure
        nfev += sol.nfev
        if not sol.success or not np.all(np.isfinite(sol.y[:, -1])):
            return y[:d], np.exp(y[d:]), None, nfev, False, sol.message if not sol.success else "non-finite moments"
        y = sol.y[:, -1]
        if dense:
            segments.append((stop, start, sol.sol))
            times.append(sol.t[1:])
    trajectory = MomentTrajectory(segments, np.concatenate(times), d) if dense else None
    return y[:d].copy(), np.exp(y[d:]), trajectory, nfev, True, "ok"


# --- schedule design ------------------------------------------------------------------------

FAMILIES = ("linear", "switch", "piecewise")
TARGETS = ("variance", "mean_shift")


@dataclass
class ScheduleDesign:
    """The designed schedule, its free parameter, the prediction it gives and the root-finder's counters."""

    schedule: object
    parameter: float
    prediction: GaussianPrediction
    iterations: int
    converged: bool


def _family(family, fixed):
    if family == "linear":  # free: w0; fixed: slope (and floor)
        return lambda p: LinearSchedule(p, fixed["slope"], fixed.get("floor", -1.0))
    if family == "switch":  # free: t_switch; fixed: omega (and after)
        return lambda p: SwitchSchedule(fixed["omega"], p, fixed.get("after", -1.0))
    if family == "piecewise":  # free: values[index]; fixed: breaks, values, index
        def build(p):
            values = np.array(fixed["values"], dtype=float)
            values[fixed["index"]] = p
            return PiecewiseConstant(fixed["breaks"], values)
        return build
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def design_schedule(pair, family, bracket, target="variance", value=None, process="ve", sampler="ode",
                    t_max=None, t_min=0.0, xtol=1e-10, **fixed):
    r"""Solve for the free parameter of a schedule family that meets a target (one eigendirection).

    Families (the free parameter first; the others are keyword arguments):
    ``linear`` w0 with ``slope`` (cfgphase.physics.schedules.LinearSchedule); ``switch`` t_switch with
    ``omega``; ``piecewise`` ``values[index]`` with ``breaks``, ``values``, ``index``.
    Targets: ``variance`` (final variance equal to ``value``, default :math:`\lambda_c`: the
    variance is preserved) or ``mean_shift`` (final mean minus :math:`\mu_c` equal to ``value``).
    ``bracket`` = (low, high) must enclose a sign change of the target's residual.
    """
    if pair.d != 1:
        raise ValueError("pair: the schedule designer works on one eigendirection (d = 1)")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if target == "mean_shift" and value is None:
        raise ValueError("value: a mean_shift target needs a value")
    goal = (float(pair.var_c[0]) if value is None else float(value)) if target == "variance" else float(value)
    build = _family(family, fixed)

    def predict(p):
        return gaussian_moments(pair, process, omega=build(p), sampler=sampler, t_max=t_max, t_min=t_min)

    def residual(p):
        pred = predict(p)
        got = pred.var[0] if target == "variance" else pred.mean[0] - pair.mean_c[0]
        return got - goal

    low, high = map(float, bracket)
    r_low, r_high = residual(low), residual(high)
    if np.sign(r_low) == np.sign(r_high):
        raise ValueError(f"bracket: no {family} schedule in [{low}, {high}] meets the {target} target "
                         f"(residuals {r_low:.3g} and {r_high:.3g} have the same sign)")
    root, info = brentq(residual, low, high, xtol=xtol, full_output=True)
    return ScheduleDesign(build(root), root, predict(root), info.iterations, info.converged)
