"""One-step integrators of the guided reverse dynamics (docs/theory.md eqs. 11-12).

Each stepper maps ``(field, omega, t, t_next, x, ev, xi)`` to ``(x_next, extra_evaluations)``,
where ``ev`` is the field's evaluation at ``(x, t)`` (already computed by the driver, which also
records observables from it), ``omega`` the excess weight (a number or a schedule, evaluated
inside the step: :func:`weight_inside`) and ``xi`` standard normal noise of x's shape (SDE
steppers only). Time runs backwards: ``t_next < t``.

=============  =======  ============================================================  ============
name           sampler  scheme                                                        order
=============  =======  ============================================================  ============
``heun``       ode      explicit trapezoid (Heun) on the probability-flow ODE          2
``euler``      ode      explicit Euler on the probability-flow ODE                     1
``exponential``sde      exact transition of the linear part, :math:`\\hat m` frozen    1 (weak)
=============  =======  ============================================================  ============
"""

from __future__ import annotations

import numpy as np

from physics.guidance import guided_mean, weight_at


def weight_inside(omega, t, towards):
    """omega at t, as the limit from inside the step that goes from t towards ``towards``.

    A schedule that jumps at a grid node (physics.schedules puts nodes at its breakpoints)
    must use, on each step, the value of the interval the step covers; evaluating exactly at the
    node would take the other interval's value and cost an order of accuracy.
    """
    return weight_at(omega, t + _INSIDE * (towards - t))


_INSIDE = 1e-9


def _velocity(field, omega_t, t, x, ev):
    A, B = field.process.ode_coefficients(t, field.reference_var)
    return A * x + B * guided_mean(ev.cond, ev.uncond, omega_t)


def euler(field, omega, t, t_next, x, ev, xi=None):
    return x + (t_next - t) * _velocity(field, weight_inside(omega, t, t_next), t, x, ev), 0


def heun(field, omega, t, t_next, x, ev, xi=None):
    h = t_next - t
    k1 = _velocity(field, weight_inside(omega, t, t_next), t, x, ev)
    x_pred = x + h * k1
    k2 = _velocity(field, weight_inside(omega, t_next, t), t_next, x_pred, field.evaluate(x_pred, t_next))
    return x + (0.5 * h) * (k1 + k2), 1


def exponential(field, omega, t, t_next, x, ev, xi):
    rho, c, var = field.process.reverse_transition(t, t_next, field.reference_var)
    m = guided_mean(ev.cond, ev.uncond, weight_inside(omega, t, t_next))
    return rho * x + c * m + np.sqrt(var) * xi, 0


#: name -> (stepper, sampler kind)
STEPPERS = {"heun": (heun, "ode"), "euler": (euler, "ode"), "exponential": (exponential, "sde")}
DEFAULT_METHOD = {"ode": "heun", "sde": "exponential"}


def get_stepper(sampler, method=None):
    """The stepper for ``sampler`` ('ode' or 'sde') and ``method`` (default: heun / exponential)."""
    if sampler not in DEFAULT_METHOD:
        raise ValueError(f"sampler must be 'ode' or 'sde', got {sampler!r}")
    method = DEFAULT_METHOD[sampler] if method is None else method
    if method not in STEPPERS or STEPPERS[method][1] != sampler:
        valid = [k for k, (_, kind) in STEPPERS.items() if kind == sampler]
        raise ValueError(f"method must be one of {valid} for the {sampler} sampler, got {method!r}")
    return method, STEPPERS[method][0]
