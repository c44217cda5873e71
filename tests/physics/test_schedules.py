"""Guidance schedules: definitions by hand, normalisation on the sampler's grid, binding, bad input."""

import math

import numpy as np
import pytest

from cfgphase.physics.processes import OU, VE, Flow
from cfgphase.physics.schedules import (LimitedInterval, LinearSchedule, PiecewiseConstant, StepDown, StepUp, SwitchSchedule,
                               TriangleSchedule, bind_schedule, make_schedule, needs_grid, noise_level_time, ve_time)
from cfgphase.solvers.sampling.timegrid import time_grid

GRIDS = {
    "uniform": np.linspace(1.0, 0.0, 41),
    "log-ou": time_grid(OU(), 57, 6.0, 0.0, kind="log"),
    "random": np.sort(np.random.default_rng(0).uniform(0, 3, 30))[::-1],
}


def step_weights(schedule, grid):
    """Ho weight of each step, read inside the step as the samplers do."""
    mids = 0.5 * (grid[:-1] + grid[1:])
    return np.array([1.0 + schedule(t) for t in mids])


def grid_average(w, grid):
    tau = (grid - grid[-1]) / (grid[0] - grid[-1])
    return float(np.sum(w * (tau[:-1] - tau[1:])))


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("cls", [TriangleSchedule, StepUp, StepDown])
def test_grid_schedules_average_exactly_to_the_requested_mean_weight(cls, grid):
    times = GRIDS[grid]
    bound = cls(guidance_scale=3.5).bind(grid=times)
    assert grid_average(step_weights(bound, times), times) == pytest.approx(3.5, rel=1e-13)


def test_tvcfg_worked_example_by_hand():
    """5 uniform steps on [0, 1], mean w = 3: positions 0, 1/4, 1/2, 3/4, 1 give the triangle
    0, 1/2, 1, 1/2, 0 with time-average 0.4, so the amplitude is (3 - 1)/0.4 = 5 and the weights
    are 1, 3.5, 6, 3.5, 1 (mean 16/5... = 3)."""
    grid = np.linspace(1.0, 0.0, 6)
    bound = make_schedule("tvcfg", guidance_scale=3.0).bind(grid=grid)
    np.testing.assert_allclose(step_weights(bound, grid), [1.0, 3.5, 6.0, 3.5, 1.0], rtol=1e-14)
    np.testing.assert_allclose(bound.step_weights, [0.0, 2.5, 5.0, 2.5, 0.0], rtol=1e-14)


def test_step_schedules_by_hand():
    """8 uniform steps, mean w = 2: the first 25 % (2 steps) at one third of the rest.
    Step-up: 2 c/3 + 6 c = 16 -> c = 2.4: weights 0.8, 0.8, then 2.4 x 6. Step-down: the reverse,
    2 c + 6 c/3 = 16 -> c = 4: 4, 4, then 4/3 x 6."""
    grid = np.linspace(2.0, 0.0, 9)
    np.testing.assert_allclose(step_weights(StepUp(guidance_scale=2.0).bind(grid=grid), grid),
                               [0.8, 0.8] + [2.4] * 6, rtol=1e-14)
    np.testing.assert_allclose(step_weights(StepDown(guidance_scale=2.0).bind(grid=grid), grid),
                               [4.0, 4.0] + [4.0 / 3.0] * 6, rtol=1e-14)


def test_interval_in_noise_level_becomes_a_window_in_time():
    """Noise level sigma_t/a_t: OU sigma^2 = e^{2t} - 1, VE sigma^2 = t, flow sigma = t/(1-t) (eq. 32)."""
    for process, time_of in ((OU(), lambda s: 0.5 * math.log1p(s * s)), (VE(), lambda s: s * s),
                             (Flow(), lambda s: s / (1 + s))):
        for sigma in (0.28, 1.61):
            t = noise_level_time(process, sigma)
            assert t == pytest.approx(time_of(sigma), rel=1e-12)
            assert math.sqrt(ve_time(process, t)) == pytest.approx(sigma, rel=1e-12)
        bound = LimitedInterval(guidance_scale=2.0, sigma_lo=0.28, sigma_hi=1.61).bind(process=process)
        lo, hi = time_of(0.28), time_of(1.61)
        assert bound.breakpoints == pytest.approx((lo, hi), rel=1e-12)
        assert bound(0.5 * (lo + hi)) == 1.0 and bound(0.5 * lo) == 0.0 and bound(hi * 1.01) == 0


