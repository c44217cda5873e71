r"""The draw's shared mean (docs/theory.md eqs. 104-105), predicted with passive test classes.

In a simulation every particle sees the same K - 1 other means, so the guidance moves all of them
toward (negative weight) or away from (positive weight) the same classes, and their mean orthogonal to
:math:`\mu_c`, :math:`m_\perp`, is not zero. The simulator's var_perp is the spread about the draw's own
mean, below the population's :math:`E p/(d-1)` by :math:`S = E|m_\perp|^2/(d-1)` (eq. 104), while the
population's environments are independent (A5) and cannot produce it.

Linear response (eq. 105). The mean of the probability flow or of the SDE over the particles of one draw
moves with the mean of the guided estimate, whose part orthogonal to :math:`\mu_c` is
:math:`-\omega\sum_k E_i[P(k\mid x_i)]\,\mu_{k\perp}`: a sum of one-class averages. Each is predicted by a
test class with fixed overlap C with the target direction and squared norm R orthogonal to it (in units of
:math:`\sigma_\mu`), carried passively by every particle of the population: its overlap :math:`o = x_\perp\cdot
\mu_{k\perp}/\sigma_\mu` follows the particle's linear factor, the noise and its own pull (so a class that
pulls its particle gains weight), and its posterior competes with the target and the particle's other
classes, :math:`P = e^{\varepsilon}/(e^{\varepsilon} + Z_{all})`, :math:`Z_{all} = T/\pi_c` (the test class is
not part of the particle's environment: a cavity). The coefficient q of the particle's displacement along
:math:`\mu_{k\perp}` follows the same step without the noise; its mean over particles b(C, R) gives
:math:`m_\perp = \sum_k b_k\mu_{k\perp}` and
:math:`S = (K - 1)\,\sigma_\mu^2\,E_{C,R}[b(C, R)^2 R]/(d - 1)`, the expectation over the prior of one class
(:math:`C\sim\mathcal N(0, 1)`, :math:`R\sim\chi^2_{d-1}`) by Gauss quadrature.

Conventions: forward time t, sampling runs down; arrays over particles (n,) and test classes (n, M).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy.linalg import eigh_tridiagonal

from cfgphase.physics.weights import weight_at

#: Gauss nodes over the overlap C with the target direction (Hermite, N(0, 1)) and over the squared norm R
#: orthogonal to it (generalised Laguerre, chi^2_{d-1}). At alpha = 0.2, d = 16 (K = 25, ODE) 8 x 2, 16 x 4 and
#: 24 x 8 nodes give the same S within its Monte-Carlo error (0.5 % at omega = 3, eq. 105).
C_NODES, R_NODES = 16, 4


def class_nodes(d, c_nodes=C_NODES, r_nodes=R_NODES):
    """(C, R, W), each (c_nodes * r_nodes,): quadrature over one other class's prior (eq. 105). The
    chi^2_{d-1} nodes are generalised Laguerre's, from the eigenvectors of its Jacobi matrix (Golub-Welsch;
    the normalised weights, which stay finite at any d)."""
    c, wc = hermegauss(c_nodes)
    alpha, k = 0.5 * (d - 1) - 1.0, np.arange(r_nodes)
    x, vectors = eigh_tridiagonal(2.0 * k + alpha + 1.0, np.sqrt(k[1:] * (k[1:] + alpha)))
    wx = vectors[0] ** 2
    C, R = np.repeat(c, r_nodes), np.tile(2.0 * x, c_nodes)
    return C, R, np.repeat(wc / wc.sum(), r_nodes) * np.tile(wx / wx.sum(), c_nodes)


class TestClasses:
    r"""Passive test classes carried by n particles of a finite-d population (eq. 105).

    Call :meth:`step` at the start of every sampling step with the particle's target posterior
    ``pi`` and linear factor ``k`` (the guided estimate's part orthogonal to :math:`\mu_c` per unit of
    :math:`x_\perp`, from the others' tilt) at (y, p, t), and :meth:`finish` at the end. Heun's second stage is
    evaluated at the step's end, where the population evaluates its next step (an O(h^2) difference per
    step from the predictor). ``rng`` draws the initial overlaps and the SDE noise along each class."""

    def __init__(self, model, n, rng, c_nodes=C_NODES, r_nodes=R_NODES):
        self.model, self.rng = model, rng
        self.C, self.R, self.W = class_nodes(model.d, c_nodes, r_nodes)
        self.sigma = math.sqrt(model.mean_var)
        self.q = np.zeros((n, self.C.size))  # displacement along mu_k_perp per unit of it
        self.o = None  # x_perp . mu_k_perp / sigma_mu, drawn at the first step (isotropic x_perp)
        self.pending = None  # Heun: (t_next, h, q velocity, o velocity, predictor q, predictor o)

    def _posterior(self, y, p, t, pi, o):
        r"""P(k | x) of every test class (eq. 105): :math:`\varepsilon = \beta(yC + o) - \tfrac c2(C^2 + R)`
        against :math:`Z_{all} = T/\pi_c` in the same units (T the target's weight, eq. 50)."""
        m = self.model
        a, gamma, _ = m.at(t)
        beta, c = a * self.sigma / gamma, a * a * m.mean_var / gamma
        q = y * y + p
        log_target = -(q - 2 * a * m.target * y + a * a * m.target ** 2) / (2 * gamma) + q / (2 * gamma)
        log_all = log_target - np.log(np.maximum(pi, 1e-300))
        eps = beta * (y[:, None] * self.C + o) - 0.5 * c * (self.C ** 2 + self.R)
        return 0.5 * (1.0 + np.tanh(0.5 * (eps - log_all[:, None])))

    def _source(self, y, p, t, pi, o):
        """The guided estimate's coefficient along each mu_k: -omega(t) P(k | x) (eqs. 7, 105)."""
        return -weight_at(self.model.omega, t) * self._posterior(y, p, t, pi, o)

    def step(self, kind, t, t_next, y, p, pi, k):
        """Move the test classes from t to t_next with the particles' state (y, p), target posterior ``pi``
        and linear factor ``k`` at t (the sampler of the population: ``kind`` 'ode' Heun, 'sde' exact)."""
        m = self.model
        if self.o is None:
            z = self.rng.standard_normal(self.q.shape)
            rest = self.rng.chisquare(m.d - 2, self.q.shape) if m.d > 2 else np.zeros(self.q.shape)
            self.o = np.sqrt(p)[:, None] * np.sqrt(self.R) * z / np.sqrt(z * z + rest)
        self._complete(y, p, t, pi, k)
        src = self._source(y, p, t, pi, self.o)
        if kind == "sde":
            r, coef, V = m.process.reverse_transition(t, t_next, m.class_var)
            f = (r + coef * k)[:, None]
            noise = np.sqrt(V * self.R) * self.rng.standard_normal(self.q.shape)
            self.q = f * self.q + coef * src
            self.o = f * self.o + coef * self.sigma * self.R * src + noise
            return
        h = t_next - t
        A, B = m.process.ode_coefficients(t, m.class_var)
        c1 = (A + B * k)[:, None]
        vq, vo = c1 * self.q + B * src, c1 * self.o + B * self.sigma * self.R * src
        q_pred, o_pred = self.q + h * vq, self.o + h * vo
        if float(m.process.var(t_next)) == 0.0:  # the last step into zero noise is Euler's, as the sampler's
            self.q, self.o = q_pred, o_pred
        else:
            self.pending = (t_next, h, vq, vo, q_pred, o_pred)

    def _complete(self, y, p, t, pi, k):
        """Heun's second stage of the pending step, at (y, p, t) (the step's end)."""
        if self.pending is None:
            return
        t_end, h, vq, vo, q_pred, o_pred = self.pending
        if t != t_end:
            raise RuntimeError(f"test classes: the pending step ends at t = {t_end}, evaluated at t = {t}")
        m = self.model
        A, B = m.process.ode_coefficients(t, m.class_var)
        c2 = (A + B * k)[:, None]
        src = self._source(y, p, t, pi, o_pred)
        self.q = self.q + 0.5 * h * (vq + c2 * q_pred + B * src)
        self.o = self.o + 0.5 * h * (vo + c2 * o_pred + B * self.sigma * self.R * src)
        self.pending = None

    def finish(self, y, p, t, pi, k):
        """Complete the last step at the end of sampling."""
        self._complete(y, p, t, pi, k)

    def shared_mean(self, labels, groups):
        r"""(S, its standard error) of eq. (105): :math:`b^2` per node unbiased from the means of ``groups``
        groups of particles (``labels`` (n,)), the error by the jackknife over the groups."""
        means = np.stack([self.q[labels == j].mean(axis=0) for j in range(groups)])  # (G, M)
        scale = (self.model.K - 1) * self.model.mean_var / (self.model.d - 1)

        def estimate(rows):
            total, g = rows.sum(axis=0), rows.shape[0]
            square = (total * total - (rows * rows).sum(axis=0)) / (g * (g - 1))
            return scale * float(np.sum(self.W * self.R * square))

        value = estimate(means)
        leave_one_out = np.array([estimate(np.delete(means, j, axis=0)) for j in range(groups)])
        spread = math.sqrt((groups - 1) / groups * float(((leave_one_out - leave_one_out.mean()) ** 2).sum()))
        return value, spread
