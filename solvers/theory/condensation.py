r"""Condensation of the class posterior for K = e^{alpha d} random classes (docs/theory.md eqs. 19-22).

The non-target classes form a random-energy model: with means i.i.d.
:math:`\mathcal N(0,\sigma_\mu^2 I)` and a point x with :math:`q = |x|^2/d`, the energies
:math:`E_k = -|x - a_t\mu_k|^2/(2\Gamma_t)` have the cumulant generating function per dimension
(eq. 19)

.. math:: g(\beta) = \tfrac12\log\frac{\Gamma}{\Gamma + \beta a^2\sigma_\mu^2}
          - \frac{\beta q}{2(\Gamma + \beta a^2\sigma_\mu^2)},

so their free entropy :math:`\phi = \lim \frac1d\log\sum_{k\ne c} e^{E_k}` is :math:`\alpha + g(1)`
while the entropy :math:`s(1) = \alpha + g(1) - g'(1)` is positive (annealed phase) and
:math:`(\alpha + g(\beta_c))/\beta_c` with :math:`s(\beta_c) = 0` otherwise (frozen phase, eq. 20).
A target point typical of its class has log-weight :math:`-1/2` per dimension; the unguided
collapse time solves :math:`\alpha = \tfrac12\log(1 + a_t^2\sigma_\mu^2/\Gamma_t)` (eq. 21) and the
classes are dense (no collapse even at t = 0) beyond
:math:`\alpha_{max} = \tfrac12\log(1 + \sigma_\mu^2/s^2)` (eq. 22).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.optimize.elementwise import find_root

from cfgphase.physics.processes import get_process


def _check(alpha, mean_var, class_var):
    for name, value in (("alpha", alpha), ("mean_var", mean_var), ("class_var", class_var)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if mean_var == 0:
        raise ValueError("mean_var must be > 0 (identical classes never separate)")


def alpha_max(mean_var=1.0, class_var=0.25):
    r""":math:`\alpha_{max} = \tfrac12\log(1 + \sigma_\mu^2/s^2)` (eq. 22); infinite for point classes."""
    _check(0.0, mean_var, class_var)
    return math.inf if class_var == 0 else 0.5 * math.log1p(mean_var / class_var)


def collapse_alpha(t, process="ou", mean_var=1.0, class_var=0.25):
    r"""The alpha whose collapse time is t: :math:`\tfrac12\log(1 + a_t^2\sigma_\mu^2/\Gamma_t)` (eq. 21)."""
    process = get_process(process)
    return 0.5 * np.log1p(process.a(t) ** 2 * mean_var / process.class_var(t, class_var))


@dataclass
class CollapseTime:
    """Unguided collapse (condensation) time and what produced it."""

    t_collapse: float | None  #: None when the classes are dense (alpha >= alpha_max)
    alpha: float
    alpha_max: float
    process: str
    mean_var: float
    class_var: float
    iterations: int
    converged: bool
    message: str


def collapse_time(alpha, process="ou", mean_var=1.0, class_var=0.25):
    r"""Forward time at which the posterior of a typical target point condenses (eq. 21).

    Solves :math:`\alpha = \tfrac12\log(1 + a_t^2\sigma_\mu^2/\Gamma_t)` with brentq; the right side
    decreases from :math:`\alpha_{max}` at t = 0. For point classes (``class_var = 0``) on the
    OU process this is Biroli et al.'s :math:`t_C = \tfrac12\log(1 + \sigma^2/(e^{2\alpha}-1))`.
    """
    alpha = float(alpha)
    _check(alpha, mean_var, class_var)
    process = get_process(process)
    top = alpha_max(mean_var, class_var)
    common = dict(alpha=alpha, alpha_max=top, process=process.name, mean_var=mean_var, class_var=class_var)
    if alpha >= top:
        return CollapseTime(None, iterations=0, converged=True, message="dense classes: no collapse", **common)
    if alpha == 0:
        return CollapseTime(process.t_upper, iterations=0, converged=True, message="one class: always condensed",
                            **common)
    high = process.t_upper if math.isfinite(process.t_upper) else 1.0
    while math.isinf(process.t_upper) and collapse_alpha(high, process, mean_var, class_var) > alpha:
        high *= 2
    low = 0.0 if class_var > 0 else 1e-300
    t, info = brentq(lambda t: collapse_alpha(t, process, mean_var, class_var) - alpha, low, high, xtol=1e-14,
                     rtol=4 * np.finfo(float).eps, full_output=True)
    return CollapseTime(float(t), iterations=info.iterations, converged=info.converged, message="ok", **common)


def _cumulant(beta, q, a2s, gamma):
    """g(beta) and g'(beta) of eq. (19); a2s = a_t^2 sigma_mu^2. Elementwise on arrays."""
    den = gamma + beta * a2s
    g = -0.5 * np.log1p(beta * a2s / gamma) - beta * q / (2 * den)
    dg = -0.5 * a2s / den - q * gamma / (2 * den * den)
    return g, dg


def _entropy(beta, alpha, q, a2s, gamma):
    """s(beta) = alpha + g(beta) - beta g'(beta): the entropy of the Gibbs measure at inverse temperature beta."""
    g, dg = _cumulant(beta, q, a2s, gamma)
    return alpha + g - beta * dg


