"""Time grids for the reverse-time samplers: decreasing forward times t_0 = t_max > ... > t_N = t_min."""

from __future__ import annotations

import numpy as np

GRIDS = ("snr", "uniform")


def default_t_max(process, signal_var, snr=1e-4):
    """Time at which the total signal-to-noise ratio a_t^2 signal_var / sigma_t^2 equals ``snr``.

    ``signal_var`` is the data's total variance (e.g. d (sigma_mu^2 + s^2) for the mixture).
    """
    return float(min(process.time_at_snr(snr / signal_var), process.t_upper))


def time_grid(process, steps, t_max, t_min=0.0, kind="snr", class_var=0.25):
    r"""A decreasing grid of ``steps + 1`` forward times from ``t_max`` to ``t_min``.

    ``uniform``: equal steps in t. ``snr`` (refined near t = 0): equal steps in the log
    signal-to-noise ratio of a noised class, :math:`\log R_t` with :math:`R_t = a_t^2/\Gamma_t`
    and :math:`\Gamma_t = a_t^2 s^2 + \sigma_t^2` (``class_var`` is :math:`s^2`, eq. 15). It is
    geometric in t for VE, uniform at large t and about :math:`1/s^2` times denser near t = 0
    for OU, and needs no cut-off at t = 0 when :math:`s^2 > 0`.
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
    if kind != "snr":
        raise ValueError(f"grid must be one of {GRIDS}, got {kind!r}")
    s2 = float(np.max(class_var))
    if t_min == 0.0 and s2 <= 0:
        raise ValueError("t_min must be > 0 for the snr grid when class_var is 0")
    log_r = np.log(process.a([t_max, t_min]) ** 2 / process.class_var(np.array([t_max, t_min]), s2))
    inv_r = np.exp(-np.linspace(log_r[0], log_r[1], steps + 1))  # 1/R = s^2 + 1/snr
    with np.errstate(divide="ignore"):
        times = process.time_at_snr(1.0 / np.maximum(inv_r - s2, 0.0))
    times[0], times[-1] = t_max, t_min
    return check_grid(times, process)


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
