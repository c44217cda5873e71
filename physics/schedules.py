r"""Guidance schedules :math:`\omega(t)` in the excess convention, as functions of forward time.

A schedule is any callable ``omega(t) -> float``; the classes here also list their
``breakpoints`` (times where :math:`\omega` or its derivative jumps), so that ODE solvers can
integrate piecewise and stay accurate.

``LinearSchedule(w0, slope, floor=-1)``
    :math:`\omega(t) = \max(w_0 + \text{slope}\cdot t,\ \text{floor})`. With :math:`w_0 < 0 <`
    slope this is the negative-guidance window of Ventura et al. (2026): positive early in
    sampling (large t), negative for :math:`t < -w_0/\text{slope}`, never below -1
    (unconditional). The time is the process's own forward time.
``SwitchSchedule(omega, t_switch, after=-1)``
    :math:`\omega` for :math:`t > t_{switch}`, then ``after`` (default: the pure unconditional
    score) for the end of sampling; the "positive, then unconditional" practical variant.
``PiecewiseConstant(breaks, values)``
    ``values[i]`` on the i-th interval of the increasing ``breaks`` (len(values) = len(breaks) + 1),
    counted from t = 0: ``values[0]`` for :math:`t < \text{breaks}[0]`.
"""

from __future__ import annotations

import math

import numpy as np


def _finite(value, name):
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


class LinearSchedule:
    """omega(t) = max(w0 + slope * t, floor)."""

    def __init__(self, w0, slope, floor=-1.0):
        self.w0, self.slope, self.floor = _finite(w0, "w0"), _finite(slope, "slope"), _finite(floor, "floor")
        if self.floor < -1:
            raise ValueError(f"floor must be >= -1 (below -1 the conditional score enters negatively), got {floor}")
        if self.w0 < self.floor and self.slope <= 0:
            raise ValueError("w0 and slope give a schedule that never rises above floor")

    def __call__(self, t):
        return max(self.w0 + self.slope * t, self.floor)

    @property
    def breakpoints(self):
        if self.slope == 0:
            return ()
        kink = (self.floor - self.w0) / self.slope
        return (kink,) if kink > 0 else ()

    def __repr__(self):
        return f"LinearSchedule(w0={self.w0}, slope={self.slope}, floor={self.floor})"


class PiecewiseConstant:
    """values[i] between breaks[i-1] and breaks[i] (forward time, from t = 0)."""

    def __init__(self, breaks, values):
        self.breaks = np.atleast_1d(np.asarray(breaks, dtype=float))
        self.values = np.atleast_1d(np.asarray(values, dtype=float))
        if self.values.size != self.breaks.size + 1:
            raise ValueError(f"values must have len(breaks) + 1 = {self.breaks.size + 1} entries, got {self.values.size}")
        if not np.all(np.isfinite(self.breaks)) or np.any(self.breaks < 0) or np.any(np.diff(self.breaks) <= 0):
            raise ValueError("breaks must be finite, non-negative and strictly increasing")
        if not np.all(np.isfinite(self.values)):
            raise ValueError("values must be finite")

    def __call__(self, t):
        return float(self.values[np.searchsorted(self.breaks, t, side="right")])

    @property
    def breakpoints(self):
        return tuple(self.breaks)

    def __repr__(self):
        return f"PiecewiseConstant(breaks={self.breaks.tolist()}, values={self.values.tolist()})"


class SwitchSchedule(PiecewiseConstant):
    """omega for t > t_switch, ``after`` (default -1, unconditional) for t < t_switch."""

    def __init__(self, omega, t_switch, after=-1.0):
        if not float(t_switch) > 0:
            raise ValueError(f"t_switch must be > 0, got {t_switch!r}")
        super().__init__([t_switch], [after, omega])
        self.omega, self.t_switch, self.after = float(omega), float(t_switch), float(after)

    def __repr__(self):
        return f"SwitchSchedule(omega={self.omega}, t_switch={self.t_switch}, after={self.after})"
