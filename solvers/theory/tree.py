r"""Guided sampling of a tree of classes at finite dimension d (docs/theory.md section 17, eqs. 74-79).

A :meth:`~cfgphase.physics.model.Model.hierarchical` model has leaves whose means are sums of
independent displacements along their branch, so the means of two leaves are correlated through
the ancestors they share: the Gram matrix of any set of leaves is Wishart with the tree's covariance
(eq. 74), and it can be drawn exactly in the span of those leaves (eq. 75). The guided dynamics
then reduces exactly to that span (cfgphase.solvers.theory.reduction), for guidance on a leaf or on
a super-class, whose conditional is the mixture of its own leaves (eq. 76).

:func:`tree_prediction` keeps explicitly the target's whole level-0 family (its siblings, cousins
within the family, ...: every leaf that shares an ancestor with it) and as many further families as
fit in d dimensions. When every leaf fits (K <= d) the prediction is exact in expectation over
draws of the tree. The families that do not fit share no ancestor with the target: their means are
independent of the explicit ones and enter through their annealed partition function (eq. 77).

Conventions: forward time (t = 0 is data); the excess weight omega (:math:`s_c + \omega(s_c - s_u)`);
leaves numbered depth first, equally weighted; :math:`\mu_c` the mean of the target's leaves.
"""

from __future__ import annotations

import math
import time

import numpy as np

from cfgphase.physics.model import Model
from cfgphase.physics.weights import excess_weight
from cfgphase.solvers.sampling.observables import condensation_time
from cfgphase.solvers.theory.finite_d import (DRAW_SIZE, PARTICLES, _Model, check_dimension, check_inputs,
                                              sampler_grid)
from cfgphase.solvers.theory.meanfield import MeanFieldPrediction
from cfgphase.solvers.theory.reduction import Outside, over_draws, span_run

#: Largest number of per-particle numbers (draws x size x outside leaves x d) of a quenched outside.
QUENCHED_NUMBERS = 20_000_000


def leaf_ancestors(branching, level):
    """The level-``level`` ancestor of every leaf of a tree with ``branching`` children per level, (leaves,)."""
    return np.arange(int(np.prod(branching))) // int(np.prod(branching[level + 1:]))


def tree_covariance(branching, level_vars, leaves):
    r"""Covariance between the means of ``leaves`` (indices, depth first), per coordinate (eq. 74):
    :math:`C_{ij} = \sum_l v_l\,[i \text{ and } j \text{ share their level-}l\text{ ancestor}]`, (n, n)."""
    leaves = np.asarray(leaves)
    cov = np.zeros((leaves.size, leaves.size))
    for level, v in enumerate(level_vars):
        anc = leaf_ancestors(branching, level)[leaves]
        cov += v * (anc[:, None] == anc[None, :])
    return cov


def draw_tree_factors(cov, d, draws, rng):
    r"""Coordinates of n leaf means in an orthonormal basis of their span, (draws, n, n), for ``draws``
    independent trees in d >= n dimensions (eq. 75): the means are :math:`C^{1/2}W` with W (n, d) standard
    normal, and :math:`W = L_0 O^\top` with :math:`L_0` Bartlett's lower-triangular factor of a
    Wishart(d, I) matrix (diagonal :math:`\sqrt{\chi^2_{d-i}}`, standard normal below) and O orthonormal;
    so the coordinates are :math:`\mathrm{chol}(C) L_0`."""
    n = cov.shape[0]
    bartlett = np.zeros((draws, n, n))
    for i in range(n):
        bartlett[:, i, :i] = rng.standard_normal((draws, i))
        bartlett[:, i, i] = np.sqrt(rng.chisquare(d - i, draws))
    return np.linalg.cholesky(cov) @ bartlett


def draw_outside(cov, families, d, span, draws, size, rng, quenched=True):
    r"""The leaves of ``families`` further level-0 families, each of covariance ``cov`` (m, m), seen from
    draws x size particles in d dimensions with an explicit span of ``span`` dimensions (eqs. 77-78):
    annealed, or quenched when ``quenched`` and the draws stay below QUENCHED_NUMBERS numbers. Their means
    are independent of the span's (*approximation A2* for the particle's complement direction), so in
    any orthonormal basis a family's coordinates are :math:`C^{1/2}` times standard normals, independent
    between coordinates: ``span`` of them in the span, one along the particle's complement part, and
    the squared norm of the d - span - 1 others. Returns an
    :class:`~cfgphase.solvers.theory.reduction.Outside`."""
    m = cov.shape[0]
    count, var = families * m, float(cov[0, 0])
    if not quenched or draws * size * count * d > QUENCHED_NUMBERS:
        return Outside(count, var)
    chol = np.linalg.cholesky(cov)

    def coordinates(n):  # (draws, size, count, n): n coordinates of every outside leaf
        z = chol @ rng.standard_normal((draws, size, families, m, n))
        return z.reshape(draws, size, count, n)

    rest = coordinates(max(d - span - 1, 0))
    along = coordinates(1)[..., 0] if d > span else np.zeros((draws, size, count))
    return Outside(count, var, coordinates(span), along, np.einsum("gbnk,gbnk->gbn", rest, rest))


