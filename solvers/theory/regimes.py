r"""The two dynamical regimes of unguided sampling: speciation and collapse (docs/theory.md eqs. 65-67, 70-71, 73).

Biroli, Bonnaire, de Bortoli & Mezard (2024) find that unguided sampling of data whose covariance
has a large top eigenvalue :math:`\Lambda` splits into classes at :math:`t_S = \frac12\log\Lambda`
(OU), and measure it by cloning: two copies of a trajectory, split at time t and continued with
independent noise, end in the same class with a probability that falls from 1 (split late in
sampling, small t) to chance (split early). Later in sampling, with n training points, the
trajectory collapses onto one of them at :math:`t_C`. Here:

* :func:`speciation_time` - the time at which the noised law along the top direction turns
  bimodal (eq. 65), for any process; :math:`\frac12\log(1 + \Lambda - 2s^2)` for OU, which is the
  published :math:`\frac12\log\Lambda` as :math:`\Lambda \to \infty`.
* :func:`clone_agreement` - the exact clone-agreement probability of a model (eq. 66), a Monte
  Carlo average over the exactly sampled noised law; :func:`two_class_clone_agreement` - its
  closed form for two symmetric classes (eq. 67), a function of the signal-to-noise ratio along the
  separation only.
* :func:`empirical_collapse_time` - the collapse time of n Gaussian points with a covariance
  spectrum (eq. 70): the noisy channel's information reaches log n; Biroli et al.'s
  :math:`t_C = \frac12\log(1 + \sigma^2/(n^{2/d} - 1))` for an isotropic spectrum.

* :func:`level_speciation_times`, :func:`level_collapse_times` - the same times for every level of
  a tree of classes (:meth:`~cfgphase.physics.model.Model.hierarchical`; eqs. 71, 73).

Time is forward time (t = 0 is data). No guidance enters: these are properties of the data.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from cfgphase.physics.model import Model
from cfgphase.physics.model import _positive  # the model's own number checks, errors named alike
from cfgphase.physics.processes import get_process


def _times(times):
    t = np.atleast_1d(np.asarray(times, dtype=float))
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ValueError(f"times must be finite forward times > 0, got {times!r}")
    return t


def speciation_time(eigenvalue, *, class_var=0.0, process="ou"):
    r"""Forward time :math:`t_S` at which the noised data turn bimodal along their top direction (eq. 65).

    ``eigenvalue`` is :math:`\Lambda`, the largest eigenvalue of the data covariance: between-class
    variance along the top direction plus ``class_var`` :math:`s^2` (two classes at
    :math:`\pm\mu`: :math:`\Lambda = |\mu|^2 + s^2`). :math:`t_S` solves
    :math:`a_t^2(\Lambda - 2s^2) = \sigma_t^2`; OU: :math:`\frac12\log(1 + \Lambda - 2s^2)`,
    VE: :math:`\Lambda - 2s^2`. Exact for two symmetric classes, leading order in :math:`\Lambda`
    otherwise. Raises ValueError when :math:`\Lambda \le 2s^2` (the data are never bimodal).
    """
    lam = _positive(eigenvalue, "eigenvalue")
    s2 = _positive(class_var, "class_var", allow_zero=True)
    process = get_process(process)
    excess = lam - 2.0 * s2
    if not excess > 0:
        raise ValueError(f"eigenvalue: the data are bimodal along the top direction only when eigenvalue > "
                         f"2 class_var; got eigenvalue {lam!r}, class_var {s2!r}")
    return float(min(process.time_at_snr(1.0 / excess), process.t_upper))


def clone_agreement(model, times, *, process=None, samples=4096, seed=0):
    r"""Probability that two clones split at forward time t end in the same class (eq. 66).

    :math:`\phi(t) = \mathbb E_{x_t\sim p_t}\sum_c p(c\mid x_t)^2`: with exact scores the reverse
    SDE from :math:`x_t` samples :math:`p(x_0\mid x_t)`, so each clone ends in class c with
    probability :math:`p(c\mid x_t)`, independently. ``model`` is a :class:`~cfgphase.physics.model.Model`
    (its process unless ``process`` is given); ``times``, shape (n,), forward times > 0;
    ``samples`` draws of :math:`x_t` per time, from ``seed``. Returns (phi, stderr), each (n,).
    The probability-flow ODE has no clones: its trajectories are deterministic.
    """
    if not isinstance(model, Model):
        raise ValueError(f"model must be a cfgphase Model, got {type(model).__name__}")
    t = _times(times)
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2, got {samples!r}")
    process = get_process(model.process if process is None else process)
    mixture = model.mixture
    rng = np.random.default_rng(seed)
    phi, err = np.empty(t.size), np.empty(t.size)
    for i, ti in enumerate(t):
        x = mixture.sample_noised(float(ti), process, int(samples), rng)[0]
        agree = np.sum(mixture.class_posterior(x, float(ti), process) ** 2, axis=1)
        phi[i], err[i] = agree.mean(), agree.std(ddof=1) / math.sqrt(agree.size)
    return phi, err


def two_class_clone_agreement(separation, times, *, class_var=0.0, process="ou", nodes=80):
    r"""Closed form of eq. (66) for two equally likely classes at :math:`\pm\mu` (eq. 67).

    ``separation`` is :math:`|\mu|^2`; with :math:`\zeta_t = a_t|\mu|/\sqrt{\Gamma_t}`,
    :math:`\Gamma_t = a_t^2s^2 + \sigma_t^2`, :math:`\phi = 1 - 2\,\mathbb E_{u\sim N(\zeta_t, 1)}
    [\pi(u)(1 - \pi(u))]`, :math:`\pi(u) = 1/(1 + e^{-2\zeta_t u})`, by Gauss-Hermite quadrature
    on ``nodes`` points. Depends on t only through :math:`\zeta_t`, which is 1 at :math:`t_S`
    (eq. 65): the curves of all dimensions collapse in :math:`\zeta`. Returns phi, shape (n,).
    """
    m2 = _positive(separation, "separation")
    s2 = _positive(class_var, "class_var", allow_zero=True)
    t = _times(times)
    process = get_process(process)
    a, var = np.asarray(process.a(t), dtype=float), np.asarray(process.var(t), dtype=float)
    zeta = a * math.sqrt(m2) / np.sqrt(a * a * s2 + var)
    u, w = np.polynomial.hermite_e.hermegauss(int(nodes))
    w = w / w.sum()
    pi = 0.5 * (1.0 + np.tanh(zeta[:, None] * (zeta[:, None] + u[None, :])))  # 1 / (1 + e^{-2 zeta (zeta + u)})
    return 1.0 - 2.0 * (pi * (1.0 - pi)) @ w


def empirical_collapse_time(eigenvalues, points, *, process="ou"):
    r"""Collapse time of ``points`` n Gaussian points with covariance spectrum ``eigenvalues`` (eq. 70).

    The posterior over the points condenses when the information the noisy observation carries,
    :math:`\frac12\sum_j \log(1 + \lambda_j\,a_t^2/\sigma_t^2)`, reaches :math:`\log n` (the
    random-energy-model condition of eq. 21 with :math:`s \to 0`, per eigendirection). An isotropic
    spectrum :math:`\lambda_j = \sigma^2` gives Biroli et al.'s
    :math:`t_C = \frac12\log(1 + \sigma^2/(n^{2/d} - 1))` (OU). ``eigenvalues``, shape (d,), >= 0
    with a positive sum (e.g. of the class's sample covariance); ``points`` n >= 2.
    """
    lam = np.atleast_1d(np.asarray(eigenvalues, dtype=float))
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam < 0) or not lam.sum() > 0:
        raise ValueError(f"eigenvalues must be finite, >= 0 and not all 0, got {eigenvalues!r}")
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    process = get_process(process)
    target = math.log(points)

    def excess(log_snr):
        return 0.5 * np.sum(np.log1p(lam * math.exp(log_snr))) - target

    # the information grows from 0 (snr -> 0) without bound: bracket in log snr
    low, high = -1.0, 1.0
    while excess(low) > 0:
        low *= 2
    while excess(high) < 0:
        high *= 2
    snr = math.exp(brentq(excess, low, high, xtol=1e-14, rtol=1e-14))
    return float(min(process.time_at_snr(snr), process.t_upper))


def level_speciation_times(model, *, process=None):
    r"""Speciation time of every level of a hierarchical model along the target's branch (eq. 71).

    For level l, the parent is the target's level-(l-1) ancestor (the root for l = 0): the top
    eigenvector u of the covariance between the parent's children (each child the equal-weight
    mixture of its leaves) carries the between-child variance :math:`\Lambda_l = u^\top B u`, and the
    children's own spread along it is :math:`s_l^2 = u^\top W u` (descendants plus :math:`s^2`).
    :math:`t_{S,l}` is eq. (65) with :math:`\Lambda = \Lambda_l + s_l^2` and class variance :math:`s_l^2`:
    exact for two children symmetric along u with Gaussian spread, leading order otherwise.
    ``model``: from :meth:`~cfgphase.physics.model.Model.hierarchical`. Returns shape (levels,).
    """
    if not isinstance(model, Model) or model.hierarchy is None:
        raise ValueError("model must be a hierarchical cfgphase Model (Model.hierarchical)")
    process = get_process(model.process if process is None else process)
    branching = model.hierarchy[0]
    means, s2 = model.mixture.means, model.class_var
    leaf = int(np.flatnonzero(model.ancestors(model.hierarchy[2]) == model.target)[0])
    times = np.empty(len(branching))
    for level in range(len(branching)):
        inside = np.ones(means.shape[0], bool) if level == 0 else \
            model.ancestors(level - 1) == model.ancestors(level - 1)[leaf]
        child = model.ancestors(level)[inside]
        x = means[inside]
        centre = x.mean(0)
        children = np.stack([x[child == c].mean(0) for c in np.unique(child)]) - centre
        between = children.T @ children / children.shape[0]
        _, vectors = np.linalg.eigh(between)
        u = vectors[:, -1]
        spread = x - centre
        total = float(np.mean((spread @ u) ** 2))
        lam = float(u @ between @ u)
        within = total - lam + s2
        times[level] = speciation_time(lam + within, class_var=within, process=process)
    return times


def level_collapse_times(alphas, level_vars, *, class_var=0.25, process="ou"):
    r"""Condensation time of every level of a tree of exponentially many classes (eq. 73).

    Level l has :math:`K_l = e^{\alpha_l d}` children per node, drawn with variance :math:`v_l` around
    their parent (``alphas``, ``level_vars``: one per level, as :meth:`Model.hierarchical`'s
    ``branching`` and ``level_vars``). While the levels below l are annealed (above their own
    condensation times) a level-l node's noised law is the Gaussian cloud of its descendants,
    :math:`\mathcal N(a_t m, (a_t^2 (s^2 + \sum_{m>l} v_m) + \sigma_t^2) I)`, so level l condenses at the
    collapse time (eq. 21) of :math:`\alpha_l` with mean variance :math:`v_l` and class variance
    :math:`s^2 + \sum_{m>l} v_m`. Valid when the times decrease down the tree (the levels condense in
    order, the sequential freezing of a generalized random-energy model); returns shape (levels,),
    NaN where a level never condenses (:math:`\alpha_l` beyond its :math:`\alpha_{max}`).
    """
    from cfgphase.solvers.theory.condensation import collapse_time

    alphas = np.atleast_1d(np.asarray(alphas, dtype=float))
    variances = np.atleast_1d(np.asarray(level_vars, dtype=float))
    if alphas.ndim != 1 or alphas.size == 0 or variances.shape != alphas.shape:
        raise ValueError(f"level_vars must have one variance per level ({alphas.size}), got {level_vars!r}")
    s2 = _positive(class_var, "class_var", allow_zero=True)
    below = np.concatenate([np.cumsum(variances[::-1])[::-1][1:], [0.0]])  # sum of the deeper variances
    out = np.empty(alphas.size)
    for level, (alpha, v, deeper) in enumerate(zip(alphas, variances, below)):
        t = collapse_time(float(alpha), process=process, mean_var=float(v), class_var=s2 + float(deeper)).t_collapse
        out[level] = np.nan if t is None else t
    return out
