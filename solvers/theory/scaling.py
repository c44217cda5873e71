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
    mean, err = _mean_and_error(np.asarray(residuals, float), stderrs, mc_errors)
    return float(mean), float(err)


def _mean_and_error(r, stderrs, mc_errors=None):
    """:func:`draw_average` along the last axis of ``r`` (..., n): arrays of means and standard errors."""
    n = r.shape[-1]
    within = np.mean(np.square(stderrs))
    between = r.var(axis=-1, ddof=1) if n > 1 else np.full(r.shape[:-1], within)
    var = np.maximum(between, within) / n
    if mc_errors is not None:
        var = var + np.mean(np.square(mc_errors)) / n
    return r.mean(axis=-1), np.sqrt(var)


def sign_flip_null(cells, level=2.0, max_patterns=4096, seed=0):
    r"""Null distribution of the number of cells that :func:`draw_average` puts ``level`` standard errors or
    more from zero, for cells that share draws of the means (a sign-flip randomization test).

    ``cells`` is a sequence of (draws, residuals, stderrs, mc_errors), one per cell: the ids (any
    hashable) of the n draws the cell's residuals come from, its n residuals (simulation minus theory),
    the simulations' errors and the theory's Monte-Carlo errors (or None), as for :func:`draw_average`.
    Under the null each draw's residuals, over every cell it enters, are jointly symmetric about zero,
    and draws are independent: every pattern of signs of the draws is equally likely, and flipping one
    draw flips its residual in all its cells at once, which keeps their correlation (a draw enters the
    cells of several guidance weights and samplers with the same means and seeds). Cells linked by shared
    draws form a cluster, whose :math:`2^{u-1}` patterns (u draws; a global flip changes no cell) are
    enumerated, or ``max_patterns`` of them drawn with ``seed`` when there are more; clusters are
    independent, so the total count's distribution is the convolution of theirs. No variance is
    plugged in: the observed magnitudes carry the draws' scatter, whatever its size.

    Returns (p, pmf): p (len(cells),), each cell's probability of exceeding under the null, and pmf
    (len(cells) + 1,), the probability of each total count 0, 1, ...; :math:`P(\text{count} \ge k)` is
    ``pmf[k:].sum()``."""
    if not level > 0 or int(max_patterns) < 1:
        raise ValueError(f"level and max_patterns must be positive, got {level!r} and {max_patterns!r}")
    cells = [(list(ids), *(np.asarray(v, float) for v in (r, se, np.zeros(len(r)) if m is None else m)))
             for ids, r, se, m in cells]
    for index, (ids, r, se, m) in enumerate(cells):
        if not 0 < len(ids) == r.size == se.size == m.size or len(set(ids)) != len(ids):
            raise ValueError(f"cells[{index}]: give as many distinct draw ids as residuals, errors and Monte-Carlo "
                             f"errors (got {len(ids)}, {r.size}, {se.size}, {m.size})")
    parent = {}

    def root(a):
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for ids, *_ in cells:
        for a in ids[1:]:
            parent[root(a)] = root(ids[0])
    clusters = {}
    for index, (ids, *_) in enumerate(cells):
        clusters.setdefault(root(ids[0]), []).append(index)
    p = np.zeros(len(cells))
    pmf = np.ones(1)
    rng = np.random.default_rng(seed)
    for members in clusters.values():
        draws = sorted({a for i in members for a in cells[i][0]}, key=repr)
        u = len(draws)
        if u - 1 <= math.log2(max_patterns):
            bits = (np.arange(2 ** (u - 1))[:, None] >> np.arange(u - 1)[None, :]) & 1
        else:
            bits = rng.integers(0, 2, (max_patterns, u - 1))
        signs = np.hstack([np.ones((len(bits), 1)), 1 - 2 * bits])  # (patterns, u), first draw fixed
        column = {a: j for j, a in enumerate(draws)}
        count = np.zeros(len(signs), int)
        for i in members:
            ids, r, se, m = cells[i]
            mean, err = _mean_and_error(signs[:, [column[a] for a in ids]] * r, se, m)  # over (patterns, n)
            hit = np.abs(mean) >= level * err
            p[i] = hit.mean()
            count += hit
        pmf = np.convolve(pmf, np.bincount(count, minlength=len(members) + 1) / len(signs))
    return p, pmf


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
