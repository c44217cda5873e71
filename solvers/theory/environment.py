r"""The finitely many other classes seen from one particle: a random-energy model at finite size
(docs/theory.md eqs. 56-58).

Seen from a point x, the N = K - 1 other classes (means i.i.d. :math:`\mathcal N(0, \sigma_\mu^2 I_d)`)
have relative log-weights :math:`\varepsilon = b\zeta - \tfrac c2(\zeta^2 + R)`, i.i.d. given
:math:`|x|`, with :math:`\zeta\sim\mathcal N(0, 1)` the standardised projection of the mean on
:math:`\hat x`, :math:`R\sim\chi^2_{d-1}` its squared orthogonal part, :math:`b = a_t\sigma_\mu|x|/\Gamma_t`
and :math:`c = a_t^2\sigma_\mu^2/\Gamma_t` (eq. 56). A particle's *environment* is the top M of its N
energies, drawn as exact order statistics (Rényi's representation of uniform order statistics,
eq. 57); the other N - M are replaced by their conditional mean given the M-th. From it follow the
quenched correction X = log Z - log E Z of the others' partition function and their posterior
mean along :math:`\hat x` relative to its annealed value (eq. 58).

Conventions: energies are relative to :math:`\log E e^{\varepsilon}` (eq. 19 in d dimensions);
weights of the rest are in units of :math:`E e^{\varepsilon}`; arrays over particles have a
leading axis of length n, over a particle's top classes a trailing axis of length M.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammainc

#: Quadrature nodes in zeta and tabulation nodes in energy of :class:`EnergyLaw`.
ZETA_NODES, ENERGY_NODES = 240, 64


class EnergyLaw:
    r"""The law of one other class's relative log-weight at fixed (t, |x|), tabulated (eq. 56).

    Parameters
    ----------
    b, c : float
        :math:`a_t\sigma_\mu|x|/\Gamma_t` and :math:`a_t^2\sigma_\mu^2/\Gamma_t`.
    d : int
        Dimension (R has d - 1 degrees of freedom).
    others, top : int
        N, the number of other classes, and M, the number of explicit order statistics: the energy
        grid covers the range where :math:`N S(e)` runs from 4M down to 1e-5.
    nodes : int
        Energy nodes of the tables. With all N classes explicit (4M > N) the grid spans the whole
        law and 64 nodes bias X by -0.010 +- 0.002 at N = 15, d = 16 (256 nodes: none; measured in
        tests/solvers/theory/test_finite_d.py); the predictions move by < 1e-3 (docs/theory.md eq. 57).

    Attributes (arrays over the energy grid ``e``, increasing): ``log_survival`` = log P(eps > e);
    ``zeta`` = E[zeta | eps = e]; ``chi2`` = E[R | eps = e]; under the law tilted by :math:`e^\varepsilon`
    (:math:`\zeta\sim\mathcal N(b/(1+c), 1/(1+c))`, :math:`(1+c)R\sim\chi^2_{d-1}`) the survival
    ``tilted_survival`` and ``tilted_zeta`` = E~[zeta 1{eps > e}]. ``log_mean`` = log E e^eps,
    ``tilted_mean`` = b/(1+c) (the annealed E~[zeta]).
    """

    def __init__(self, b, c, d, others, top, nodes=ENERGY_NODES):
        k = d - 1
        self.others = others
        self.log_mean = -0.5 * d * math.log1p(c) + b * b / (2 * (1 + c))
        self.tilted_mean = b / (1 + c)
        z_hi = max(math.sqrt(2 * math.log(max(others, 2)) + 20.0), self.tilted_mean + 9 / math.sqrt(1 + c))
        z = np.linspace(-5.0, z_hi, ZETA_NODES)
        dz = z[1] - z[0]
        w_prior = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) * dz
        w_tilted = np.exp(-0.5 * (1 + c) * (z - self.tilted_mean) ** 2) * math.sqrt((1 + c) / (2 * math.pi)) * dz

        def r_below(e):  # eps > e  <=>  R < r_below(e), per zeta node
            return np.maximum((2.0 / c) * (b * z[None, :] - e[:, None]) - z[None, :] ** 2, 0.0)

        top_energy = b * b / (2 * c)  # sup of eps: zeta = b/c, R = 0
        low = -5.0 * b - 0.5 * c * (25.0 + k + 10.0 * math.sqrt(2.0 * k) + 20.0)  # S(low) = 1 to ~1e-12
        e = np.linspace(low, top_energy, 24)
        for _ in range(3):  # zoom in on the top order statistics: N S(e) from 4M down to 1e-5
            expected = others * (gammainc(k / 2, r_below(e) / 2) @ w_prior)
            lo = max(int(np.searchsorted(-expected, -4.0 * top)) - 1, 0)
            hi = min(int(np.searchsorted(-expected, -1e-5)), e.size - 1)
            e = np.linspace(e[lo], e[hi], 24)
        e = np.linspace(e[0], e[-1], nodes)
        r = r_below(e)
        with np.errstate(divide="ignore"):
            log_density = (k / 2 - 1) * np.log(np.where(r > 0, r, 1.0)) - r / 2
        # chi-square density of R at r, up to a factor per row (it cancels in the conditional means)
        density = np.where(r > 0, np.exp(log_density - log_density.max(axis=1, keepdims=True)), 0.0)
        norm = np.maximum(density @ w_prior, 1e-300)
        tilted_cdf = gammainc(k / 2, (1 + c) * r / 2)
        self.e = e
        self.log_survival = np.log(np.maximum(gammainc(k / 2, r / 2) @ w_prior, 1e-300))
        self.zeta = (density @ (w_prior * z)) / norm
        self.chi2 = ((density * r) @ w_prior) / norm
        self.tilted_survival = tilted_cdf @ w_tilted
        self.tilted_zeta = tilted_cdf @ (w_tilted * z)
        # increasing in log survival, for the inverse survival function
        self._levels = np.maximum.accumulate(self.log_survival[::-1])
        self._reversed = np.stack([e[::-1], self.zeta[::-1], self.chi2[::-1]])

    def top_classes(self, log_levels):
        r"""Energies (relative to ``log_mean``), zeta and E[R] of the top classes at the given log
        survival levels, each like ``log_levels`` (n, M): the inverse survival function, linear in log S."""
        levels = self._levels
        i = np.clip(np.searchsorted(levels, log_levels), 1, levels.size - 1)
        gap = levels[i] - levels[i - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.clip(np.where(gap > 0, (log_levels - levels[i - 1]) / gap, 0.0), 0.0, 1.0)
        e, zeta, chi2 = (row[i - 1] * (1 - f) + row[i] * f for row in self._reversed)
        return e - self.log_mean, zeta, chi2

    def rest(self, last_energy, rest_scale):
        r"""Weight and zeta-weight of the classes below the M-th, (n,), in units of :math:`E e^\varepsilon`
        (eq. 57): ``rest_scale`` :math:`= (N - M)/(1 - U_{(M)})` times the tilted mass below ``last_energy``
        (relative to ``log_mean``)."""
        e = last_energy + self.log_mean
        weight = rest_scale * (1.0 - np.interp(e, self.e, self.tilted_survival))
        zeta_weight = rest_scale * (self.tilted_mean - np.interp(e, self.e, self.tilted_zeta))
        return np.maximum(weight, 0.0), zeta_weight


def draw_environments(n, others, top, rng):
    r"""n environments: log survival levels (n, M) of the top M = min(top, N) of N uniform order
    statistics, increasing along M, and :math:`(N - M)/(1 - U_{(M)})` (n,) (eq. 57).

    Rényi: :math:`U_{(j)} = \Gamma_j/\Gamma_{N+1}` with :math:`\Gamma_j` the sums of j standard
    exponentials; :math:`\Gamma_{N+1} - \Gamma_M` is Gamma(N + 1 - M) distributed."""
    top = min(top, others)
    partial_sums = rng.exponential(size=(n, top)).cumsum(axis=1)
    total = partial_sums[:, -1] + rng.gamma(others + 1 - top, size=n)
    levels = partial_sums / total[:, None]
    return np.log(levels), (others - top) / (1.0 - levels[:, -1])


def quenched_statistics(law, log_levels, rest_scale, x_norm, pushed=None, a_over_gamma=0.0, mean_sd=1.0):
    r"""The quenched corrections of n environments at one (t, |x|) (eq. 58).

    ``pushed`` (n, M), optional: how far each top class's overlap :math:`x\cdot\mu_j` has been lowered
    by the guidance's self-avoidance (eq. 60); it lowers its energy by ``a_over_gamma`` times that and
    its zeta by that over :math:`\sigma_\mu|x|` (``mean_sd`` = :math:`\sigma_\mu`, ``x_norm`` (n,)).

    Returns ``X`` = log Z_o - log E Z_o (n,), ``tilt`` = the others' posterior mean along
    :math:`\hat x` over its annealed value (n,), the posterior weights of the top classes among the
    others (n, M) and their E[R] (n, M).
    """
    energy, zeta, chi2 = law.top_classes(log_levels)
    rest, rest_zeta = law.rest(energy[:, -1], rest_scale)
    if pushed is not None:
        energy = energy - a_over_gamma * pushed
        zeta = zeta - pushed / (mean_sd * x_norm[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rest = np.log(rest)
        rest_mean_zeta = np.where(rest > 0, rest_zeta / rest, 0.0)  # zeta averaged over the rest
    shift = np.maximum(energy.max(axis=1), log_rest)
    weights = np.exp(energy - shift[:, None])
    rest_weight = np.exp(log_rest - shift)  # in log space: deep in the frozen phase shift << -700
    z = weights.sum(axis=1) + rest_weight
    X = shift + np.log(z) - math.log(law.others)
    tilt = ((weights * zeta).sum(axis=1) + rest_weight * rest_mean_zeta) / z / law.tilted_mean
    return X, tilt, weights / z[:, None], chi2