def given_outside(coords, span, var, draws, size, rng, quenched=True):
    r"""The outside leaves of a given tree (eq. 78): ``coords`` (count, d) their coordinates in an
    orthonormal basis whose first ``span`` vectors span the explicit leaves. Their span coordinates are
    exact; each particle sees their complement parts from its own uniformly random direction of the
    complement (frozen along its path, *A4*). Annealed (with variance ``var``) when not ``quenched`` or
    beyond QUENCHED_NUMBERS numbers."""
    count, d = coords.shape
    if not quenched or draws * size * count * 2 > QUENCHED_NUMBERS:
        return Outside(count, var)
    complement = coords[:, span:]
    if d > span:
        direction = rng.standard_normal((draws, size, d - span))
        direction /= np.linalg.norm(direction, axis=2, keepdims=True)
        projection = direction @ complement.T
    else:
        projection = np.zeros((draws, size, count))
    sq_perp = np.maximum(np.einsum("nk,nk->n", complement, complement) - projection ** 2, 0.0)
    return Outside(count, var, np.broadcast_to(coords[:, :span], (draws, size, count, span)), projection, sq_perp)


def explicit_leaves(branching, level, target, d):
    """The leaves kept in the span (eq. 76) and the target's among them: the target's level-0 family
    first, then whole further families while they fit in d dimensions. ValueError naming ``d`` when the
    target's family alone does not fit."""
    family = int(np.prod(branching[1:]))
    if family > d:
        raise ValueError(f"d: the finite-d theory of a tree keeps the {family} leaves of the target's level-0 family "
                         f"explicitly and needs d >= {family}, got d = {d}")
    own = int(leaf_ancestors(branching, 0)[np.flatnonzero(leaf_ancestors(branching, level) == target)[0]])
    families = [own] + [f for f in range(branching[0]) if f != own][:d // family - 1]
    leaves = np.concatenate([np.arange(f * family, (f + 1) * family) for f in families])
    return leaves, np.flatnonzero(leaf_ancestors(branching, level)[leaves] == target)


def tree_prediction(d, omega=None, *, branching, level_vars, level=None, guidance_scale=None, sampler="ode",
                    process="ou", class_var=0.25, means=None, target=0, particles=PARTICLES, quenched=True, seed=0):
    r"""Prediction of guided sampling of a tree of classes at dimension ``d`` (docs/theory.md eqs. 74-79).

    Parameters
    ----------
    d : int >= 2
        At least the number of leaves of one level-0 family, :math:`\prod_{l\ge1}K_l`.
    omega : float or schedule of forward time (excess convention); or ``guidance_scale`` = 1 + omega.
    branching, level_vars, level : the tree, as :meth:`Model.hierarchical` (``level``: the level whose
        nodes are the classes, default the leaves; the target is any node of it, all are exchangeable).
    sampler : 'ode', 'sde' or a Sampler
        Its grid and start (default: signal-to-noise 1e-4 with :math:`E|x_0|^2 = d(\sum_l v_l + s^2)`);
        the default steppers only (heun, exponential).
    process, class_var : the forward process and :math:`s^2` (isotropic).
    means : array_like (leaves, d), optional
        Condition on one drawn tree (e.g. ``Model.hierarchical(...).means``): the explicit leaves are
        these, and only the particles, the noise and the leaves outside the span are random (eq. 79).
        Default: every draw of DRAW_SIZE particles has its own tree.
    target : int
        With ``means``: the guided node of ``level`` (numbered depth first, as the model's ``target``).
    particles : int
        Particles in all, in draws of DRAW_SIZE (one tree each, at least 2 draws).
    quenched : bool
        The families beyond the explicit ones quenched per particle (eq. 78; when their arrays stay
        below QUENCHED_NUMBERS numbers) or annealed (eq. 77).
    seed : int or numpy Generator
        The prediction's random numbers (trees, start, noise).

    Returns a :class:`~cfgphase.solvers.theory.meanfield.MeanFieldPrediction`: the expectation over
    draws of the tree of each statistic as the simulator measures one draw (mean_ratio, var_par,
    var_perp about the draw's own mean, t_condensation from the draw's mean target posterior), with
    the standard errors of those means over draws; ``distortion`` for a leaf target only (a
    super-class is multimodal, eq. 13 does not apply); with ``means`` and a super-class target,
    ``inputs['mode_weights']``: the fraction of particles whose largest-posterior leaf at the end is each
    of the target's leaves (in leaf order; the simulator's ``mode_weight_j``); ``inputs['method']`` is
    'reduction' when every
    leaf is explicit (exact), else 'reduction+quenched' or 'reduction+annealed' (eqs. 77-78).
    """
    start = time.perf_counter()
    d = check_dimension(d)
    # the model's own checks of the tree, at d = 1 where drawing its means costs nothing
    model = Model.hierarchical(d=1, branching=branching, level_vars=level_vars, class_var=class_var, level=level,
                               process=process)
    branching, level_vars, level = model.hierarchy
    if np.ndim(model.class_var) != 0:
        raise ValueError("class_var: the theory of a tree covers isotropic classes (one class_var)")
    seed, process, sampler = check_inputs(particles, 2 * DRAW_SIZE, seed, process, sampler)
    total_var = float(sum(level_vars))
    omega = excess_weight(omega, guidance_scale)
    grid, bound = sampler_grid(sampler, process, d * (total_var + model.class_var), model.class_var, omega)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < model.K:
        raise ValueError(f"target must be a node of level {level} in [0, {model.K - 1}], got {target!r}")
    leaves, targets = explicit_leaves(branching, level, int(target), d)
    n_leaves = int(np.prod(branching))
    rng = np.random.default_rng(seed)
    draws = int(particles) // DRAW_SIZE
    if means is None:
        L = draw_tree_factors(tree_covariance(branching, level_vars, leaves), d, draws, rng)
    else:
        means = np.asarray(means, dtype=float)
        if means.shape != (n_leaves, d) or not np.all(np.isfinite(means)):
            raise ValueError(f"means must be finite, of shape ({n_leaves}, {d}) (one row per leaf), got {means.shape}")
        # coordinates of the explicit leaves in an orthonormal basis of their span: means.T = O R, O (d, d)
        basis, coords = np.linalg.qr(means[leaves].T, mode="complete")
        L = np.repeat(coords[:leaves.size].T[None], draws, axis=0)
    family = int(np.prod(branching[1:]))
    if leaves.size == n_leaves:
        outside = None
    elif means is None:
        outside = draw_outside(tree_covariance(branching, level_vars, np.arange(family)),
                               (n_leaves - leaves.size) // family, d, leaves.size, draws, DRAW_SIZE, rng, quenched)
    else:
        outside = given_outside(np.delete(means, leaves, axis=0) @ basis, leaves.size, total_var, draws, DRAW_SIZE,
                                rng, quenched)
    reduced = _Model(d, model.K, total_var, total_var, model.class_var, process, bound)
    run = span_run(reduced, sampler.kind, grid, L, targets, DRAW_SIZE, rng, outside=outside)
    leaf_target = targets.size == 1
    if leaf_target:
        s2 = model.class_var

        def excess(v):  # v/s^2 - 1 - log(v/s^2): one direction's KL, times 2
            return v / s2 - 1 - np.log(v / s2)

        run["distortion"] = 0.5 / d * ((d - 1) * excess(run["var_perp"]) + excess(run["var_par"])) + \
            run["rho"] * (run["mean_ratio"] - 1) ** 2 / (2 * s2)
    stats = {key: over_draws(run[key]) if key in run else (None, None) for key in (
        "mean_ratio", "var_par", "var_perp", "distortion", "t_c", "rho")}
    inputs = dict(d=d, K=model.K, components=n_leaves, omega=None if callable(omega) else omega,
                  guidance_scale=None if callable(omega) else 1.0 + omega, mean_var=None, class_var=model.class_var,
                  target_norm=stats["rho"][0], process=process.name, sampler=sampler.kind,
                  schedule=repr(omega) if callable(omega) else "constant", t_max=float(grid[0]),
                  steps=grid.size - 1, disorder="hierarchical", branching=list(branching),
                  level_vars=list(level_vars), level=level, explicit_leaves=int(leaves.size),
                  tree="given" if means is not None else "drawn",
                  method="reduction" if outside is None else "reduction+annealed" if outside.span is None
                  else "reduction+quenched", particles=draws * DRAW_SIZE,
                  seed=seed if isinstance(seed, (int, np.integer)) else None,
                  seconds=time.perf_counter() - start)
    if means is not None:  # one tree: pooled over draws, as the simulator pools its particles
        # t_c from the mean posterior of all particles, jackknife over draws (eq. 14)
        stats["t_c"] = condensation_time(grid, run["posterior"], np.full(draws, DRAW_SIZE))
        if not leaf_target:  # the occupancy of the target's leaves
            inputs["mode_weights"] = (np.bincount(run["mode"].ravel(), minlength=targets.size) /
                                      run["mode"].size).tolist()
    values = [stats[k][0] for k in ("mean_ratio", "var_par", "var_perp", "distortion")]
    finite = all(v is not None and math.isfinite(v) for v in values[:3])
    t_c, t_c_se = stats["t_c"]
    return MeanFieldPrediction(
        inputs, t_c, None, None, *values, None, None, 0, finite,
        "finite-d tree " + inputs["method"] if finite else "degenerate run: a statistic is not finite",
        mean_ratio_stderr=stats["mean_ratio"][1], var_par_stderr=stats["var_par"][1],
        var_perp_stderr=stats["var_perp"][1], distortion_stderr=stats["distortion"][1], t_condensation_stderr=t_c_se)
