"""Each stepper's empirical convergence order on a Gaussian problem with a closed-form answer.

Problem: unconditional sampling (omega = -1) of N(mu_u, lambda_u) with the reference variance
lambda_c != lambda_u, so that the class-mean estimate depends on x (eq. 8) and no stepper is
exact. The probability-flow ODE of a Gaussian maps x_T to mu_u + sqrt(lambda_u/Gamma_T)(x_T -
a_T mu_u) exactly, which gives each particle's error without statistical noise. The SDE's weak
error is measured on the variance, averaged over 256 coordinates x 1024 particles (standard
error 2.8e-3, against errors of 3.7e-2 and more).
"""

import numpy as np
import pytest

import cfgphase as cp
from cfgphase.solvers.sampling.brownian import Noise

T_MAX = {"ou": 3.0, "ve": 20.0, "flow": 0.95}
PAIR = dict(mean_c=1.0, var_c=0.1, mean_u=0.3, var_u=1.0)


def slope(steps, errors):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize("process", ["ou", "ve", "flow"])
@pytest.mark.parametrize("method, order", [("heun", 2.0), ("euler", 1.0), ("ddim", 1.0)])
def test_ode_stepper_order(process, method, order):
    model = cp.GaussianModel(**PAIR, d=1, process=process)
    pair, t_max = model.pair, T_MAX[process]
    x_init = pair.sample_noised(t_max, model.process, 16, Noise(1).initial_rng(), conditional=False)
    a, gamma = model.process.a(t_max), model.process.class_var(t_max, pair.var_u)
    exact = pair.mean_u + np.sqrt(pair.var_u / gamma) * (x_init - a * pair.mean_u)
    steps = [16, 32, 64, 128, 256]
    errors = []
    for n in steps:
        res = cp.simulate(model, -1.0, sampler=cp.Sampler("ode", method=method, steps=n, t_max=t_max), particles=16,
                          seed=1, save=cp.SaveAt(samples=True))
        errors.append(np.max(np.abs(res.samples - exact)))
    # measured slopes 1.96-2.03 (heun) and 0.98-1.01 (euler); 0.1 covers the pre-asymptotic bend
    assert slope(steps, errors) == pytest.approx(order, abs=0.1)


@pytest.mark.parametrize("process", ["ou", "ve", "flow"])
def test_exponential_sde_stepper_has_weak_order_one(process):
    model = cp.GaussianModel(**PAIR, d=256, process=process)
    steps = [8, 16, 32, 64]
    errors = [abs(cp.simulate(model, -1.0, sampler="sde", steps=n, t_max=T_MAX[process], particles=1024, seed=2,
                              save=cp.SaveAt(times=[T_MAX[process]])).final_var.mean() - PAIR["var_u"])
              for n in steps]
    assert slope(steps, errors) == pytest.approx(1.0, abs=0.15)


def test_exponential_sde_stepper_is_exact_when_the_estimate_is_constant():
    """Conditional sampling of N(mu_c, lambda_c): m = mu_c is frozen exactly, so 4 steps suffice."""
    model = cp.GaussianModel(**PAIR, d=4096, process="ou")
    res = cp.simulate(model, 0.0, sampler=cp.Sampler("sde", steps=4, t_max=3.0, init="conditional"), particles=512,
                      seed=3)
    n = 4096 * 512
    assert res.final_var.mean() == pytest.approx(PAIR["var_c"], abs=3 * PAIR["var_c"] * np.sqrt(2 / n))
    assert res.final_mean.mean() == pytest.approx(PAIR["mean_c"], abs=3 * np.sqrt(PAIR["var_c"] / n))
