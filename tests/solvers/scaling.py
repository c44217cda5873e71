"""Finite-size scaling shared by the theory-versus-simulation tests."""

import numpy as np


def extrapolate(ds, means, errors):
    """Weighted least-squares fit y = y_inf + b/d; returns y_inf and its standard error."""
    X = np.vstack([np.ones(len(ds)), 1.0 / np.asarray(ds)]).T
    W = np.diag(1.0 / np.asarray(errors) ** 2)
    cov = np.linalg.inv(X.T @ W @ X)
    return (cov @ X.T @ W @ np.asarray(means))[0], np.sqrt(cov[0, 0])
