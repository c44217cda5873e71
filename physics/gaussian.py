r"""Jointly Gaussian conditional and unconditional models, per eigendirection.

The conditional is :math:`\mathcal N(\mu_c, \mathrm{diag}\,\lambda_c)` and the unconditional
:math:`\mathcal N(\mu_u, \mathrm{diag}\,\lambda_u)` (commuting covariances; each coordinate is an
eigendirection). Under a process, a Gaussian :math:`\mathcal N(\mu, \lambda)` noises to
:math:`\mathcal N(a_t\mu, a_t^2\lambda + \sigma_t^2)`, so its score is
:math:`-(x - a_t\mu)/(a_t^2\lambda+\sigma_t^2)`.

Samplers write every score as :math:`-(x - a_t \hat m)/\Gamma_t` with
:math:`\Gamma_t = a_t^2\nu + \sigma_t^2` for a reference variance :math:`\nu` (docs/theory.md
eq. 6). Here :math:`\nu = \lambda_c`, so the conditional estimate is the constant
:math:`\mu_c` and the unconditional one is linear in :math:`x` (eq. 8):

.. math:: \hat m_u(x,t) = \frac{a_t(\lambda_u - \nu)\, x + \Gamma_t\, \mu_u}{a_t^2\lambda_u + \sigma_t^2}.
"""

from __future__ import annotations

import numpy as np


class GaussianPair:
    r"""Conditional :math:`\mathcal N(\mu_c,\lambda_c)` and unconditional :math:`\mathcal N(\mu_u,\lambda_u)`.

    Parameters
    ----------
    mean_c, var_c, mean_u, var_u : float or array_like (d,)
        Means and (positive) variances per eigendirection; scalars broadcast to ``d``.
    d : int, optional
        Dimension when every parameter is a scalar (default 1).
    """

    def __init__(self, mean_c, var_c, mean_u, var_u, d=None):
        arrays = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (mean_c, var_c, mean_u, var_u)]
        shape = np.broadcast_shapes(*(a.shape for a in arrays), (1 if d is None else int(d),))
        if len(shape) != 1:
            raise ValueError("Gaussian parameters must be scalars or 1-D arrays of length d")
        names = ("mean_c", "var_c (lambda_c)", "mean_u", "var_u (lambda_u)")
        for name, a in zip(names, arrays):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be finite")
        for name, a in zip(names[1::2], arrays[1::2]):
            if np.any(a <= 0):
                raise ValueError(f"{name} must be positive")
        self.mean_c, self.var_c, self.mean_u, self.var_u = (np.broadcast_to(a, shape).copy() for a in arrays)

    @property
    def d(self):
        return self.mean_c.shape[0]

    @property
    def signal_var(self):
        """Largest unconditional second moment of one eigendirection, max_i (mu_u,i^2 + lambda_u,i).

        Directions are independent, so the start time of sampling is set by the strongest one.
        """
        return float(np.max(self.mean_u**2 + self.var_u))

    @property
    def reference_var(self):
        """:math:`\\nu = \\lambda_c`, shape (d,)."""
        return self.var_c

    def unconditional_estimate_coefficients(self, t, process):
        """Slope and intercept of :math:`\\hat m_u(x, t) = \\alpha_t x + \\beta_t` (eq. 8), each (d,)."""
        a = float(process.a(t))
        var = float(process.var(t))
        denominator = a * a * self.var_u + var
        return a * (self.var_u - self.var_c) / denominator, (a * a * self.var_c + var) * self.mean_u / denominator

    def unconditional_mean_estimate(self, x, t, process):
        """:math:`\\hat m_u(x, t)` of eq. (8), shape (B, d)."""
        alpha, beta = self.unconditional_estimate_coefficients(t, process)
        return alpha * x + beta

    def noised_moments(self, t, process, conditional=True):
        """Mean and variance (each (d,)) of the noised conditional (or unconditional) at time t."""
        mean, var = (self.mean_c, self.var_c) if conditional else (self.mean_u, self.var_u)
        a = float(process.a(t))
        return a * mean, a * a * var + float(process.var(t))

    def sample_noised(self, t, process, n, rng, conditional=True):
        """``n`` exact draws of :math:`x_t` from the noised conditional (or unconditional)."""
        mean, var = self.noised_moments(t, process, conditional)
        return mean + np.sqrt(var) * rng.standard_normal((n, self.d))


def kl_divergence(mean1, var1, mean0, var0):
    r""":math:`\mathrm{KL}(\mathcal N(m_1, v_1)\,\|\,\mathcal N(m_0, v_0))` per eigendirection (eq. 18)."""
    return 0.5 * (var1 / var0 + (mean1 - mean0) ** 2 / var0 - 1.0 + np.log(var0 / var1))
