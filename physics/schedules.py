r"""Guidance schedules :math:`\omega(t)`: the excess weight as a function of forward time.

Convention (docs/theory.md eq. 9): the guided score is :math:`s_c + \omega(t)(s_c - s_u)`;
``guidance_scale`` :math:`w = 1 + \omega` is accepted by name wherever a weight is. Time is the
forward time of the process (t = 0 is data); sampling runs from large t to small t, so "early in
sampling" means large t. Any callable ``omega(t) -> float`` is a schedule. The classes here also
list their ``breakpoints`` (times where :math:`\omega` or its slope jumps), so that samplers put
grid nodes there and ODE solvers integrate piecewise.

Some schedules are defined through the noise level or the sampler's own grid. They are
*bound* before use (:func:`bind_schedule`): ``bind(process=...)`` turns noise levels into times,
``bind(grid=...)`` places step-indexed weights on the grid's intervals. Unbound, they raise.

Noise level: :math:`\sigma = \sigma_t/a_t` (Karras et al.'s :math:`\sigma`); the *VE-equivalent
time* is :math:`\tau = \sigma^2 = \sigma_t^2/a_t^2`, equal to t for the VE process (eq. 32).

==============  ==================================================================  =====================
name            :math:`\omega(t)`                                                   source
==============  ==================================================================  =====================
``constant``    :math:`\omega`                                                      Ho & Salimans 2022
``interval``    :math:`\omega` while :math:`\sigma\in(\sigma_{lo},\sigma_{hi}]`, 0  Kynkaanniemi et al. 2024
                (conditional) outside; or a window in t
``linear``      :math:`\max(w_0 + \text{slope}\cdot\tau, -1)`, :math:`\tau` the     Ventura et al. 2026
                VE-equivalent time (or the process's own time)
``switch``      :math:`\omega` until the switch, then ``after`` (default -1,        Ventura et al. 2026
                unconditional); the switch at a time or a fraction of the steps
``tvcfg``       symmetric triangle in the step index, 1 at both ends, normalised   Jin, Shi & Gu 2025
                so that its grid time-average is the requested mean weight
``step-up``     low (1/3 of high) for the first 25 % of steps, then high;          Jin, Shi & Gu 2025
                normalised to the requested mean weight ("late high")
``step-down``   high for the first 25 % of steps, then low ("early high")          Jin, Shi & Gu 2025
``piecewise``   ``values[i]`` between ``breaks[i-1]`` and ``breaks[i]``            --
``spline``      a smooth curve through ``values`` at noise levels ``sigmas``        --
==============  ==================================================================  =====================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from cfgphase.physics.weights import excess_weight

#: Marks a parameter without a default.
REQUIRED = object()


def _finite(value, name):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _check_floor(values, name):
    """Built-in schedules never go below omega = -1 (guidance_scale 0): the conditional score
    would enter with a negative sign."""
    low = float(np.min(values))
    if low < -1.0 - 1e-12:
        raise ValueError(f"{name}: the weight must stay >= -1 (guidance_scale >= 0), got omega = {low:.6g}")


def noise_level_time(process, sigma):
    r"""Forward time at which the noise level :math:`\sigma_t/a_t` equals ``sigma`` (eq. 32)."""
    sigma = float(sigma)
    if sigma <= 0:
        return 0.0
    return float(min(process.time_at_snr(1.0 / sigma**2), process.t_upper))


def ve_time(process, t):
    r"""VE-equivalent time :math:`\tau = \sigma_t^2/a_t^2` (eq. 32); infinite where :math:`a_t = 0`."""
    a = process.a(t)
    with np.errstate(divide="ignore"):
        return np.where(a > 0, process.var(t) / np.maximum(a, 1e-300) ** 2, np.inf)


class Schedule(ABC):
    """Base class: a weight of forward time with its breakpoints.

    Subclasses set ``name``, ``source``, ``summary`` and ``PARAMETERS`` (name -> (default,
    description), in the order of the constructor), which ``cfgphase schedules`` lists.
    """

    name = ""
    source = ""
    summary = ""
    PARAMETERS: dict = {}
    breakpoints: tuple = ()

    def bind(self, process=None, grid=None):
        """The schedule as a plain function of t for this process and sampler grid (default: itself)."""
        return self

    @abstractmethod
    def __call__(self, t):
        """Excess weight omega at forward time t."""

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.PARAMETERS if getattr(self, k, None) is not None)
        return f"{type(self).__name__}({args})"


class PiecewiseConstant(Schedule):
    """``values[i]`` between ``breaks[i-1]`` and ``breaks[i]`` (forward time, counted from t = 0):
    ``values[0]`` for t < breaks[0], ``values[-1]`` for t >= breaks[-1]."""

    name = "piecewise"
    summary = "values[i] on the i-th interval of the increasing breaks (len(values) = len(breaks) + 1)"
    PARAMETERS = {"breaks": (REQUIRED, "increasing forward times"), "values": (REQUIRED, "excess weights (>= -1)")}

    def __init__(self, breaks, values):
        self.breaks = np.atleast_1d(np.asarray(breaks, dtype=float))
        self.values = np.atleast_1d(np.asarray(values, dtype=float))
        if self.values.size != self.breaks.size + 1:
            raise ValueError(f"values must have len(breaks) + 1 = {self.breaks.size + 1} entries, "
                             f"got {self.values.size}")
        if not np.all(np.isfinite(self.breaks)) or np.any(self.breaks < 0) or np.any(np.diff(self.breaks) <= 0):
            raise ValueError("breaks must be finite, non-negative and strictly increasing")
        if not np.all(np.isfinite(self.values)):
            raise ValueError("values must be finite")
        _check_floor(self.values, "values")

    def __call__(self, t):
        return float(self.values[np.searchsorted(self.breaks, t, side="right")])

    @property
    def breakpoints(self):
        return tuple(self.breaks.tolist())

    def __repr__(self):
        return f"PiecewiseConstant(breaks={self.breaks.tolist()}, values={self.values.tolist()})"


class Constant(Schedule):
    """The same excess weight at every time (``omega`` or ``guidance_scale``)."""

    name = "constant"
    source = "Ho & Salimans 2022"
    summary = "omega at every time"
    PARAMETERS = {"omega": (1.0, "excess weight (or guidance_scale = 1 + omega)")}

    def __init__(self, omega=None, guidance_scale=None):
        self.omega = _finite(excess_weight(omega, guidance_scale), "omega")

    def __call__(self, t):
        return self.omega


class LimitedInterval(Schedule):
    r"""Guidance only inside a window of noise levels (or of times), conditional sampling outside.

    :math:`\omega` for :math:`\sigma_t/a_t \in (\sigma_{lo}, \sigma_{hi}]` and 0 elsewhere
    (Kynkaanniemi et al. 2024; their EDM2 optimum is w = 2 on about [0.28, 1.61]). With
    ``t_lo``/``t_hi`` instead, the window is :math:`t \in (t_{lo}, t_{hi}]` in the process's own
    time. Bound to a process (the noise levels become times, eq. 32).
    """

    name = "interval"
    source = "Kynkaanniemi et al. 2024"
    summary = "omega while the noise level sigma_t/a_t is in (sigma_lo, sigma_hi] (or t in (t_lo, t_hi]), 0 outside"
    PARAMETERS = {
        "omega": (1.0, "excess weight inside the window (or guidance_scale)"),
        "sigma_lo": (None, "lower noise level of the window (exclusive)"),
        "sigma_hi": (None, "upper noise level of the window (inclusive)"),
        "t_lo": (None, "or: lower forward time of the window"),
        "t_hi": (None, "or: upper forward time of the window"),
    }

    def __init__(self, omega=None, guidance_scale=None, sigma_lo=None, sigma_hi=None, t_lo=None, t_hi=None):
        self.omega = _finite(excess_weight(omega, guidance_scale), "omega")
        _check_floor(self.omega, "omega")
        by_sigma = sigma_lo is not None or sigma_hi is not None
        by_time = t_lo is not None or t_hi is not None
        if by_sigma == by_time:
            raise ValueError("sigma_lo/sigma_hi: give the window in noise level (sigma_lo, sigma_hi) "
                             "or in time (t_lo, t_hi), not both and not neither")
        lo_name, hi_name = ("sigma_lo", "sigma_hi") if by_sigma else ("t_lo", "t_hi")
        lo, hi = (sigma_lo, sigma_hi) if by_sigma else (t_lo, t_hi)
        lo = 0.0 if lo is None else _finite(lo, lo_name)
        hi = math.inf if hi is None else float(hi)
        if lo < 0 or math.isnan(hi):
            raise ValueError(f"{lo_name}: the window must lie in [0, inf), got ({lo}, {hi}]")
        if not hi > lo:
            raise ValueError(f"{hi_name}: the window ({lo}, {hi}] is empty")
        self.sigma_lo, self.sigma_hi = (lo, hi) if by_sigma else (None, None)
        self.t_lo, self.t_hi = (None, None) if by_sigma else (lo, hi)
        self._window = None if by_sigma else (lo, hi)

    def bind(self, process=None, grid=None):
        if self._window is not None or process is None:
            if self._window is not None and process is not None and self.t_lo >= process.t_upper:
                raise ValueError(f"t_lo: the window starts at t = {self.t_lo}, beyond the {process.name} "
                                 f"process's time range [0, {process.t_upper}]")
            return self
        bound = LimitedInterval(self.omega, t_lo=noise_level_time(process, self.sigma_lo),
                                t_hi=noise_level_time(process, self.sigma_hi) if math.isfinite(self.sigma_hi)
                                else math.inf)
        bound.sigma_lo, bound.sigma_hi = self.sigma_lo, self.sigma_hi
        return bound

    def _times(self):
        if self._window is None:
            raise ValueError("the interval schedule in noise level must be bound to a process "
                             "(cfgphase.physics.schedules.bind_schedule)")
        return self._window

    def __call__(self, t):
        lo, hi = self._times()
        return self.omega if lo < t <= hi else 0.0

    @property
    def breakpoints(self):
        if self._window is None:
            return ()
        return tuple(b for b in self._window if 0 < b < math.inf)


class LinearSchedule(Schedule):
    r"""The negative-guidance window of Ventura et al. (2026): :math:`\max(w_0 + \text{slope}\cdot\tau, \text{floor})`.

    With :math:`w_0 < 0 <` slope the weight is positive early in sampling (large :math:`\tau`)
    and negative, down to -1 (unconditional), for :math:`\tau < -w_0/\text{slope}`. ``clock``:
    ``"noise"`` (default) uses the VE-equivalent time :math:`\tau = \sigma_t^2/a_t^2` (eq. 32),
    the paper's VE time and its analogue for OU and flow; ``"time"`` uses the process's own t.
    The source requires :math:`w_0 \ge -1`, slope > 0; ``floor`` is -1 (never below unconditional).
    """

    name = "linear"
    source = "Ventura, Achilli, Ambrogioni & Lucibello 2026"
    summary = "max(w0 + slope tau, -1), tau = sigma_t^2/a_t^2 (VE time; clock='time': the process's t)"
    PARAMETERS = {
        "w0": (REQUIRED, "excess weight at tau = 0 (>= -1)"),
        "slope": (REQUIRED, "d omega / d tau (> 0 for a negative-guidance window)"),
        "floor": (-1.0, "lowest weight (>= -1)"),
        "clock": ("noise", "'noise': tau = sigma_t^2/a_t^2; 'time': the process's forward time"),
    }

    def __init__(self, w0, slope, floor=-1.0, clock="noise"):
        self.w0, self.slope, self.floor = _finite(w0, "w0"), _finite(slope, "slope"), _finite(floor, "floor")
        if self.floor < -1:
            raise ValueError(f"floor must be >= -1 (below -1 the conditional score enters negatively), got {floor}")
        if self.w0 < self.floor and self.slope <= 0:
            raise ValueError("w0 and slope give a schedule that never rises above floor")
        if clock not in ("noise", "time"):
            raise ValueError(f"clock must be 'noise' or 'time', got {clock!r}")
        self.clock = clock
        self._process = None

    def bind(self, process=None, grid=None):
        if self.clock == "time" or process is None:
            return self
        bound = LinearSchedule(self.w0, self.slope, self.floor, self.clock)
        bound._process = process
        return bound

    def _tau(self, t):
        if self.clock == "time":
            return t
        if self._process is None:
            raise ValueError("the linear schedule on the 'noise' clock must be bound to a process "
                             "(cfgphase.physics.schedules.bind_schedule); for VE, clock='time' is the same")
        return float(ve_time(self._process, t))

    def __call__(self, t):
        return max(self.w0 + self.slope * self._tau(t), self.floor)

    @property
    def breakpoints(self):
        if self.slope == 0:
            return ()
        kink = (self.floor - self.w0) / self.slope
        if kink <= 0:
            return ()
        if self.clock == "time":
            return (kink,)
        if self._process is None:
            return ()
        return (noise_level_time(self._process, math.sqrt(kink)),)


class SwitchSchedule(PiecewiseConstant):
    """``omega`` early in sampling, then ``after`` (default -1, the pure unconditional score).

    The switch is at forward time ``t_switch``, or after a ``fraction`` of the sampler's steps
    (third-party ports of Ventura et al.'s Stable Diffusion variant switch at 50-70 %; bound to
    the grid).
    """

    name = "switch"
    source = "Ventura, Achilli, Ambrogioni & Lucibello 2026"
    summary = "omega, then after (-1: unconditional) below t_switch or after a fraction of the steps"
    PARAMETERS = {
        "omega": (1.0, "excess weight before the switch (or guidance_scale)"),
        "t_switch": (None, "forward time of the switch"),
        "fraction": (None, "or: fraction of the steps before the switch, in (0, 1)"),
        "after": (-1.0, "excess weight after the switch"),
    }

    def __init__(self, omega=None, t_switch=None, after=-1.0, fraction=None, guidance_scale=None):
        omega = _finite(excess_weight(omega, guidance_scale), "omega")
        after = _finite(after, "after")
        _check_floor([omega, after], "omega/after")
        if (t_switch is None) == (fraction is None):
            raise ValueError("t_switch: give the switch as a time (t_switch) or a fraction of the steps, not both")
        if t_switch is not None and not _finite(t_switch, "t_switch") > 0:
            raise ValueError(f"t_switch must be > 0, got {t_switch!r}")
        if fraction is not None and not 0 < _finite(fraction, "fraction") < 1:
            raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
        self.omega, self.after = omega, after
        self.t_switch = None if t_switch is None else float(t_switch)
        self.fraction = None if fraction is None else float(fraction)
        super().__init__([1.0 if t_switch is None else t_switch], [after, omega])

    def bind(self, process=None, grid=None):
        if self.fraction is None:
            if process is not None and self.t_switch >= process.t_upper:
                raise ValueError(f"t_switch: {self.t_switch} is outside the {process.name} process's time range")
            return self
        if grid is None:
            return self
        grid = np.asarray(grid, dtype=float)
        steps = grid.size - 1
        index = min(max(int(round(self.fraction * steps)), 1), steps - 1) if steps > 1 else 1
        bound = SwitchSchedule(self.omega, float(grid[index]), self.after)
        bound.fraction = self.fraction
        return bound

    def __call__(self, t):
        if self.t_switch is None:
            raise ValueError("the switch schedule with a fraction of the steps must be bound to the sampler's grid")
        return super().__call__(t)

    @property
    def breakpoints(self):
        return () if self.t_switch is None else (self.t_switch,)

    def __repr__(self):
        where = f"t_switch={self.t_switch}" if self.fraction is None else f"fraction={self.fraction}"
        return f"SwitchSchedule(omega={self.omega}, {where}, after={self.after})"


class _StepSchedule(Schedule):
    """A weight per step of the sampler's grid; subclasses give :meth:`step_omegas`. Bound to the
    grid: step i covers (grid[i+1], grid[i]] and carries ``step_weights[i]``."""

    _bound = None

    @abstractmethod
    def step_omegas(self, grid):
        """Excess weight of each step of the decreasing ``grid``, shape (len(grid) - 1,)."""

    @abstractmethod
    def _copy(self):
        """An unbound copy with the same parameters."""

    def bind(self, process=None, grid=None):
        if grid is None:
            return self
        grid = np.asarray(grid, dtype=float)
        if grid.ndim != 1 or grid.size < 2 or np.any(np.diff(grid) >= 0):
            raise ValueError("grid must be a decreasing 1-D array of at least two forward times")
        omegas = np.asarray(self.step_omegas(grid), dtype=float)
        bound = self._copy()
        # PiecewiseConstant counts its intervals from t = 0
        bound._bound = PiecewiseConstant(grid[::-1][1:-1], omegas[::-1])
        bound.step_weights = omegas
        return bound

    def __call__(self, t):
        if self._bound is None:
            raise ValueError(f"the {self.name} schedule is defined on the sampler's steps and must be bound "
                             "to its grid (cfgphase.physics.schedules.bind_schedule)")
        return self._bound(t)

    @property
    def breakpoints(self):
        return () if self._bound is None else self._bound.breakpoints


class _GridSchedule(_StepSchedule):
    """A weight per step defined in the Ho convention and normalised so that its time-average over
    the grid equals the requested mean (eq. 33)."""

    PARAMETERS = {"omega": (1.0, "time-averaged excess weight (or guidance_scale: its Ho mean w_bar)")}

    def __init__(self, omega=None, guidance_scale=None):
        self.omega = _finite(excess_weight(omega, guidance_scale), "omega")

    @abstractmethod
    def scale_per_step(self, positions, fractions):
        """Ho weights w_i of the steps at normalised positions ``positions`` (uniform in step index, in
        [0, 1]), with ``fractions`` the share of normalised time each step covers."""

    def step_omegas(self, grid):
        steps = grid.size - 1
        positions = np.arange(steps) / max(steps - 1, 1)
        fractions = -np.diff(grid) / (grid[0] - grid[-1])  # tau normalised to [0, 1]
        omegas = self.scale_per_step(positions, fractions) - 1.0
        _check_floor(omegas, "omega")
        return omegas

    def _copy(self):
        return type(self)(self.omega)


class StepwiseSchedule(_StepSchedule):
    """A weight per sampler step from the step's two ends: ``weight(s, t)`` on the step from t to
    s < t (e.g. a learned omega_phi(c, s, t), cfgphase.solvers.design.learned). Bound to the grid."""

    name = "stepwise"
    summary = "weight(s, t) on each step from t to s, from a callable (learned weights)"
    PARAMETERS = {"weight": (REQUIRED, "callable (s, t) -> excess weight")}

    def __init__(self, weight):
        if not callable(weight):
            raise ValueError(f"weight must be a callable (s, t) -> omega, got {weight!r}")
        self.weight = weight

    def step_omegas(self, grid):
        omegas = np.array([float(self.weight(s, t)) for t, s in zip(grid[:-1], grid[1:])])
        if not np.all(np.isfinite(omegas)):
            raise ValueError("weight: returned a non-finite value on the grid")
        _check_floor(omegas, "weight")
        return omegas

    def _copy(self):
        return StepwiseSchedule(self.weight)

    def __repr__(self):
        return f"StepwiseSchedule(weight={self.weight!r})"


class TriangleSchedule(_GridSchedule):
    r"""TV-CFG (Jin, Shi & Gu 2025): a symmetric triangle in the step index.

    In the Ho convention :math:`w_i = 1 + A\,(1 - |2u_i - 1|)`, :math:`u_i = i/(N-1)` the step's
    position, rising from 1 at the first step to the apex at mid-sampling and back to 1; the
    amplitude A is set so that the time-average :math:`\sum_i w_i(\tau_i - \tau_{i+1})`, with
    :math:`\tau` the grid normalised to [0, 1], equals the requested mean :math:`\bar w`
    (eq. 33). On a uniform grid :math:`A \approx 2(\bar w - 1)`: the apex is :math:`2\bar w - 1`.
    """

    name = "tvcfg"
    source = "Jin, Shi & Gu 2025"
    summary = "triangle in the step index from w = 1 to an apex and back, normalised to the mean weight on the grid"

    def scale_per_step(self, positions, fractions):
        shape = 1.0 - np.abs(2.0 * positions - 1.0)
        if positions.size < 3:  # the triangle is 1 at both ends: no apex to normalise
            raise ValueError(f"steps: the {self.name} schedule needs a grid of at least 3 steps, got {positions.size}")
        return 1.0 + self.omega / float(shape @ fractions) * shape


class StepSchedule(_GridSchedule):
    """Step-up ("late high") or step-down ("early high"), the baselines of Jin, Shi & Gu (2025).

    Step-up: a low weight, one third of the high one (Ho convention), for the first 25 % of the
    steps, then the high weight; step-down: the reverse. Both levels are scaled together so that
    the time-average of w over the grid is the requested mean (eq. 33): the comparison is at
    equal mean weight.
    """

    FRACTION = 0.25
    RATIO = 1.0 / 3.0
    late_high = True

    def scale_per_step(self, positions, fractions):
        steps = positions.size
        first = np.arange(steps) < max(1, int(round(self.FRACTION * steps)))
        low_first = first if self.late_high else ~first
        shape = np.where(low_first, self.RATIO, 1.0)
        return (1.0 + self.omega) / float(shape @ fractions) * shape


class StepUp(StepSchedule):
    name = "step-up"
    source = "Jin, Shi & Gu 2025"
    summary = "w/3 for the first 25 % of the steps, then w (late high), normalised to the mean weight"
    late_high = True


class StepDown(StepSchedule):
    name = "step-down"
    source = "Jin, Shi & Gu 2025"
    summary = "w for the first 25 % of the steps, then w/3 (early high), normalised to the mean weight"
    late_high = False


class SplineSchedule(Schedule):
    r"""A smooth :math:`\omega` through ``values`` at the noise levels ``sigmas`` (eq. 45).

    Shape-preserving cubic (PCHIP) interpolation in :math:`\log\sigma`, :math:`\sigma = \sigma_t/a_t`
    the noise level, constant beyond the first and last knots, floored at -1. The family the
    schedule optimiser (cfgphase.solvers.design.optimal) searches; bound to a process.
    """

    name = "spline"
    summary = "PCHIP through values at the noise levels sigmas (log sigma), constant outside, floored at -1"
    PARAMETERS = {"sigmas": (REQUIRED, "increasing noise levels sigma_t/a_t of the knots"),
                  "values": (REQUIRED, "excess weights at the knots")}

    def __init__(self, sigmas, values):
        from scipy.interpolate import PchipInterpolator

        self.sigmas = np.atleast_1d(np.asarray(sigmas, dtype=float))
        self.values = np.atleast_1d(np.asarray(values, dtype=float))
        if self.sigmas.size < 2 or self.values.shape != self.sigmas.shape:
            raise ValueError(f"values must have one entry per knot in sigmas (at least 2), got {self.values.size} "
                             f"for {self.sigmas.size}")
        if not np.all(np.isfinite(self.sigmas)) or np.any(self.sigmas <= 0) or np.any(np.diff(self.sigmas) <= 0):
            raise ValueError("sigmas must be finite, positive and strictly increasing")
        if not np.all(np.isfinite(self.values)):
            raise ValueError("values must be finite")
        self._curve = PchipInterpolator(np.log(self.sigmas), self.values, extrapolate=False)
        self._process = None

    def bind(self, process=None, grid=None):
        if process is None:
            return self
        bound = SplineSchedule(self.sigmas, self.values)
        bound._process = process
        return bound

    def __call__(self, t):
        if self._process is None:
            raise ValueError("the spline schedule is defined in noise level and must be bound to a process "
                             "(cfgphase.physics.schedules.bind_schedule)")
        log_sigma = 0.5 * math.log(max(float(ve_time(self._process, t)), 1e-300))
        u = min(max(log_sigma, math.log(self.sigmas[0])), math.log(self.sigmas[-1]))
        return max(float(self._curve(u)), -1.0)

    @property
    def breakpoints(self):
        if self._process is None:
            return ()
        # C1 inside (PCHIP); the slope jumps only where the constant extrapolation starts
        return tuple(noise_level_time(self._process, s) for s in (self.sigmas[0], self.sigmas[-1]))

    def __repr__(self):
        return f"SplineSchedule(sigmas={self.sigmas.tolist()}, values={self.values.tolist()})"


SCHEDULES = {cls.name: cls for cls in (Constant, LimitedInterval, LinearSchedule, SwitchSchedule, TriangleSchedule,
                                       StepUp, StepDown, PiecewiseConstant, SplineSchedule)}


def make_schedule(name, **params):
    """The schedule called ``name`` with keyword ``params``; ValueError naming an unknown name or parameter.

    ``constant`` returns the plain number (the fast path of the theory solvers).
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule: unknown name {name!r} (known: {', '.join(SCHEDULES)})")
    cls = SCHEDULES[name]
    allowed = set(cls.PARAMETERS) | ({"guidance_scale"} if "omega" in cls.PARAMETERS else set())
    for key in params:
        if key not in allowed:
            raise ValueError(f"{key}: not a parameter of the {name} schedule (its parameters: "
                             f"{', '.join(sorted(allowed))})")
    missing = [k for k, (default, _) in cls.PARAMETERS.items() if default is REQUIRED and k not in params]
    if missing:
        raise ValueError(f"{missing[0]}: the {name} schedule needs it")
    schedule = cls(**params)
    return schedule.omega if name == "constant" else schedule


def bind_schedule(omega, process=None, grid=None):
    """Bind a schedule to a process and/or a sampler grid (numbers and plain callables pass through)."""
    return omega.bind(process=process, grid=grid) if isinstance(omega, Schedule) else omega


def needs_grid(omega):
    """Whether ``omega`` is defined on a sampler's steps and is not yet bound to a grid."""
    if isinstance(omega, _StepSchedule):
        return omega._bound is None
    return isinstance(omega, SwitchSchedule) and omega.t_switch is None
