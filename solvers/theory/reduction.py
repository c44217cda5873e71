r"""Guided sampling reduced to the span of finitely many class means (docs/theory.md eqs. 63, 74-79).

The class posterior depends on x only through its overlaps :math:`x\cdot\mu_k`, and every class-mean
estimate lies in the span of the means, so with K means in d > K dimensions the d-dimensional
dynamics reduces exactly to the K coordinates c of x in an orthonormal basis of the span and the
squared norm ``rest`` of its complement (eq. 63). The means enter through their coordinates ``L``
(K, K) in that basis, one set per *draw* of the means, shared by the particles of the draw.

Optionally the means in the span are only some of the classes (a family of a tree, eq. 76): the
other leaves enter through their annealed partition function and their posterior mean, which is
parallel to x (eq. 77), so that the reduction still closes on (c, rest).

With K > d the same integration runs in the whole space (D = d coordinates, no complement). Either way it can
follow each particle's displacement along every mean, so that the draw's shared mean splits exactly into the
classes' diagonal and cross terms (eqs. 104-108, :func:`shared_mean_terms`).

Conventions: forward time, sampling runs down the grid; the excess weight omega
(:math:`s_c + \omega(s_c - s_u)`); all leaves (components) have equal weight; the target class is
the mixture of the leaves ``targets`` and :math:`\mu_c` their mean. Arrays: (draws, size, D) for
the coordinates (D = K in the span), (draws, size) for the complement.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from cfgphase.physics.weights import weight_at
from cfgphase.solvers.theory.steps import step
from cfgphase.solvers.sampling.observables import crossing_time


class Outside(NamedTuple):
    r"""Leaves outside the span whose means are independent of the span's (eqs. 77-78): ``count`` of them,
    each :math:`\mathcal N(0, V I)` with V = ``var``. Quenched, each particle carries its own draw of
    them (draws, size, count, ...): ``span`` their coordinates in the span's basis (..., K), ``projection``
    their projection on the direction of the particle's complement part and ``sq_perp`` their squared
    norm orthogonal to both (the complement direction frozen along the path); annealed, these are None."""

    count: int
    var: float
    span: np.ndarray | None = None
    projection: np.ndarray | None = None
    sq_perp: np.ndarray | None = None


def span_run(model, kind, grid, L, targets, size, rng, outside=None, track=False):
    r"""Integrate the reduced sampler for every draw of the means and measure each draw as the
    simulator does (eqs. 63, 78).

    ``model`` gives ``d``, ``class_var``, ``process``, ``omega`` and ``at(t) -> (a, Gamma, Q)``;
    ``kind`` 'ode' (Heun, Euler into zero noise) or 'sde' (exact transition with the estimate frozen);
    ``L`` (draws, K, D): row k holds the coordinates of mean k in an orthonormal basis of D <= d
    dimensions that holds the means (D = K: their span; D = d with K > d: the whole space, no complement);
    ``targets``: indices of the target's leaves among the K; ``size`` particles per draw. ``outside``: the
    leaves outside the span (an :class:`Outside`), or None. ``track`` (without ``outside``): also follow each
    particle's displacement along every mean (eq. 105's q, exact here).

    Returns per-draw arrays ``mean_ratio`` :math:`E[x\cdot\mu_c]/|\mu_c|^2`, ``var_par``, ``var_perp``
    (sample variances about the draw's own mean, eq. 13), ``rho`` :math:`|\mu_c|^2/d`, and
    ``t_c`` (the draw's crossing of its mean target posterior at 1/2, NaN without one), ``shared_mean``
    (eq. 104's :math:`\hat S`, unbiased from the two halves of the draw's particles: the product of their
    sample means orthogonal to :math:`\mu_c`, over d - 1); per particle ``mode`` (draws, size), the target
    leaf of largest posterior at the last node (its position in ``targets``); ``posterior`` (nodes, draws),
    each draw's mean target posterior on the grid. With ``track``, ``coefficients`` (draws, size, K): each
    particle's x is ``coefficients @ L`` plus the propagated noise (SDE) or the propagated initial noise (ODE),
    which the guidance does not move; and ``positions`` (draws, size, D), x.
    """
    d, nu = model.d, model.class_var
    draws, K, D = L.shape
    if track and outside is not None:
        raise ValueError("track: the displacement along the means is followed without outside leaves only")
    targets = np.asarray(targets)
    L_T = np.ascontiguousarray(L.transpose(0, 2, 1))
    sq_norms = np.einsum("gkj,gkj->gk", L, L)[:, None, :]
    n_out, v_out = (0, 0.0) if outside is None else outside[:2]
    quenched = outside is not None and outside.span is not None
    if quenched:
        out_sq_norms = np.einsum("gbnk,gbnk->gbn", outside.span, outside.span) + outside.projection ** 2 + \
            outside.sq_perp
    a0, gamma0, _ = model.at(grid[0])
    # exact draw of the noised mixture at t_max: a leaf uniformly, then x = a mu_k + sqrt(Gamma) z
    start = rng.integers(0, K + n_out, (draws, size))
    inside = start < K
    c = a0 * np.take_along_axis(L, np.minimum(start, K - 1)[:, :, None], axis=1) + math.sqrt(gamma0) * \
        rng.standard_normal((draws, size, D))
    rest = gamma0 * rng.chisquare(d - D, (draws, size)) if d > D else np.zeros((draws, size))
    q = a0 * (start[:, :, None] == np.arange(K)) if track else None
    if n_out:  # an outside leaf's mean is independent of the span: x is N(0, a^2 V + Gamma) in every direction
        spread = math.sqrt(1.0 + a0 * a0 * v_out / gamma0)
        c = np.where(inside[:, :, None], c, math.sqrt(gamma0) * spread * rng.standard_normal(c.shape))
        rest = np.where(inside, rest, rest * spread ** 2)

    # ODE, quenched outside: how far the guidance has lowered each outside overlap with the complement (eq. 78)
    pushed = np.zeros_like(outside.projection) if quenched and kind == "ode" else None

    def estimate(c, rest, t):
        """Span coordinates of the guided estimate, its factor k on the complement, pi_c, the
        posterior weights of the quenched outside leaves (None otherwise) and, without outside leaves, the
        estimate's coefficients on the means, (draws, size, K) (None otherwise)."""
        a, gamma, _ = model.at(t)
        logits = (a / gamma) * (c @ L_T) - (a * a / (2 * gamma)) * sq_norms  # x . mu_k = (L c)_k
        shift = logits.max(axis=2)
        if quenched:  # eq. 78: each outside leaf's overlap, exact in the span, frozen in the complement
            comp = np.sqrt(rest)
            comp_overlap = comp[:, :, None] * outside.projection - (0.0 if pushed is None else pushed)
            out_logits = (a / gamma) * (np.einsum("gbk,gbnk->gbn", c, outside.span) + comp_overlap) - \
                (a * a / (2 * gamma)) * out_sq_norms
            shift = np.maximum(shift, out_logits.max(axis=2))
            w_out = np.exp(out_logits - shift[:, :, None])
            out_sum = w_out.sum(axis=2)
        elif n_out:  # eq. 77: log of the outside leaves' annealed sum, with |x|^2/(2 Gamma) added as to the logits
            q_out = gamma + a * a * v_out
            q = np.einsum("gbk,gbk->gb", c, c) + rest
            log_out = math.log(n_out) + 0.5 * d * math.log(gamma / q_out) + q * (1 / gamma - 1 / q_out) / 2
            shift = np.maximum(shift, log_out)
            out_sum = np.exp(log_out - shift)
        w = np.exp(logits - shift[:, :, None])
        z = w.sum(axis=2) + (out_sum if n_out else 0.0)
        w_target = w[:, :, targets]
        within = w_target / w_target.sum(axis=2, keepdims=True)  # the conditional: the target's own leaves
        pi = w_target.sum(axis=2) / z
        omega = weight_at(model.omega, t)
        beta = -omega * w / z[:, :, None]
        beta[:, :, targets] += (1.0 + omega) * within
        m = beta @ L
        if not n_out:
            return m, 0.0, pi, None, beta
        if not quenched:  # the annealed outside posterior mean is parallel to x: k x
            k = -omega * (out_sum / z) * a * v_out / q_out
            return m + k[:, :, None] * c, k, pi, None, None
        w_out = w_out / z[:, :, None]
        # in the span the outside means are explicit; in the complement their posterior mean is along x_comp
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(comp > 0, -omega * np.einsum("gbn,gbn->gb", w_out, comp_overlap) / comp ** 2, 0.0)
        return m - omega * np.einsum("gbn,gbnk->gbk", w_out, outside.span), k, pi, w_out, None

    posterior, stage = [], {}

    def second_stage(c, rest, t):  # Heun's second stage, keeping its coefficients for the tracked q
        m, k, _, _, stage["beta"] = estimate(c, rest, t)
        return m, k

    for t, t_next in zip(grid[:-1], grid[1:]):
        t, t_next = float(t), float(t_next)
        m, k, pi, w_out, beta = estimate(c, rest, t)
        posterior.append(pi.mean(axis=1))
        noise = None
        if kind == "sde":  # the complement has d - D dimensions: none when the means fill the space
            xi = rng.standard_normal(c.shape)
            chi = rng.chisquare(d - D - 1, rest.shape) if d > D + 1 else 0.0
            noise = (xi, rng.standard_normal(rest.shape) if d > D else 0.0, chi)
        stage.clear()
        c, rest, f, coef = step(model, kind, t, t_next, c, rest, (m, k), second_stage, noise)
        if track:
            q = _tracked(model, kind, t, t_next, q, beta, stage.get("beta"), f, coef)
        if pushed is not None:  # self-avoidance (eq. 60, self term): the push along -mu_j, orthogonal to x
            pushed = pushed * f[:, :, None] + (coef * weight_at(model.omega, t)) * w_out * outside.sq_perp
    posterior.append(estimate(c, rest, float(grid[-1]))[2].mean(axis=1))
    a_end, gamma_end, _ = model.at(float(grid[-1]))
    target_logits = (a_end / gamma_end) * (c @ L_T[:, :, targets]) - (a_end * a_end / (2 * gamma_end)) * \
        sq_norms[:, :, targets]
    centre = L[:, targets].mean(axis=1)  # mu_c: the mean of the target's leaves, (draws, K)
    norm = np.sqrt(np.einsum("gk,gk->g", centre, centre))
    u = centre / norm[:, None]
    y = np.einsum("gbk,gk->gb", c, u)
    perp = c - y[:, :, None] * u[:, None, :]
    # eq. 104: the complement has mean zero by isotropy, so the span's halves carry m_perp
    shared = np.einsum("gk,gk->g", *half_means(perp)) / (d - 1)
    perp -= perp.mean(axis=1, keepdims=True)
    crossings = [crossing_time(grid, curve) for curve in np.array(posterior).T]
    run = dict(mean_ratio=y.mean(axis=1) / norm, var_par=y.var(axis=1, ddof=1),
               var_perp=((perp ** 2).sum(axis=(1, 2)) / (size - 1) + rest.mean(axis=1)) / (d - 1),
               rho=norm ** 2 / d, t_c=np.array([np.nan if v is None else v for v in crossings]),
               mode=target_logits.argmax(axis=2), posterior=np.array(posterior), shared_mean=shared)
    if track:
        run.update(coefficients=q, positions=c)
    return run


def _tracked(model, kind, t, t_next, q, beta, beta_next, f, coef):
    """One step of the displacement q (draws, size, K) along the means (eq. 105's q): the step of x with the
    estimate's coefficients ``beta`` on the means (at the predictor ``beta_next`` for Heun) and no noise.
    Without outside leaves the estimate has no part along x, so the linear factor is the process's alone."""
    if kind == "sde":
        return f * q + coef * beta
    h = t_next - t
    A, B = model.process.ode_coefficients(t, model.class_var)
    predictor = q + h * (A * q + B * beta)
    if beta_next is None:  # Euler into zero noise, as the sampler
        return predictor
    A2, B2 = model.process.ode_coefficients(t_next, model.class_var)
    return q + 0.5 * h * (A * q + B * beta + A2 * predictor + B2 * beta_next)


def half_means(values):
    """The means over the first and the second half of the particles (axis 1) of ``values`` (draws, size, ...): the
    product of the two is unbiased for the square of the draw's mean."""
    half = values.shape[1] // 2
    return values[:, :half].mean(axis=1), values[:, half:].mean(axis=1)


def draw_coordinates(d, K, target, mean_var, draws, rng):
    r"""(draws, K, D) coordinates of K means for :func:`span_run`: mean 0 is the target,
    :math:`|\mu_c| =` ``target`` along the first axis, the others i.i.d. :math:`\mathcal N(0, \sigma_\mu^2 I_d)`.
    With K <= d, D = K, in the orthonormal basis of their span (Bartlett: the Cholesky factor of the Gram
    matrix, row k's diagonal a :math:`\chi_{d-k}`); with K > d, D = d, in the original axes."""
    s = math.sqrt(mean_var)
    if K > d:
        L = s * rng.standard_normal((draws, K, d))
        L[:, 0] = 0.0
        L[:, 0, 0] = target
        return L
    L = np.zeros((draws, K, K))
    L[:, 0, 0] = target
    for i in range(1, K):
        L[:, i, :i] = s * rng.standard_normal((draws, i))
        L[:, i, i] = s * np.sqrt(rng.chisquare(d - i, draws))
    return L


def shared_mean_terms(L, coefficients, d):
    r"""The draw's shared mean S of eq. (104) split as :math:`m_\perp = \sum_k b_k\mu_{k\perp}` (eq. 105), per
    draw: (S, diagonal, cross), each (draws,), with S = diagonal + cross and
    :math:`\text{diagonal} = \sum_k b_k^2|\mu_{k\perp}|^2/(d-1)`,
    :math:`\text{cross} = \sum_{k\ne l} b_kb_l\,\mu_{k\perp}\cdot\mu_{l\perp}/(d-1)` (eq. 108), where eq. (105)
    takes the cross terms to average out over draws. ``L`` (draws, K, D) as for :func:`span_run` with the
    target mean 0 along the first axis; ``coefficients`` (draws, size, K) from :func:`span_run` with ``track``.
    The squares are unbiased: products of the b of the two halves of the draw's particles."""
    total, diagonal = _pair_sums(*half_means(coefficients), _perpendicular(L), d)
    return total, diagonal, total - diagonal


def _perpendicular(L):
    """The means' parts orthogonal to mu_c (the first axis), (draws, K, D)."""
    perp = L.copy()
    perp[:, :, 0] = 0.0
    return perp


def _pair_sums(u, v, perp, d):
    """Per draw, (sum_k u_k mu_k_perp) . (sum_l v_l mu_l_perp) / (d - 1) and its diagonal, the terms k = l."""
    total = np.einsum("gj,gj->g", np.einsum("gk,gkj->gj", u, perp), np.einsum("gk,gkj->gj", v, perp)) / (d - 1)
    return total, np.einsum("gk,gk,gkj,gkj->g", u, v, perp, perp) / (d - 1)


def cross_term_split(L, coefficients, d, reference):
    r"""The cross terms of eq. (108) split around a reference b per class (eq. 109), per draw: (A, B, C), each
    (draws,), with cross = A + 2B + C exactly. With :math:`G_{kl} = \mu_{k\perp}\cdot\mu_{l\perp}/(d-1)` for
    k != l, :math:`b_k = r_k + \delta_k` (``reference`` r, (draws, K), e.g. the mean b of the classes of k's (C, R)
    cell) and :math:`h_k = \sum_{l\ne k} r_l G_{kl}`, the field of the others' reference displacements along
    :math:`\mu_k`: :math:`A = \sum_{k\ne l} r_kr_lG_{kl}`, :math:`B = \sum_k\delta_kh_k`,
    :math:`C = \sum_{k\ne l}\delta_k\delta_lG_{kl}`. A reference that is a function of each class's own
    (C, R) gives E[A] = 0 over draws (the directions orthogonal to :math:`\mu_c` are isotropic and
    independent of C and R), so 2B + C estimates the mean cross terms without A's variance. ``L`` and
    ``coefficients`` as for :func:`shared_mean_terms`; products of the two halves' b, unbiased."""
    perp = _perpendicular(L)

    def form(u, v):  # sum_{k != l} u_k v_l G_kl, per draw
        total, diagonal = _pair_sums(u, v, perp, d)
        return total - diagonal

    b1, b2 = half_means(coefficients)
    d1, d2 = b1 - reference, b2 - reference
    return form(reference, reference), 0.5 * (form(d1, reference) + form(d2, reference)), form(d1, d2)


def response_along_particles(L, coefficients, positions, d, reference):
    r"""Eq. (109)'s response 2B split per particle (eq. 111), per draw: (the part of the overlaps along each particle's
    own direction, the rest), each (draws,), summing to the 2B of :func:`cross_term_split` to rounding. Particle i
    sees :math:`G_{kl} = G^w_{kl}(i) + G^e_{kl}(i)` with :math:`G^w_{kl}(i) = (\mu_{k\perp}\cdot\hat x_{i\perp})
    (\mu_{l\perp}\cdot\hat x_{i\perp})/(d-1)`, and :math:`B = n^{-1}\sum_i\sum_{k\ne l} r_l G_{kl}(q_{ik} - r_k)`.
    ``positions`` (draws, n, D) from :func:`span_run` with ``track``, in the whole space (D = d: K >= d, since x's
    part outside a smaller span is not followed); the rest as for :func:`cross_term_split`."""
    if L.shape[2] != d:
        raise ValueError(f"positions: the split needs x in the whole space (D = d = {d}), got D = {L.shape[2]} (K < d)")
    perp = _perpendicular(L)
    x = positions.copy()
    x[:, :, 0] = 0.0
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    w = np.einsum("gkj,gnj->gnk", perp, x)  # mu_k_perp . x_hat_i_perp, (draws, n, K)
    delta = coefficients - reference[:, None, :]
    along = (np.einsum("gnk,gnk->gn", delta, w) * np.einsum("gnl,gl->gn", w, reference)
             - np.einsum("gnk,gnk,gk->gn", delta, w * w, reference)).mean(axis=1) / (d - 1)
    total, diagonal = _pair_sums(delta.mean(axis=1), reference, perp, d)
    return 2.0 * along, 2.0 * (total - diagonal - along)


def over_draws(values):
    """Mean over draws and its standard error; (None, None) when a value is missing (NaN)."""
    values = np.asarray(values, dtype=float)
    if np.any(np.isnan(values)):
        return None, None
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))
