r"""One step of a reduced sampler (docs/theory.md eqs. 53, 63): the simulator's steppers on a few
coordinates y along fixed directions and the squared norm p of the rest.

Shared by the per-particle population (cfgphase.solvers.theory.finite_d) and the reduction to the span
of few means (cfgphase.solvers.theory.reduction). Forward time; sampling steps from t down to t_next.
"""

from __future__ import annotations

import math

import numpy as np


def step(model, kind, t, t_next, y, p, first, estimate, noise=None):
    r"""One step of the reduced sampler for (y, p) (eq. 53): Heun on the probability flow (Euler into
    zero noise) or the exact SDE transition with :math:`\hat m` frozen, the simulator's steppers.

    ``first`` = (m_par, k_perp) at (y, p, t); ``estimate(y, p, t)`` gives them at the Heun stage.
    ``noise`` = (xi1, xi2, chi2_{d-2}) for the SDE (None: zero). Returns (y', p', f, coef): f is the
    factor of the perpendicular part :math:`x_\perp` and coef the coefficient of :math:`\hat m` in the step."""
    m1, k1 = first
    nu = model.class_var
    if kind == "ode":
        h = t_next - t
        A, B = model.process.ode_coefficients(t, nu)
        v1, c1 = A * y + B * m1, A + B * k1
        y_euler, f_euler = y + h * v1, 1 + h * c1
        if float(model.process.var(t_next)) == 0.0:
            return y_euler, p * f_euler ** 2, f_euler, h * B
        m2, k2 = estimate(y_euler, p * f_euler ** 2, t_next)
        A2, B2 = model.process.ode_coefficients(t_next, nu)
        f = 1 + 0.5 * h * (c1 + (A2 + B2 * k2) * f_euler)
        return y + 0.5 * h * (v1 + A2 * y_euler + B2 * m2), p * f * f, f, h * B
    r, c, V = model.process.reverse_transition(t, t_next, nu)
    f = r + c * k1
    if noise is None:
        return r * y + c * m1, f * f * p, f, c
    xi1, xi2, chi = noise
    return (r * y + c * m1 + math.sqrt(V) * xi1, (f * np.sqrt(p) + math.sqrt(V) * xi2) ** 2 + V * chi, f, c)
