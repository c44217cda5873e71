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
