"""Time grids for the reverse-time samplers: decreasing forward times t_0 = t_max > ... > t_N = t_min."""

from __future__ import annotations

import numpy as np

GRIDS = ("log", "uniform")


def default_t_max(process, signal_var, snr=1e-4):
    """Time at which the total signal-to-noise ratio a_t^2 signal_var / sigma_t^2 equals ``snr``.

    ``signal_var`` is the data's total variance (e.g. d (sigma_mu^2 + s^2) for the mixture).
    """
    return float(min(process.time_at_snr(snr / signal_var), process.t_upper))


def class_width_time(process, class_var):
    """Time t_0 at which the noise level equals the class width, sigma_t / a_t = s (0 if s = 0)."""
    s2 = float(np.max(class_var))
    return 0.0 if s2 <= 0 else float(process.time_at_snr(1.0 / s2))


def time_grid(process, steps, t_max, t_min=0.0, kind="log", class_var=0.25):
    r"""A decreasing grid of ``steps + 1`` forward times from ``t_max`` to ``t_min``.

    ``uniform``: equal steps in t. ``log`` (refined near t = 0): equal steps in
    :math:`\log(t + t_0)`, with :math:`t_0` the time at which the noise level equals the class
    width, :math:`\sigma_{t_0}/a_{t_0} = s` (eq. 15; ``class_var`` is :math:`s^2`). Steps shrink
    from about :math:`t_{max}` to :math:`t_0` in relative size; the map from a uniform grid is
    smooth, so each stepper keeps its order (tests/solvers/sampling/test_steppers.py). For VE this is
    geometric in the noised class variance :math:`\Gamma_t = s^2 + t`.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    steps = int(steps)
    t_max, t_min = float(t_max), float(t_min)
    process.check_times(t_max, "t_max")
    process.check_times(t_min, "t_min")
    if not t_max > t_min:
        raise ValueError(f"t_max must be larger than t_min, got t_max={t_max}, t_min={t_min}")
    if kind == "uniform":
        return np.linspace(t_max, t_min, steps + 1)
    if kind != "log":
        raise ValueError(f"grid must be one of {GRIDS}, got {kind!r}")
    t0 = class_width_time(process, class_var)
    if t_min + t0 <= 0:
        raise ValueError("t_min must be > 0 for the log grid when class_var is 0")
    times = np.exp(np.linspace(np.log(t_max + t0), np.log(t_min + t0), steps + 1)) - t0
    times[0], times[-1] = t_max, t_min
    return check_grid(times, process)

def with_breakpoints(times, breakpoints):
    """The decreasing grid ``times`` with nodes added at every breakpoint strictly inside it."""
    inside = [b for b in breakpoints if times[-1] < b < times[0] and not np.any(np.isclose(times, b, rtol=1e-12))]
    return np.sort(np.concatenate([times, inside]))[::-1] if inside else times


def check_grid(times, process):
    """Validate a user grid: finite, strictly monotone, inside the process's time range.

    Returns it as a strictly decreasing float64 array (an increasing grid is reversed).
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size < 2:
        raise ValueError("time grid must be a 1-D array of at least two times")
    process.check_times(times, "time grid")
    steps = np.diff(times)
    if np.all(steps > 0):
        times = times[::-1].copy()
    elif not np.all(steps < 0):
        raise ValueError("time grid must be strictly monotone")
    return times
