"""Finite-size scaling: the residual of simulation against theory over draws of the means, and the
extrapolation of finite-d measurements to d -> infinity."""

import math

import numpy as np


def draw_average(residuals, stderrs, mc_errors=None):
    """Mean of per-draw ``residuals`` (n,) (simulation minus theory, one per draw of the means at one d)
    and its standard error: the larger of the between-draw variance of the residuals and the mean
    within-draw variance ``stderrs**2`` of the simulated statistic, over n; the mean square of the
    theory's own Monte-Carlo errors ``mc_errors`` (n,) over n is added in quadrature. Returns
    (residual, standard error)."""
    r = np.asarray(residuals, float)
    n = r.size
    within = np.mean(np.square(stderrs))
    between = r.var(ddof=1) if n > 1 else within
    var = max(between, within) / n
    if mc_errors is not None:
        var += np.mean(np.square(mc_errors)) / n
    return float(r.mean()), math.sqrt(var)


def exceedance_under_null(residuals, stderrs, mc_errors=None, level=2.0, samples=20000, seed=0):
    r"""Probability that :func:`draw_average` puts a *correct* theory at least ``level`` standard errors
    away, for a cell of n draws like this one (a parametric bootstrap, fixed ``seed``).

    Under the null each draw's residual is :math:`\mathcal N(0, s_i^2 + m_i^2 + \sigma_q^2)`: the
    simulation's own error ``stderrs`` s_i, the theory's Monte-Carlo error ``mc_errors`` m_i, and the
    draw-to-draw scatter :math:`\sigma_q^2` of the statistic at fixed K and rho that a prediction
    averaged over draws of the other means cannot follow (plug-in: the excess of the residuals'
    between-draw variance over the mean of :math:`s_i^2 + m_i^2`, or 0). The probability is above
    :math:`P(|N(0,1)| \ge 2) = 0.046` when the between-draw variance (n - 1 degrees of freedom)
    decides the error, below it when the within-draw one does."""
    r = np.asarray(residuals, float)
    s2 = np.square(np.asarray(stderrs, float))
    m2 = np.zeros_like(s2) if mc_errors is None else np.square(np.asarray(mc_errors, float))
    n = r.size
    if n < 2:
        return float(math.erfc(level / math.sqrt(2)))
    q2 = max(0.0, float(r.var(ddof=1) - np.mean(s2 + m2)))
    draws = np.random.default_rng(seed).standard_normal((samples, n)) * np.sqrt(s2 + m2 + q2)
    var = (np.maximum(draws.var(axis=1, ddof=1), np.mean(s2)) + np.mean(m2)) / n
    return float(np.mean(np.abs(draws.mean(axis=1)) >= level * np.sqrt(var)))


def extrapolate(ds, means, errors):
    r"""Weighted least-squares fit :math:`y(d) = y_\infty + b/d`; returns :math:`y_\infty` and its standard
    error. ``ds``, ``means`` and ``errors`` (standard errors, > 0) are sequences of equal length >= 2."""
    ds, means, errors = (np.asarray(v, dtype=float) for v in (ds, means, errors))
    if ds.size < 2 or not (ds.shape == means.shape == errors.shape) or np.any(errors <= 0):
        raise ValueError("extrapolate: give at least two dimensions with positive standard errors")
    X = np.vstack([np.ones(ds.size), 1.0 / ds]).T
    W = np.diag(1.0 / errors**2)
    cov = np.linalg.inv(X.T @ W @ X)
    return float((cov @ X.T @ W @ means)[0]), float(np.sqrt(cov[0, 0]))
