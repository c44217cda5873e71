r"""Forward noising processes.

Every process noises clean data :math:`x_0` in forward time :math:`t \ge 0` (``t = 0`` is
data) as

.. math:: x_t = a_t x_0 + \sigma_t z, \qquad z \sim \mathcal N(0, I),

docs/theory.md eq. (1). A class :math:`\mathcal N(\mu, s^2 I)` is then noised to
:math:`\mathcal N(a_t \mu, \Gamma_t I)` with :math:`\Gamma_t = a_t^2 s^2 + \sigma_t^2` (eq. 2).

========  ====================  ====================  ==================
process   :math:`a_t`           :math:`\sigma_t^2`    time range
========  ====================  ====================  ==================
``ou``    :math:`e^{-t}`        :math:`1 - e^{-2t}`   :math:`[0, \infty)`
``ve``    1                     :math:`t`             :math:`[0, \infty)`
``flow``  :math:`1 - t`         :math:`t^2`           :math:`[0, 1]`
========  ====================  ====================  ==================

All methods take a float or an array of times and return the same shape, float64.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Process(ABC):
    """Base class: subclasses define ``a``, ``var`` and their time derivatives."""

    name: str = ""
    t_upper: float = np.inf  # largest admissible time

    @abstractmethod
    def a(self, t):
        """Signal scale :math:`a_t`."""

    @abstractmethod
    def da(self, t):
        """:math:`\\dot a_t = da_t/dt`."""

    @abstractmethod
    def var(self, t):
        """Noise variance :math:`\\sigma_t^2`."""

    @abstractmethod
    def dvar(self, t):
        """:math:`d\\sigma_t^2/dt`."""

    @abstractmethod
    def time_at_snr(self, snr):
        """Time at which the signal-to-noise ratio :math:`a_t^2/\\sigma_t^2` equals ``snr``."""

    def class_var(self, t, s2):
        """Noised class variance :math:`\\Gamma_t = a_t^2 s^2 + \\sigma_t^2` (eq. 2)."""
        return self.a(t) ** 2 * s2 + self.var(t)

    def dclass_var(self, t, s2):
        """:math:`\\dot\\Gamma_t = 2 a_t \\dot a_t s^2 + d\\sigma_t^2/dt`."""
        return 2.0 * self.a(t) * self.da(t) * s2 + self.dvar(t)

    def drift(self, t):
        """Forward SDE drift coefficient :math:`f_t = \\dot a_t / a_t` (eq. 3)."""
        return self.da(t) / self.a(t)

    def diffusion2(self, t):
        """Forward SDE squared diffusion :math:`g_t^2 = d\\sigma^2_t/dt - 2 f_t \\sigma_t^2` (eq. 3)."""
        return self.dvar(t) - 2.0 * self.drift(t) * self.var(t)

    def ode_coefficients(self, t, nu):
        r"""Probability-flow velocity :math:`dx/dt = A_t x + B_t \hat m` (eq. 11).

        :math:`A_t = \dot\Gamma_t / (2\Gamma_t)`, :math:`B_t = (\dot a_t\sigma_t^2 -
        a_t\sigma_t\dot\sigma_t)/\Gamma_t`, with :math:`\Gamma_t = a_t^2\nu + \sigma_t^2`;
        regular on the whole time range (including flow at t = 1). ``nu`` is a float or (d,).
        """
        a, da, var, dvar = self.a(t), self.da(t), self.var(t), self.dvar(t)
        gamma = a * a * nu + var
        return (a * da * nu + 0.5 * dvar) / gamma, (da * var - 0.5 * a * dvar) / gamma

    def sde_coefficients(self, t, nu):
        r"""Reverse-SDE drift :math:`\lambda_t x - \kappa_t \hat m` and noise :math:`g_t^2` (eqs. 4, 12).

        :math:`\lambda_t = f_t + g_t^2/\Gamma_t`, :math:`\kappa_t = a_t g_t^2/\Gamma_t`; the reverse
        SDE is :math:`dx = (\lambda_t x - \kappa_t\hat m)\,dt + g_t\,d\bar W` with dt < 0.
        Singular where :math:`a_t = 0` (flow at t = 1). Returns ``(lam, kappa, g2)``.
        """
        g2 = self.diffusion2(t)
        gamma = self.class_var(t, nu)
        return self.drift(t) + g2 / gamma, self.a(t) * g2 / gamma, g2

    def reverse_transition(self, t, t_next, nu):
        r"""Exact reverse-SDE transition from ``t`` to ``t_next < t`` with :math:`\hat m` frozen (eq. 12).

        :math:`x_{t'} = \rho\, x_t + (a_{t'} - a_t\rho)\,\hat m + \sqrt{V}\,\xi` with
        :math:`\rho = a_t\Gamma_{t'}/(a_{t'}\Gamma_t)` and :math:`V = \Gamma_{t'}(1 - a_t\rho/a_{t'})`.
        Returns ``(rho, c, V)``, each a float or (d,) like ``nu``; requires :math:`a_{t'} > 0`.
        """
        a, a_next = self.a(t), self.a(t_next)
        g, g_next = a * a * nu + self.var(t), a_next * a_next * nu + self.var(t_next)
        rho = a * g_next / (a_next * g)
        return rho, a_next - a * rho, np.maximum(g_next * (1.0 - a * rho / a_next), 0.0)

    def check_times(self, t, name="t"):
        """Raise ValueError unless every time is finite and inside ``[0, t_upper]``."""
        t = np.asarray(t, dtype=float)
        if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t > self.t_upper):
            got = f", got {float(t)!r}" if t.ndim == 0 else ""
            raise ValueError(f"{name} must lie in [0, {self.t_upper}] for the {self.name} process{got}")
        return t

    def check_span(self, t_max, t_min=0.0, name="t_max"):
        """Raise ValueError (naming ``name`` or t_min) unless sampling can run from ``t_max`` down to
        ``t_min``: both inside ``[0, t_upper]`` and ``t_max > t_min``. Returns (t_max, t_min) as floats."""
        t_max, t_min = float(self.check_times(t_max, name)), float(self.check_times(t_min, "t_min"))
        if not t_max > t_min:
            raise ValueError(f"{name} must be larger than t_min, got {name}={t_max}, t_min={t_min}")
        return t_max, t_min

    def __repr__(self):
        return f"{type(self).__name__}()"


class OU(Process):
    """Variance-preserving Ornstein-Uhlenbeck process, :math:`a_t = e^{-t}`, :math:`\\sigma_t^2 = 1 - e^{-2t}`."""

    name = "ou"

    def a(self, t):
        return np.exp(-np.asarray(t, dtype=float))

    def da(self, t):
        return -self.a(t)

    def var(self, t):
        return -np.expm1(-2.0 * np.asarray(t, dtype=float))

    def dvar(self, t):
        return 2.0 * np.exp(-2.0 * np.asarray(t, dtype=float))

    def time_at_snr(self, snr):
        return 0.5 * np.log1p(1.0 / snr)



class VE(Process):
    """Variance-exploding process, :math:`a_t = 1`, :math:`\\sigma_t^2 = t`."""

    name = "ve"

    def a(self, t):
        return np.ones_like(np.asarray(t, dtype=float))

    def da(self, t):
        return np.zeros_like(np.asarray(t, dtype=float))

    def var(self, t):
        return np.asarray(t, dtype=float) * 1.0

    def dvar(self, t):
        return np.ones_like(np.asarray(t, dtype=float))

    def time_at_snr(self, snr):
        return 1.0 / snr



class Flow(Process):
    """Rectified flow (linear interpolation), :math:`a_t = 1 - t`, :math:`\\sigma_t = t`, :math:`t \\in [0, 1]`."""

    name = "flow"
    t_upper = 1.0

    def a(self, t):
        return 1.0 - np.asarray(t, dtype=float)

    def da(self, t):
        return -np.ones_like(np.asarray(t, dtype=float))

    def var(self, t):
        return np.asarray(t, dtype=float) ** 2

    def dvar(self, t):
        return 2.0 * np.asarray(t, dtype=float)

    def time_at_snr(self, snr):
        return 1.0 / (1.0 + np.sqrt(snr))



PROCESSES = {"ou": OU, "ve": VE, "flow": Flow}


def get_process(name):
    """The process called ``name`` (one of ``ou``, ``ve``, ``flow``), or a Process passed through."""
    if isinstance(name, Process):
        return name
    try:
        return PROCESSES[name]()
    except (KeyError, TypeError):
        raise ValueError(f"process must be one of {sorted(PROCESSES)}, got {name!r}") from None
