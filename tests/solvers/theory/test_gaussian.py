"""Exact Gaussian guided dynamics (eqs. 16-17) against closed forms and simulation."""

import numpy as np
import pytest

from cfgphase.physics.gaussian import GaussianPair
from cfgphase.physics.processes import get_process
from cfgphase.physics.schedules import LinearSchedule, SwitchSchedule
import cfgphase as cp
from cfgphase.solvers.score.fields import GaussianField
from cfgphase.solvers.theory.gaussian import design_schedule, gaussian_moments
from cfgphase.solvers.sampling.timegrid import time_grid, with_breakpoints

LC, LU = 0.25, 1.0
SCALAR = GaussianPair(mean_c=1.0, var_c=LC, mean_u=0.0, var_u=LU, d=1)
WIDE = GaussianPair(mean_c=1.0, var_c=LC, mean_u=0.0, var_u=LU, d=64)
N = 64 * 2048  # samples per coordinate-pooled moment in the simulations below


@pytest.mark.parametrize("omega", [-0.5, 0.5, 2.0])
def test_ve_constant_omega_variance_tends_to_lambda_c_power_law(omega):
    """VE, probability-flow ODE: Var[x_0] -> lambda_c (lambda_c/lambda_u)^omega as T -> infinity.

    At finite T the correction is O(lambda/T): 1e-6 relative at T = 1e6.
    """
    pred = gaussian_moments(SCALAR, "ve", omega=omega, t_max=1e6)
    assert pred.success
    assert pred.var[0] == pytest.approx(LC * (LC / LU) ** omega, rel=1e-5)


@pytest.mark.parametrize("process", ["ou", "ve", "flow"])
@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_conditional_and_unconditional_sampling_are_exact(process, sampler):
    t_max = 0.98 if process == "flow" else None
    cond = gaussian_moments(SCALAR, process, omega=0.0, sampler=sampler, init="conditional", t_max=t_max)
    uncond = gaussian_moments(SCALAR, process, omega=-1.0, sampler=sampler, t_max=t_max)
    np.testing.assert_allclose([cond.mean[0], cond.var[0]], [1.0, LC], rtol=1e-8)
    np.testing.assert_allclose([uncond.mean[0], uncond.var[0]], [0.0, LU], rtol=1e-8, atol=1e-9)


# t_max and a linear window per process: omega = -0.5 + slope t reaches about 3 at t_max
T_MAX = {"ou": 6.0, "ve": 50.0, "flow": 0.98}
SCHEDULES = {
    "constant": lambda p: 2.0,
    "switch": lambda p: SwitchSchedule(3.0, 0.5 * T_MAX[p] if p == "flow" else 0.5),
    "linear": lambda p: LinearSchedule(-0.5, 3.5 / T_MAX[p], clock="time"),
}


def _sample_moments(result):
    return result.final_mean.mean(), result.final_var.mean()


