r"""Measurements: per-time observables along the trajectories and final statistics.

Particles are split into G groups (particle ``i`` in group ``i % G``). Along the trajectory
each observable is a function ``f(state) -> (B,)`` of the particles at one time, stored as its G
group means, so that the mean over particles and its grouped-jackknife standard error (eq. 14)
are available for the observable and for any smooth function of it (e.g. a crossing time).
Final statistics are functions of the final sample, evaluated on the whole sample and on the G
leave-one-group-out subsets (jackknife, eq. 14). A function returns None where it does not
apply (no class posterior for a Gaussian field, no orthogonal complement at d = 1); one returning
a (B, n) array is stored as n series ``NAME_0`` ... ``NAME_{n-1}``.

Trajectory observables (``TRAJECTORY``), per particle, at time t:

=========================  ===============================================================
``m``                      :math:`x\cdot\mu_c/d`, the overlap with the target mean
``q``                      :math:`|x|^2/d`
``norm``                   :math:`|x_t|`
``target_posterior``       :math:`\pi_c(x,t)` (the class's components summed)
``posterior_entropy``      :math:`-\sum_k \pi_k\log\pi_k` over components (nats)
``responsibility_entropy`` entropy of the target's mode responsibilities (multimodal class)
``mode_responsibility_j``  responsibility of mode j of the target (its mean: the mode's weight at t)
``guidance_norm``          :math:`|s_\omega - s_c|` (score units, not divided by d)
``denoised_norm``          :math:`|\hat x_0|`, the guided denoiser :math:`D_\omega`
``denoised_norm_ratio``    :math:`|D_\omega|/|D_c|` (ADG keeps it below :math:`\sqrt2`)
=========================  ===============================================================

The guided quantities are those the sampler used on the step that starts at t: NaN at the last
node, where no step starts.

Final statistics, with :math:`u = \mu_c/|\mu_c|` (docs/theory.md eqs. 13, 41-43); each has a
``_stderr`` (grouped jackknife):

``mean_ratio``        :math:`E[x\cdot\mu_c]/|\mu_c|^2`
``var_par``           :math:`\mathrm{Var}[x\cdot u]`
``var_perp``          mean per-coordinate variance of :math:`x - (x\cdot u)u`
``distortion``        KL(structured Gaussian fit || :math:`\mathcal N(\mu_c, s^2 I)`)/d (one-mode class)
``accuracy``          fraction whose Bayes class (largest class posterior at t = t_end) is c
``inv_prob``          :math:`E[1/\pi_c(x)]` at t = t_end, with a bootstrap interval and median of means
``energy_distance``   to exact samples of the target class (eq. 41)
``within_mode_var``   per-coordinate variance around each sample's own mode, pooled (eq. 42)
``mode_weight_j``     fraction of samples in mode j of a multimodal target (``_target``: the truth)
``p_target_qNN``      quantile NN % of :math:`p(c|x)` over the samples (``_shift``: minus that of exact
                      samples; bootstrap errors, eq. 43)

A data model adds the copy statistics of :func:`copy_statistics` (eq. 69); one of them,
``coverage_per_class``, has one value per class (the simulation's ``per_class``).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np

from cfgphase.physics.mixture import denoiser_from_mean

#: Largest number of guided and exact samples entering the energy distance (O(n^2) pairs).
REFERENCE_SAMPLES = 2048
#: Levels of the quantiles of p(c | x).
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9)


def _row_norms(v):
    """(B,) Euclidean norms of the rows of ``v`` (B, d), without the (B, d) squares of ``np.linalg.norm``."""
    return np.sqrt(np.einsum("bd,bd->b", v, v))


@dataclass(frozen=True)
class State:
    """What an observable sees at one time; what several observables share is computed once, when first asked for."""

    t: float
    x: np.ndarray  #: (B, d)
    ev: object  #: cfgphase.solvers.score.fields.Evaluation at (x, t)
    guided: np.ndarray | None  #: (B, d) guided class-mean estimate of the step from t (None at the last node)
    field: object

    @functools.cached_property
    def guided_denoised_norm(self):
        r"""(B,) :math:`|D_\omega|`, the norm of the guided denoiser (``denoised_norm`` and its ratio)."""
        return _row_norms(_denoised(self, self.guided))


def overlap(s):
    return s.x @ s.field.target_mean / s.field.d


def sq_norm(s):
    return np.einsum("bd,bd->b", s.x, s.x) / s.field.d


def norm(s):
    return _row_norms(s.x)


def target_posterior(s):
    if s.ev.log_partition is None:
        return None
    return np.exp(s.ev.target_logit - s.ev.log_partition)


def posterior_entropy(s):
    return s.ev.entropy


def responsibility_entropy(s):
    r = s.ev.responsibilities
    if r is None:
        return None
    return -np.sum(np.where(r > 0, r * np.log(np.where(r > 0, r, 1.0)), 0.0), axis=1)


#: Targets with more modes than this (e.g. a class of training points) get no per-mode series
#: (``mode_weight_j``, ``mode_responsibility_j``), only the pooled ones.
RESOLVED_MODES = 16


def mode_responsibility(s):
    """(B, n_c) responsibilities of the target's modes: their mean over particles is the soft
    weight of each mode along the trajectory (stored as ``mode_responsibility_j``)."""
    r = s.ev.responsibilities
    return None if r is None or r.shape[1] > RESOLVED_MODES else r


def _not_stepped(s):
    return np.full(s.x.shape[0], np.nan)


def guidance_norm(s):
    r""":math:`|s_\omega - s_c|`: with the scores of eq. (6) from the same x, :math:`a_t|\hat m_\omega - \hat m_c|/\Gamma_t`
    (per coordinate when the reference variance is a (d,) array), x's terms cancelling exactly."""
    if s.guided is None:
        return _not_stepped(s)
    process, nu = s.field.process, s.field.reference_var
    gap = s.guided - s.ev.cond
    gap *= float(process.a(s.t)) / process.class_var(s.t, nu)
    return _row_norms(gap)