def _freezing_beta(alpha, q, a2s, gamma):
    """beta_c in [1e-12, 1] with s(beta_c) = 0, elementwise (Chandrupatla's bracketing method).

    s decreases in beta (s' = -beta g'' and g is convex), s(0) = alpha >= 0, and s(1) < 0 where
    this is called; where s(1e-12) <= 0 already (alpha = 0) beta_c is the lower end.
    """
    low = np.full_like(q, 1e-12)
    root = find_root(_entropy, (low, np.ones_like(q)), args=(alpha, q, a2s, gamma),
                     tolerances=dict(xatol=0.0, xrtol=4 * np.finfo(float).eps)).x
    return np.where(_entropy(low, alpha, q, a2s, gamma) <= 0, low, root)


@dataclass
class FreeEntropy:
    """Free entropy per dimension of the non-target classes and its phase (arrays for array inputs)."""

    phi: float | np.ndarray  #: lim (1/d) log sum_{k != c} exp(-|x - a mu_k|^2 / (2 Gamma))
    phase: str | np.ndarray  #: 'annealed' or 'frozen'
    beta_c: float | np.ndarray  #: freezing parameter (1 in the annealed phase)
    entropy: float | np.ndarray  #: s(1) = alpha + g(1) - g'(1): negative in the frozen phase


def others_free_entropy(alpha, q, t, process="ou", mean_var=1.0, class_var=0.25):
    r"""Free entropy of K = e^{alpha d} random classes seen from a point with :math:`|x|^2/d = q` (eqs. 19-20).

    ``alpha``, ``q`` and ``t`` broadcast against each other; scalars give a scalar record.
    """
    shape = np.broadcast(alpha, q, t).shape
    alpha, q, t = (np.array(v, dtype=float, ndmin=1) for v in np.broadcast_arrays(alpha, q, t))
    if not (np.all(np.isfinite(alpha)) and np.all(alpha >= 0)):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    _check(0.0, mean_var, class_var)
    if not np.all(q >= 0):
        raise ValueError(f"q must be >= 0, got {q!r}")
    process = get_process(process)
    a2s = process.a(t) ** 2 * mean_var
    gamma = process.class_var(t, class_var) + np.zeros_like(q)
    g1, dg1 = _cumulant(1.0, q, a2s, gamma)
    entropy = alpha + g1 - dg1
    phi, beta_c = alpha + g1, np.ones_like(q)
    frozen = entropy < 0
    if np.any(frozen):
        b = _freezing_beta(alpha[frozen], q[frozen], a2s[frozen], gamma[frozen])
        beta_c[frozen] = b
        phi[frozen] = (alpha[frozen] + _cumulant(b, q[frozen], a2s[frozen], gamma[frozen])[0]) / b
    phase = np.where(frozen, "frozen", "annealed")
    if shape == ():
        return FreeEntropy(float(phi[0]), str(phase[0]), float(beta_c[0]), float(entropy[0]))
    return FreeEntropy(phi, phase, beta_c, entropy)


def alpha_at_free_entropy(phi, q, t, process="ou", mean_var=1.0, class_var=0.25):
    r"""The inverse of eq. (20) in alpha: the :math:`\alpha` at which the free entropy of
    :math:`e^{\alpha d}` random classes seen from :math:`|x|^2/d = q` at time t equals ``phi`` (eq. 49).

    Annealed branch :math:`\alpha = \phi - g(1)`, valid where :math:`\phi \ge g'(1)`; frozen branch
    :math:`\alpha = \beta g'(\beta) - g(\beta)` with :math:`g'(\beta) = \phi`, :math:`\beta \in (0, 1)`. The
    free entropy increases with alpha, so classes condense on a point whose target log-weight is
    ``phi`` exactly when alpha is below this value. Negative where even one class outweighs
    ``phi`` (:math:`\phi < g'(0)`): returned as -inf. Elementwise; returns (alpha, annealed).
    """
    shape = np.broadcast(phi, q, t).shape
    phi, q, t = (np.array(v, dtype=float, ndmin=1) for v in np.broadcast_arrays(phi, q, t))
    process = get_process(process)
    a2s = process.a(t) ** 2 * mean_var
    gamma = process.class_var(t, class_var) + np.zeros_like(q)
    g1, dg1 = _cumulant(1.0, q, a2s, gamma)
    annealed = phi >= dg1
    alpha = np.where(annealed, phi - g1, -np.inf)
    _, dg0 = _cumulant(0.0, q, a2s, gamma)
    frozen = ~annealed & (phi > dg0)
    if np.any(frozen):  # g' increases from g'(0) to g'(1): one root in (0, 1)
        args = (q[frozen], a2s[frozen], gamma[frozen], phi[frozen])
        beta = find_root(lambda b, q_, a_, g_, p_: _cumulant(b, q_, a_, g_)[1] - p_,
                         (np.zeros(args[0].shape), np.ones(args[0].shape)), args=args,
                         tolerances=dict(xatol=0.0, xrtol=4 * np.finfo(float).eps)).x
        g, dg = _cumulant(beta, *args[:3])
        alpha[frozen] = beta * dg - g
    if shape == ():
        return float(alpha[0]), bool(annealed[0])
    return alpha, annealed