@pytest.mark.parametrize("process", ["ou", "ve", "flow"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_ode_theory_matches_simulation(process, schedule):
    """Heun with 400 steps (plus nodes at the schedule's breakpoints): its error is O(1e-5),
    below the standard errors 1e-3-1e-2 of these moments; tolerance 3 standard errors."""
    omega = SCHEDULES[schedule](process)
    pred = gaussian_moments(WIDE, process, omega=omega, t_max=T_MAX[process])
    res = cp.integrate(GaussianField(WIDE, process), omega, cp.Sampler("ode", steps=400, t_max=T_MAX[process]),
                       particles=2048, seed=5, save=cp.SaveAt(times=[0.0]))
    mean, var = _sample_moments(res)
    assert abs(mean - pred.mean[0]) <= 3 * np.sqrt(pred.var[0] / N)
    assert abs(var - pred.var[0]) <= 3 * pred.var[0] * np.sqrt(2 / N)


def scheme_moments(pair, process, omega, grid, init_moments):
    """Exact mean and variance of the exponential SDE scheme on ``grid`` (it is affine here)."""
    process = get_process(process)
    m, v = init_moments
    for t, t_next in zip(grid[:-1], grid[1:]):
        w = omega(t + 1e-9 * (t_next - t)) if callable(omega) else omega  # the value inside the step
        alpha, beta = pair.unconditional_estimate_coefficients(t, process)
        rho, c, V = process.reverse_transition(t, t_next, pair.reference_var)
        gain = rho - c * w * alpha
        m = gain * m + c * ((1 + w) * pair.mean_c - w * beta)
        v = gain**2 * v + V
    return m[0], v[0]


#: Every schedule with every process: the default suite runs a cover in which each appears once (3 s each).
COVER = set(zip(SCHEDULES, ["ou", "ve", "flow"]))


@pytest.mark.parametrize("schedule, process", [
    pytest.param(schedule, process, marks=() if (schedule, process) in COVER else pytest.mark.slow)
    for schedule in SCHEDULES for process in ["ou", "ve", "flow"]])
def test_sde_simulation_matches_its_scheme_and_the_scheme_converges_to_theory(process, schedule):
    omega = SCHEDULES[schedule](process)
    t_max = T_MAX[process]
    pred = gaussian_moments(WIDE, process, omega=omega, sampler="sde", t_max=t_max)
    init = WIDE.noised_moments(t_max, get_process(process), conditional=False)
    res = cp.integrate(GaussianField(WIDE, process), omega, cp.Sampler("sde", steps=200, t_max=t_max),
                       particles=2048, seed=6, save=cp.SaveAt(times=[0.0]))
    mean, var = _sample_moments(res)
    m_scheme, v_scheme = scheme_moments(WIDE, process, omega, res.grid, init)
    # the simulation samples the scheme's law: pure statistics, 3 standard errors
    assert abs(mean - m_scheme) <= 3 * np.sqrt(v_scheme / N)
    assert abs(var - v_scheme) <= 3 * v_scheme * np.sqrt(2 / N)
    # the scheme's law converges to the theory at weak order 1
    errors = []
    for steps in (100, 200, 400, 800):
        grid = with_breakpoints(time_grid(get_process(process), steps, t_max, class_var=LC),
                                getattr(omega, "breakpoints", ()))
        errors.append(abs(scheme_moments(WIDE, process, omega, grid, init)[1] - pred.var[0]))
    order = -np.polyfit(np.log([100, 200, 400, 800]), np.log(errors), 1)[0]
    assert order == pytest.approx(1.0, abs=0.15)


def test_designed_variance_preserving_window_keeps_the_variance_and_shifts_the_mean():
    """Linear window w0 + slope t (VE, ODE): solve w0 so that Var = lambda_c; simulate it."""
    slope = 0.05
    design = design_schedule(SCALAR, "linear", bracket=(-3.0, 0.0), slope=slope, process="ve", t_max=400.0)
    assert design.converged and design.prediction.var[0] == pytest.approx(LC, rel=1e-8)
    assert design.parameter < 0  # a negative-guidance window near t = 0
    shift = design.prediction.mean[0] - 1.0
    assert shift > 0.05  # the mean is pushed out while the variance is kept
    res = cp.integrate(GaussianField(WIDE, "ve"), design.schedule, cp.Sampler("ode", steps=400, t_max=400.0),
                       particles=2048, seed=7, save=cp.SaveAt(times=[0.0]))
    mean, var = _sample_moments(res)
    assert abs(var / LC - 1) < 0.02
    assert abs(mean - 1.0 - shift) <= 3 * np.sqrt(LC / N)


def test_constant_guidance_cannot_preserve_the_variance_but_a_window_can():
    """With lambda_c < lambda_u every omega(t) >= 0 shrinks the variance (theory notes)."""
    for omega in (0.5, 1.0, SwitchSchedule(2.0, 1.0, after=0.0)):
        assert gaussian_moments(SCALAR, "ve", omega=omega, t_max=400.0).var[0] < LC
    design = design_schedule(SCALAR, "switch", bracket=(1e-3, 50.0), omega=2.0, process="ve", t_max=400.0)
    assert design.prediction.var[0] == pytest.approx(LC, rel=1e-8)


def test_mean_shift_target():
    design = design_schedule(SCALAR, "piecewise", bracket=(0.0, 5.0), target="mean_shift", value=0.2,
                             breaks=[1.0], values=[0.0, 0.0], index=1, process="ou")
    assert design.prediction.mean[0] - 1.0 == pytest.approx(0.2, abs=1e-8)


def test_designer_rejects_targets_it_cannot_reach():
    with pytest.raises(ValueError, match="bracket"):
        design_schedule(SCALAR, "linear", bracket=(0.0, 1.0), slope=0.05, process="ve", t_max=400.0)
    with pytest.raises(ValueError, match="family"):
        design_schedule(SCALAR, "cosine", bracket=(0.0, 1.0))
    with pytest.raises(ValueError, match="value"):
        design_schedule(SCALAR, "linear", bracket=(0.0, 1.0), target="mean_shift", slope=1.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(sampler="langevin"), "sampler"), (dict(omega=float("nan")), "omega"), (dict(t_max=-1.0), "t_max"),
     (dict(process="flow", t_max=1.0, sampler="sde"), "t_max"), (dict(init="prior"), "init")],
)
def test_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gaussian_moments(SCALAR, **{"process": "ou", **kwargs})