def _denoised(s, m):
    return denoiser_from_mean(s.x, np.broadcast_to(m, s.x.shape), s.t, s.field.process, s.field.reference_var)


def denoised_norm(s):
    return _not_stepped(s) if s.guided is None else s.guided_denoised_norm


def denoised_norm_ratio(s):
    if s.guided is None:
        return _not_stepped(s)
    return s.guided_denoised_norm / _row_norms(_denoised(s, s.ev.cond))


TRAJECTORY = {
    "m": overlap,
    "q": sq_norm,
    "norm": norm,
    "target_posterior": target_posterior,
    "posterior_entropy": posterior_entropy,
    "responsibility_entropy": responsibility_entropy,
    "mode_responsibility": mode_responsibility,
    "guidance_norm": guidance_norm,
    "denoised_norm": denoised_norm,
    "denoised_norm_ratio": denoised_norm_ratio,
}


def trajectory_values(state):
    """Every trajectory observable at one time, (B, n) outputs split into n named series."""
    out = {}
    for name, f in TRAJECTORY.items():
        value = f(state)
        if value is not None and np.ndim(value) == 2:
            out.update({f"{name}_{j}": value[:, j] for j in range(value.shape[1])})
        else:
            out[name] = value
    return out


def group_labels(B, groups):
    """Group of each particle (``i % groups``) and the group sizes."""
    labels = np.arange(B) % groups
    return labels, np.bincount(labels, minlength=groups)


def group_sums(values, labels, groups):
    """(G,) sums of per-particle ``values`` (B,) within each of ``groups`` groups (``labels`` (B,))."""
    return np.bincount(labels, weights=values, minlength=groups)


def group_means(values, labels, counts):
    """(G,) means of per-particle ``values`` (B,) within each group."""
    return group_sums(values, labels, counts.size) / counts


def pooled(group_mean, counts):
    """Mean over particles and its jackknife standard error from group means (..., G) (eq. 14)."""
    B, G = counts.sum(), counts.size
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged run's infinities stay infinities
        total = group_mean @ counts
        mean = total / B
        loo = (total[..., None] - group_mean * counts) / (B - counts)
        return mean, np.sqrt((G - 1) / G * np.sum((loo - loo.mean(-1, keepdims=True)) ** 2, axis=-1))