def test_linear_window_on_the_noise_clock():
    """tau = sigma_t^2/a_t^2: the VE time itself on VE, e^{2t} - 1 on OU; the kink where omega hits -1."""
    ve = LinearSchedule(-0.5, 0.25).bind(process=VE())
    assert ve(3.0) == pytest.approx(LinearSchedule(-0.5, 0.25, clock="time")(3.0))
    ou = LinearSchedule(-3.0, 0.5).bind(process=OU())
    t = 1.0
    assert ou(t) == pytest.approx(-3.0 + 0.5 * math.expm1(2 * t), rel=1e-12)
    kink, = ou.breakpoints  # -3 + 0.5 tau = -1 at tau = 4
    assert math.expm1(2 * kink) == pytest.approx(4.0, rel=1e-12)
    assert ou(0.5 * kink) == -1.0


def test_switch_after_a_fraction_of_the_steps():
    grid = np.linspace(5.0, 0.0, 101)
    bound = SwitchSchedule(guidance_scale=3.0, fraction=0.6).bind(grid=grid)
    assert bound.t_switch == pytest.approx(grid[60])
    w = step_weights(bound, grid)
    np.testing.assert_array_equal(w[:60], 3.0)
    np.testing.assert_array_equal(w[60:], 0.0)  # after = -1: w = 0, the pure unconditional score


def test_weight_conventions_agree():
    grid = GRIDS["log-ou"]
    for name, extra in (("tvcfg", {}), ("step-up", {}), ("interval", {"sigma_hi": 1.0}), ("switch", {"t_switch": 1.0})):
        a = bind_schedule(make_schedule(name, omega=1.7, **extra), OU(), grid)
        b = bind_schedule(make_schedule(name, guidance_scale=2.7, **extra), OU(), grid)
        # 2.7 - 1 and 1.7 differ by one ulp of 2.7 (4.4e-16), and the normalisation of tvcfg/step-up
        # scales it by a few: 1e-13 sits far above that rounding and far below any convention error (O(1))
        np.testing.assert_allclose([a(t) for t in grid[1:]], [b(t) for t in grid[1:]], rtol=1e-13, atol=1e-13)
    assert make_schedule("constant", guidance_scale=2.5) == 1.5


def test_unbound_schedules_refuse_to_be_evaluated():
    assert needs_grid(TriangleSchedule(omega=1.0)) and not needs_grid(TriangleSchedule(omega=1.0).bind(grid=GRIDS["uniform"]))
    for schedule, word in ((TriangleSchedule(omega=1.0), "grid"), (LimitedInterval(sigma_hi=1.0), "process"),
                           (LinearSchedule(-1.0, 1.0), "process"), (SwitchSchedule(fraction=0.5), "grid")):
        with pytest.raises(ValueError, match=word):
            schedule(0.3)


@pytest.mark.parametrize("build, key", [
    (lambda: make_schedule("cosine"), "schedule"),
    (lambda: make_schedule("interval", w0=1.0, sigma_hi=1.0), "w0"),
    (lambda: make_schedule("linear", w0=-1.0), "slope"),
    (lambda: LimitedInterval(sigma_lo=1.0, sigma_hi=0.5), "sigma_hi"),
    (lambda: LimitedInterval(sigma_lo=-1.0, sigma_hi=0.5), "sigma_lo"),
    (lambda: LimitedInterval(sigma_hi=1.0, t_hi=2.0), "sigma_lo"),
    (lambda: LimitedInterval(t_lo=2.0, t_hi=3.0).bind(process=Flow()), "t_lo"),
    (lambda: LimitedInterval(omega=-1.5, sigma_hi=1.0), "omega"),
    (lambda: LinearSchedule(-0.5, 1.0, floor=-2.0), "floor"),
    (lambda: LinearSchedule(-0.5, 1.0, clock="steps"), "clock"),
    (lambda: SwitchSchedule(omega=2.0, t_switch=1.0, after=-3.0), "after"),
    (lambda: SwitchSchedule(omega=2.0, fraction=1.5), "fraction"),
    (lambda: SwitchSchedule(omega=2.0, t_switch=2.0).bind(process=Flow()), "t_switch"),
    (lambda: StepUp(guidance_scale=-1.0).bind(grid=GRIDS["uniform"]), "omega"),
    (lambda: PiecewiseConstant([1.0, 2.0], [0.0, 1.0]), "values"),
    (lambda: PiecewiseConstant([2.0, 1.0], [0.0, 1.0, 2.0]), "breaks"),
    (lambda: TriangleSchedule(omega=1.0).bind(grid=[1.0, 0.5, 0.7]), "grid"),
    (lambda: TriangleSchedule(omega=1.0).bind(grid=[1.0, 0.5, 0.0]), "steps"),  # no apex: used to divide by 0
    (lambda: PiecewiseConstant([1.0], [0.0, -2.0]), "values"),  # the floor of every built-in schedule
    (lambda: make_schedule("constant", omega=-1.5), "omega"),  # ... and of the constant weight
])
def test_bad_schedule_parameters_name_the_parameter(build, key):
    with pytest.raises(ValueError, match=key):
        build()
