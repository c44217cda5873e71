r"""Measurements: per-time observables along the trajectories and final statistics.

Particles are split into G groups (particle ``i`` in group ``i % G``). Along the trajectory
each observable is a function ``f(state) -> (B,)`` of the particles at one time, stored as its G
group means, so that the mean over particles and its grouped-jackknife standard error (eq. 14)
are available for the observable and for any smooth function of it (e.g. a crossing time).
Final statistics are functions of the final sample, evaluated on the whole sample and on the G
leave-one-group-out subsets (jackknife, eq. 14). A function returns None where it does not
apply (no class posterior for a Gaussian field, no orthogonal complement at d = 1).

Trajectory observables (``TRAJECTORY``), per particle, at time t:

``overlap``            :math:`x\cdot\mu_c/d`
``sq_norm``            :math:`q = |x|^2/d`
``target_posterior``   :math:`\pi_c(x,t)`
``posterior_entropy``  :math:`-\sum_k \pi_k\log\pi_k` (nats)
``guidance_norm``      :math:`|s_\omega - s_c|` (score units, not divided by d)

Final statistics (``FINAL``), with :math:`u = \mu_c/|\mu_c|` (docs/theory.md eq. 13):

``mean_ratio``  :math:`E[x\cdot\mu_c]/|\mu_c|^2`
``var_par``     :math:`\mathrm{Var}[x\cdot u]`
``var_perp``    mean per-coordinate variance of :math:`x - (x\cdot u)u`
``distortion``  KL(structured Gaussian fit || :math:`\mathcal N(\mu_c, s^2 I)`)/d
``accuracy``    fraction whose Bayes class (largest posterior at t = t_end) is c
``inv_prob``    :math:`E[1/\pi_c(x)]` at t = t_end
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

from physics.mixture import score_from_mean


class State(NamedTuple):
    """What an observable sees at one time."""

    t: float
    omega: float
    x: np.ndarray  #: (B, d)
    ev: object  #: solvers.fields.Evaluation at (x, t)
    field: object


def overlap(s):
    return s.x @ s.field.target_mean / s.field.d


def sq_norm(s):
    return np.einsum("bd,bd->b", s.x, s.x) / s.field.d


def target_posterior(s):
    if s.ev.log_partition is None:
        return None
    return np.exp(s.ev.target_logit - s.ev.log_partition)


def posterior_entropy(s):
    return s.ev.entropy


def guidance_norm(s):
    process, nu = s.field.process, s.field.reference_var
    diff = score_from_mean(s.x, s.ev.cond, s.t, process, nu) - score_from_mean(s.x, s.ev.uncond, s.t, process, nu)
    return abs(s.omega) * np.linalg.norm(np.broadcast_to(diff, s.x.shape), axis=1)


TRAJECTORY = {
    "overlap": overlap,
    "sq_norm": sq_norm,
    "target_posterior": target_posterior,
    "posterior_entropy": posterior_entropy,
    "guidance_norm": guidance_norm,
}


def group_labels(B, groups):
    """Group of each particle (``i % groups``) and the group sizes."""
    labels = np.arange(B) % groups
    return labels, np.bincount(labels, minlength=groups)


def group_means(values, labels, counts):
    """(G,) means of per-particle ``values`` (B,) within each group."""
    return np.bincount(labels, weights=values, minlength=counts.size) / counts


def pooled(group_mean, counts):
    """Mean over particles and its jackknife standard error from group means (..., G) (eq. 14)."""
    B, G = counts.sum(), counts.size
    total = group_mean @ counts
    mean = total / B
    loo = (total[..., None] - group_mean * counts) / (B - counts)
    return mean, np.sqrt((G - 1) / G * np.sum((loo - loo.mean(-1, keepdims=True)) ** 2, axis=-1))


def jackknife(stat, values, labels, counts):
    """Estimate and grouped-jackknife standard error (eq. 14) of ``stat(values)``.

    ``values`` is a tuple of per-particle arrays with leading dimension B.
    """
    full = stat(*values)
    if full is None:
        return None, None
    G = counts.size
    loo = np.array([stat(*(v[labels != g] for v in values)) for g in range(G)])
    return float(full), float(np.sqrt((G - 1) / G * np.sum((loo - loo.mean()) ** 2)))


# --- final statistics (eq. 13); each takes the final particles and helper arrays -------------


#: Names of the final statistics; each also has a ``_stderr`` companion.
FINAL = ("mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "inv_prob")


def undefined_statistics():
    """Every final statistic and its error set to None (a run that failed)."""
    return {k + suffix: None for k in FINAL for suffix in ("", "_stderr")}


def _projections(x, u):
    par = x @ u
    return par, x - par[:, None] * u


def final_statistics(field, x, ev, labels, counts):
    """Every final statistic with its jackknife standard error, as a flat dict (eq. 13).

    Keys: name and name_stderr for each statistic that applies, plus for ``inv_prob`` a
    95 % percentile-bootstrap interval (BCa's jackknife is O(B^2)) (``inv_prob_ci_low``/``_high``) and the median of group means
    (``inv_prob_median_of_means``), since 1/pi_c is heavy-tailed.
    """
    mu = field.target_mean
    mu2 = float(mu @ mu)
    d = field.d
    has_classes = ev.argmax is not None
    s2 = field.reference_var if has_classes else None
    u = mu / np.sqrt(mu2) if mu2 > 0 else None

    def mean_ratio(x):
        return None if u is None else float(np.mean(x @ mu) / mu2)

    def var_par(x):
        return None if u is None else float(np.var(x @ u, ddof=1))

    def var_perp(x):
        if u is None or d < 2:
            return None
        _, perp = _projections(x, u)
        return float(np.sum((perp - perp.mean(0)) ** 2) / ((x.shape[0] - 1) * (d - 1)))

    def distortion(x):
        if u is None or d < 2 or not has_classes or s2 <= 0:
            return None
        vpar, vperp = var_par(x), var_perp(x)
        trace = vpar + (d - 1) * vperp
        bias = np.sum((x.mean(0) - mu) ** 2) - trace / x.shape[0]
        kl = trace / s2 + bias / s2 - d + d * np.log(s2) - np.log(vpar) - (d - 1) * np.log(vperp)
        return float(0.5 * kl / d)

    out = {}
    for name, stat, values in (
        ("mean_ratio", mean_ratio, (x,)),
        ("var_par", var_par, (x,)),
        ("var_perp", var_perp, (x,)),
        ("distortion", distortion, (x,)),
    ):
        out[name], out[name + "_stderr"] = jackknife(stat, values, labels, counts)
    if has_classes:
        hit = (ev.argmax == field.target).astype(float)
        inv = np.exp(ev.log_partition - ev.target_logit)
        out["accuracy"], out["accuracy_stderr"] = jackknife(np.mean, (hit,), labels, counts)
        out["inv_prob"], out["inv_prob_stderr"] = jackknife(np.mean, (inv,), labels, counts)
        if np.all(np.isfinite(inv)) and np.ptp(inv) > 0:
            ci = stats.bootstrap((inv,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                                 rng=0).confidence_interval
            out["inv_prob_ci_low"], out["inv_prob_ci_high"] = float(ci.low), float(ci.high)
        else:
            out["inv_prob_ci_low"] = out["inv_prob_ci_high"] = float(np.mean(inv))
        out["inv_prob_median_of_means"] = float(np.median(group_means(inv, labels, counts)))
    else:
        for name in ("accuracy", "inv_prob"):
            out[name] = out[name + "_stderr"] = None
    return out


def crossing_time(times, values, level=0.5):
    """First time, in sampling order (decreasing t), at which ``values`` reaches ``level``.

    Linear interpolation between nodes; None if it never does or already does at the start.
    """
    above = values >= level
    if above[0] or not above.any():
        return None
    i = int(np.argmax(above))
    t0, t1, v0, v1 = times[i - 1], times[i], values[i - 1], values[i]
    return float(t0 + (level - v0) * (t1 - t0) / (v1 - v0))