def jackknife(stat, values, labels, counts):
    """Estimate and grouped-jackknife standard error (eq. 14) of ``stat(values)``.

    ``values`` is a tuple of per-particle arrays with leading dimension B. A scalar statistic gives
    two floats; one returning an (n,) array (a statistic per class) gives two (n,) arrays, the error
    componentwise.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a variance of one particle: NaN, handled below
        full = stat(*values)
        if full is None:
            return None, None
        full = float(full) if np.ndim(full) == 0 else np.asarray(full, dtype=float)
        G = counts.size
        loo = [stat(*(v[labels != g] for v in values)) for g in range(G)]
        if any(v is None or np.any(np.isnan(v)) for v in loo):  # too few particles per leave-one-group-out sample
            return full, None
        loo = np.array(loo, dtype=float)
        stderr = np.sqrt((G - 1) / G * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0))
        return full, (float(stderr) if np.ndim(full) == 0 else stderr)


# --- final statistics (eq. 13); each takes the final particles and helper arrays -------------


#: Names of the scalar final statistics every run reports; each also has a ``_stderr`` companion.
FINAL = ("mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "inv_prob", "energy_distance",
         "within_mode_var")


def undefined_statistics():
    """Every final statistic and its error set to None (a run that failed)."""
    return {k + suffix: None for k in FINAL for suffix in ("", "_stderr")}


def _projections(x, u):
    par = x @ u
    return par, x - par[:, None] * u


def _distances(x, y=None):
    """Euclidean distances |x_i - y_j|, shape (n, m) (y = x when omitted, with an exact zero diagonal), from
    one GEMM: |x|^2 + |y|^2 - 2 x.y, clipped at 0. The cancellation costs ~1e-16 |x|^2 / |x - y| absolute,
    far below the energy distance's sampling error; SciPy's cdist would cost 0.3 s of import per run."""
    same = y is None
    y = x if same else y
    sq = np.einsum("ij,ij->i", x, x)
    sq_y = sq if same else np.einsum("ij,ij->i", y, y)
    out = sq[:, None] + sq_y[None, :] - 2.0 * (x @ y.T)
    np.maximum(out, 0.0, out=out)
    if same:
        np.fill_diagonal(out, 0.0)
    return np.sqrt(out, out=out)


def energy_statistic(x, y, beta=1.0):
    r"""Unbiased energy distance with exponent :math:`\beta \in (0, 2)`:
    :math:`2E|X-Y|^\beta - E|X-X'|^\beta - E|Y-Y'|^\beta` (pairs i != j), no error estimate
    (the loss of Learn to Guide uses beta = 1.75; :func:`energy_distance` is beta = 1 with its error)."""
    n, m = len(x), len(y)
    xy = (_distances(x, y) ** beta).mean()
    xx = (_distances(x) ** beta).sum() / (n * (n - 1))
    yy = (_distances(y) ** beta).sum() / (m * (m - 1))
    return 2.0 * xy - xx - yy


def energy_distance(x, y, labels, counts):
    r"""Energy distance :math:`2E|X-Y| - E|X-X'| - E|Y-Y'|` between samples x (n, d) and y (m, d),
    as unbiased U-statistics (pairs i != j), with its grouped jackknife error over x (eq. 41).

    Block sums of the pairwise distances make each leave-one-group-out value O(1).
    """
    n, m = x.shape[0], y.shape[0]
    G = counts.size
    onehot = np.zeros((n, G))
    onehot[np.arange(n), labels] = 1.0
    xy = onehot.T @ _distances(x, y).sum(axis=1)  # (G,) sums of |x_i - y_j| per group of x
    xx = onehot.T @ _distances(x) @ onehot  # (G, G) block sums of |x_i - x_j|
    yy = _distances(y).sum() / (m * (m - 1))

    def value(sum_xy, sum_xx, size):
        return 2.0 * sum_xy / (size * m) - sum_xx / (size * (size - 1)) - yy

    with np.errstate(all="ignore"):
        full = value(xy.sum(), xx.sum(), n)
        loo = np.array([value(xy.sum() - xy[g], xx.sum() - 2 * xx[g].sum() + xx[g, g], n - counts[g])
                        for g in range(G)])
    if not np.all(np.isfinite(loo)):  # a leave-one-group-out sample of one particle: no U-statistic
        return float(full), None
    return float(full), float(np.sqrt((G - 1) / G * np.sum((loo - loo.mean()) ** 2)))


def _mode_assignment(field, ev, x):
    """Index of each sample's mode within the target class (0 for a one-mode class) and the modes."""
    modes, _ = field.target_modes if hasattr(field, "target_modes") else (field.target_mean[None], None)
    if ev.responsibilities is None:
        return np.zeros(x.shape[0], dtype=int), modes
    return ev.responsibilities.argmax(axis=1), modes


