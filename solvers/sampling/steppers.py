"""One-step integrators of the guided reverse dynamics (docs/theory.md eqs. 11-12).

Each stepper maps ``(field, guide, t, t_next, x, ev, m, xi)`` to ``(x_next, extra_evaluations)``:
``ev`` is the field's evaluation at ``(x, t)`` and ``m`` the guided class-mean estimate there
(both computed by the driver, which also records observables from them), ``guide`` the
:class:`Guide` that turns an evaluation into a guided estimate (for the steppers' inner stages)
and ``xi`` standard normal noise of x's shape (SDE steppers only). Time runs backwards:
``t_next < t``.

=============  =======  ============================================================  ============
name           sampler  scheme                                                        order
=============  =======  ============================================================  ============
``heun``       ode      explicit trapezoid (Heun) on the probability-flow ODE          2
``euler``      ode      explicit Euler on the probability-flow ODE                     1
``ddim``       ode      DDIM: the probability-flow ODE with the denoiser frozen        1
``exponential``sde      exact transition of the linear part, :math:`\\hat m` frozen    1 (weak)
=============  =======  ============================================================  ============
"""

from __future__ import annotations

import math

import numpy as np

from cfgphase.physics.mixture import denoiser_from_mean
from cfgphase.physics.rules import GuidanceContext
from cfgphase.physics.weights import weight_at


def weight_inside(omega, t, towards):
    """omega at t, as the limit from inside the step that goes from t towards ``towards``.

    A schedule that jumps at a grid node (cfgphase.physics.schedules puts nodes at its breakpoints)
    must use, on each step, the value of the interval the step covers; evaluating exactly at the
    node would take the other interval's value and cost an order of accuracy.
    """
    return weight_at(omega, t + _INSIDE * (towards - t))


_INSIDE = 1e-9


class Guide:
    """A guidance rule (cfgphase.physics.rules) with its schedule and per-run state: ``guide(x, t, ev, towards)``
    is the guided class-mean estimate at (x, t) on the step from t towards ``towards``."""

    def __init__(self, field, rule, omega, particles):
        self.field, self.rule, self.omega = field, rule, omega
        self.state = rule.start((particles, field.d))
        self.regular_at_zero_noise = rule.regular_at_zero_noise

    def __call__(self, x, t, ev, towards):
        ctx = GuidanceContext(x, t, towards, weight_inside(self.omega, t, towards), ev.cond, ev.uncond,
                              self.field.process, self.field.reference_var)
        return self.rule.guided_mean(ctx, self.state)


def _velocity(field, t, x, m):
    A, B = field.process.ode_coefficients(t, field.reference_var)
    return A * x + B * m


def euler(field, guide, t, t_next, x, ev, m, xi=None):
    return x + (t_next - t) * _velocity(field, t, x, m), 0


def heun(field, guide, t, t_next, x, ev, m, xi=None):
    """Heun's trapezoid. A step into zero noise is an Euler step, as in Karras et al.'s sampler:
    rules applied in x0, eps or v space cannot be evaluated there (cfgphase.physics.rules eq. 34), and
    every rule then shares one discretisation (one first-order step keeps the global order 2)."""
    h = t_next - t
    k1 = _velocity(field, t, x, m)
    x_pred = x + h * k1
    if float(field.process.var(t_next)) == 0.0:
        return x_pred, 0
    m_next = guide(x_pred, t_next, field.evaluate(x_pred, t_next), t)
    return x + (0.5 * h) * (k1 + _velocity(field, t_next, x_pred, m_next)), 1


def ddim(field, guide, t, t_next, x, ev, m, xi=None):
    r"""DDIM (eq. 40): :math:`x_s = a_s D + \sigma_s\epsilon` with :math:`\epsilon = (x - a_t D)/\sigma_t`, D the
    guided denoiser at (x, t): exact for point classes, first order in general."""
    process = field.process
    s_t, s_s = math.sqrt(float(process.var(t))), math.sqrt(float(process.var(t_next)))
    a_t, a_s = float(process.a(t)), float(process.a(t_next))
    D = denoiser_from_mean(x, m, t, process, field.reference_var)
    return (s_s / s_t) * x + (a_s - s_s * a_t / s_t) * D, 0


def exponential(field, guide, t, t_next, x, ev, m, xi):
    rho, c, var = field.process.reverse_transition(t, t_next, field.reference_var)
    return rho * x + c * m + np.sqrt(var) * xi, 0


#: name -> (stepper, sampler kind)
STEPPERS = {"heun": (heun, "ode"), "euler": (euler, "ode"), "ddim": (ddim, "ode"),
            "exponential": (exponential, "sde")}
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
