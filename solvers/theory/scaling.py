"""Finite-size scaling: extrapolation of finite-d measurements to d -> infinity."""

import numpy as np


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