def mean_interval(values, level=0.95, resamples=2000, batch=100):
    """Percentile-bootstrap interval of the mean of ``values`` (fixed seed; resamples drawn in
    batches, so that memory stays at batch x len(values)). BCa's jackknife would be O(B^2)."""
    rng = np.random.default_rng(0)
    means = np.concatenate([values[rng.integers(0, values.size, (batch, values.size))].mean(axis=1)
                            for _ in range(resamples // batch)])
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def quantiles(values, levels=QUANTILES, resamples=200):
    """Quantiles of ``values`` at ``levels`` and their bootstrap standard errors (eq. 43).

    The jackknife is inconsistent for quantiles; a percentile bootstrap with a fixed seed is not.
    """
    rng = np.random.default_rng(0)
    boot = np.quantile(values[rng.integers(0, values.size, (resamples, values.size))], levels, axis=1)
    return np.quantile(values, levels), boot.std(axis=1, ddof=1)


def nearest_points(x, points, block=4096):
    """For each row of ``x`` (B, d): the index of its nearest row of ``points`` (N, d), N >= 2, and the
    distances to the nearest and the second nearest, each (B,). Squared distances by GEMM over
    blocks of ``block`` points (memory B x block); rounding below zero is clipped."""
    B = x.shape[0]
    best = np.full((B, 2), np.inf)
    index = np.zeros(B, dtype=np.int64)
    x2 = np.einsum("ij,ij->i", x, x)
    rows = np.arange(B)
    for start in range(0, points.shape[0], block):
        p = points[start:start + block]
        dist = x2[:, None] + np.einsum("ij,ij->i", p, p)[None, :] - 2.0 * (x @ p.T)
        np.maximum(dist, 0.0, out=dist)
        two = min(2, dist.shape[1])
        near = np.argpartition(dist, two - 1, axis=1)[:, :two]
        cand = np.concatenate([best, dist[rows[:, None], near]], axis=1)
        cand_index = np.concatenate([index[:, None], index[:, None], start + near], axis=1)
        order = np.argsort(cand, axis=1, kind="stable")[:, :2]
        best = cand[rows[:, None], order]
        index = cand_index[rows, order[:, 0]]
    return index, np.sqrt(best[:, 0]), np.sqrt(best[:, 1])


def copy_statistics(out, per_class, field, x, labels, counts, ratio):
    r"""Memorisation and fidelity of samples of a data model (docs/theory.md eq. 69), into ``out``
    (scalars) and ``per_class`` ((C,) arrays over the C classes, in class order).

    A sample *copies* a training point when its distance to the nearest training point is below
    ``ratio`` times its distance to the second nearest. ``copy_fraction``: fraction of samples
    that copy; ``coverage_per_class``: for every class, the fraction of its points copied by at
    least one sample, and ``coverage`` its value for the target class;
    ``nearest_in_target``: fraction of samples whose nearest training point is in the target class;
    ``var_ratio``: total sample variance over that of the class's exact conditional (its points'
    covariance plus :math:`s^2 I`), whose variances along and across the class mean are
    ``var_par_class`` and ``var_perp_class``.
    """
    points, comps = field.model.means, field.components
    index, first, second = nearest_points(x, points)
    copies = (first < ratio * second).astype(float)
    in_target = np.isin(index, comps).astype(float)
    n_classes = field.model.n_classes
    point_class = np.arange(points.shape[0]) if field.model.labels is None else field.model.labels
    class_size = np.bincount(point_class, minlength=n_classes)

    def coverage(copies, index):
        copied = np.unique(index[copies > 0])
        return np.bincount(point_class[copied], minlength=n_classes) / class_size

    out["copy_fraction"], out["copy_fraction_stderr"] = jackknife(np.mean, (copies,), labels, counts)
    cover, cover_se = jackknife(coverage, (copies, index), labels, counts)
    per_class["coverage_per_class"], per_class["coverage_per_class_stderr"] = cover, cover_se
    out["coverage"] = float(cover[field.target])
    out["coverage_stderr"] = None if cover_se is None else float(cover_se[field.target])
    out["nearest_in_target"], out["nearest_in_target_stderr"] = jackknife(np.mean, (in_target,), labels, counts)
    w = field.model.weights[comps] / field.model.weights[comps].sum()
    centred = points[comps] - w @ points[comps]
    d, s2 = field.d, float(field.reference_var)
    trace = float(np.sum(w @ centred**2)) + d * s2
    mu = field.target_mean
    norm = float(np.sqrt(mu @ mu))
    if norm > 0 and d >= 2:
        along = float(w @ (centred @ (mu / norm)) ** 2) + s2
        out["var_par_class"], out["var_perp_class"] = along, (trace - along) / (d - 1)
    else:
        out["var_par_class"] = out["var_perp_class"] = None

    def var_ratio(x):
        return float(np.sum(np.var(x, axis=0, ddof=1)) / trace) if trace > 0 else None

    out["var_ratio"], out["var_ratio_stderr"] = jackknife(var_ratio, (x,), labels, counts)


def final_statistics(field, x, ev, labels, counts, reference=None, ev_reference=None, copy_ratio=1 / 3,
                     per_class=None):
    """Every final statistic with its jackknife standard error, as a flat dict (eqs. 13, 41-43).

    ``reference`` (m, d) are exact samples of the target at the final time and ``ev_reference``
    the field's evaluation there: they give the energy distance and the quantile shifts of
    p(c|x). For ``inv_prob`` a 95 % percentile-bootstrap interval (BCa's jackknife is O(B^2))
    (``inv_prob_ci_low``/``_high``) and the median of group means (``inv_prob_median_of_means``)
    are added, since 1/pi_c is heavy-tailed. A field of training points (a data model) adds the copy
    statistics of :func:`copy_statistics` with ``copy_ratio``; its statistics per class go into the
    dict ``per_class`` when one is given.
    """
    mu = field.target_mean
    mu2 = float(mu @ mu)
    d = field.d
    has_classes = ev.log_partition is not None
    one_mode = ev.responsibilities is None
    s2 = np.asarray(field.reference_var, dtype=float)  # isotropic conditionals only: a Gaussian pair's is (d,)
    s2 = float(s2.flat[0]) if s2.size and np.all(s2 == s2.flat[0]) else None
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
        if u is None or d < 2 or not one_mode or s2 is None or s2 <= 0 or x.shape[0] < 3:
            return None
        from mpmath import digamma  # mpmath: scipy.special takes 0.3 s to import, a run's whole budget

        vpar, vperp = var_par(x), var_perp(x)
        trace = vpar + (d - 1) * vperp
        bias = np.sum((x.mean(0) - mu) ** 2) - trace / x.shape[0]
        kl = trace / s2 + bias / s2 - d + d * np.log(s2) - np.log(vpar) - (d - 1) * np.log(vperp)
        # E log of a variance estimated with n degrees of freedom is log v + psi(n/2) - log(n/2) (eq. 13)
        n_par, n_perp = x.shape[0] - 1, (x.shape[0] - 1) * (d - 1)
        kl += (float(digamma(n_par / 2)) - np.log(n_par / 2)
               + (d - 1) * (float(digamma(n_perp / 2)) - np.log(n_perp / 2)))
        return float(0.5 * kl / d)

    mode, modes = _mode_assignment(field, ev, x)

    def within_mode_var(x, mode):
        # deviations from each occupied mode's own sample mean, pooled over modes (eq. 42)
        total, used = 0.0, 0
        for j in np.unique(mode):
            xj = x[mode == j]
            total += np.sum((xj - xj.mean(0)) ** 2)
            used += 1
        dof = (x.shape[0] - used) * d
        return float(total / dof) if dof > 0 else None

    out = {}
    for name, stat, values in (
        ("mean_ratio", mean_ratio, (x,)),
        ("var_par", var_par, (x,)),
        ("var_perp", var_perp, (x,)),
        ("distortion", distortion, (x,)),
        ("within_mode_var", within_mode_var, (x, mode)),
    ):
        out[name], out[name + "_stderr"] = jackknife(stat, values, labels, counts)
    if not one_mode and ev.responsibilities.shape[1] <= RESOLVED_MODES:
        _, truth = field.target_modes
        for j, w in enumerate(truth):
            hit = (mode == j).astype(float)
            out[f"mode_weight_{j}"], out[f"mode_weight_{j}_stderr"] = jackknife(np.mean, (hit,), labels, counts)
            out[f"mode_weight_{j}_target"] = float(w)
    if reference is not None:
        n = min(x.shape[0], reference.shape[0], REFERENCE_SAMPLES)
        keep = labels[:n]
        out["energy_distance"], out["energy_distance_stderr"] = energy_distance(
            x[:n], reference[:n], keep, np.bincount(keep, minlength=counts.size))
    else:
        out["energy_distance"] = out["energy_distance_stderr"] = None
    if getattr(field, "training", False):
        copy_statistics(out, {} if per_class is None else per_class, field, x, labels, counts, copy_ratio)
    if has_classes:
        _class_statistics(out, field, ev, ev_reference, labels, counts)
    else:
        for name in ("accuracy", "inv_prob"):
            out[name] = out[name + "_stderr"] = None
    return out


def _class_statistics(out, field, ev, ev_reference, labels, counts):
    """Accuracy, E[1/p(c|x)] with its interval, and the quantiles of p(c|x) (eqs. 13, 43), into ``out``."""
    hit = (ev.argmax == field.target).astype(float)
    # a sample deep in another class has 1/p = inf (or beyond float range): reported as it is
    with np.errstate(over="ignore", invalid="ignore"):
        inv = np.exp(ev.log_partition - ev.target_logit)
        out["accuracy"], out["accuracy_stderr"] = jackknife(np.mean, (hit,), labels, counts)
        out["inv_prob"], out["inv_prob_stderr"] = jackknife(np.mean, (inv,), labels, counts)
        if np.all(np.isfinite(inv)) and np.ptp(inv) > 0:
            out["inv_prob_ci_low"], out["inv_prob_ci_high"] = mean_interval(inv)
        else:
            out["inv_prob_ci_low"] = out["inv_prob_ci_high"] = float(np.mean(inv))
        out["inv_prob_median_of_means"] = float(np.median(group_means(inv, labels, counts)))
        q, q_se = quantiles(1.0 / inv)
        exact = None if ev_reference is None else quantiles(np.exp(ev_reference.target_logit
                                                                    - ev_reference.log_partition))
        for i, level in enumerate(QUANTILES):
            key = f"p_target_q{round(100 * level):02d}"
            out[key], out[key + "_stderr"] = float(q[i]), float(q_se[i])
            out[key + "_shift"] = None if exact is None else float(q[i] - exact[0][i])
            out[key + "_shift_stderr"] = None if exact is None else float(math.hypot(q_se[i], exact[1][i]))


def condensation_time(times, group_means, counts):
    """Time at which the mean target posterior first reaches 1/2, and its grouped-jackknife error (eq. 14).

    ``group_means`` (nodes, G): the target posterior averaged over each group of particles at each
    time; ``counts`` (G,): the group sizes. (None, None) without a crossing; the error is None when
    leaving out a group removes it."""
    mean, _ = pooled(group_means, counts)
    t_c = crossing_time(times, mean)
    if t_c is None:
        return None, None
    B, G = counts.sum(), counts.size
    loo = [crossing_time(times, (mean * B - group_means[:, g] * counts[g]) / (B - counts[g])) for g in range(G)]
    if any(v is None for v in loo):
        return t_c, None
    loo = np.array(loo)
    return t_c, float(math.sqrt((G - 1) / G * np.sum((loo - loo.mean()) ** 2)))


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
