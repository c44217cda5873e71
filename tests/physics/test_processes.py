"""Processes: derivatives, drift coefficients and the exact reverse transition (eqs. 1-3, 11, 12)."""

import numpy as np
import pytest

from cfgphase.physics.processes import Flow, OU, VE, get_process

PROCESSES = [OU(), VE(), Flow()]
TIMES = {"ou": [1e-3, 0.3, 2.0, 6.0], "ve": [1e-3, 0.3, 5.0, 200.0], "flow": [1e-3, 0.3, 0.7, 0.98]}


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_derivatives_match_central_differences(process):
    # h = 1e-6: truncation ~h^2 * |f'''| < 1e-11 and round-off ~1e-16/h = 1e-10 -> tolerance 1e-8.
    h = 1e-6
    for t in TIMES[process.name]:
        assert process.da(t) == pytest.approx((process.a(t + h) - process.a(t - h)) / (2 * h), abs=1e-8)
        assert process.dvar(t) == pytest.approx((process.var(t + h) - process.var(t - h)) / (2 * h), abs=1e-8)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_time_at_snr_inverts_the_signal_to_noise_ratio(process):
    for snr in [1e-4, 0.5, 3.0, 100.0]:
        t = process.time_at_snr(snr)
        assert process.a(t) ** 2 / process.var(t) == pytest.approx(snr, rel=1e-12)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_ode_velocity_equals_f_x_minus_half_g2_score(process):
    """Eq. (11) against the textbook probability-flow drift f x - g^2/2 * score."""
    rng = np.random.default_rng(0)
    nu = 0.3
    x, m = rng.standard_normal((2, 5))
    for t in TIMES[process.name]:
        gamma = process.class_var(t, nu)
        score = -(x - process.a(t) * m) / gamma
        reference = process.drift(t) * x - 0.5 * process.diffusion2(t) * score
        A, B = process.ode_coefficients(t, nu)
        np.testing.assert_allclose(A * x + B * m, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_reverse_transition_preserves_gaussian_marginals(process):
    """For data N(mu, nu) the frozen-mean transition is exact: N(a_t mu, Gamma_t) -> N(a_t' mu, Gamma_t')."""
    nu, mu = 0.25, 1.7
    ts = TIMES[process.name]
    for t, t_next in zip(ts[1:], ts[:-1]):
        rho, c, V = process.reverse_transition(t, t_next, nu)
        mean = rho * process.a(t) * mu + c * mu
        var = rho**2 * process.class_var(t, nu) + V
        assert mean == pytest.approx(process.a(t_next) * mu, rel=1e-12)
        assert var == pytest.approx(process.class_var(t_next, nu), rel=1e-12)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_reverse_transition_reduces_to_euler_maruyama_for_small_steps(process):
    """rho = 1 - lambda h + O(h^2), c = kappa h, V = g^2 h with lambda = f + g^2/Gamma, kappa = a g^2/Gamma."""
    nu, h = 0.25, 1e-6
    for t in TIMES[process.name][1:]:
        rho, c, V = process.reverse_transition(t, t - h, nu)
        gamma, g2 = process.class_var(t, nu), process.diffusion2(t)
        assert (1 - rho) / h == pytest.approx(process.drift(t) + g2 / gamma, rel=1e-4)
        assert c / h == pytest.approx(process.a(t) * g2 / gamma, rel=1e-4)
        assert V / h == pytest.approx(g2, rel=1e-4)


def test_get_process_rejects_unknown_names():
    with pytest.raises(ValueError, match="process"):
        get_process("vp")
    with pytest.raises(ValueError, match="t_max"):
        Flow().check_times(1.5, "t_max")
