r"""The dominant other classes of each particle as dynamic variables (docs/theory.md eqs. 95-102).

The quenched environment of eqs. (56)-(60) freezes each particle's other classes at their ranks. That
is wrong in two opposite ways: the noise renews which classes dominate (eq. 61; for the SDE at every
weight, eq. 106), and negative guidance pulls the particle toward the classes that dominate, which
raises their logits and keeps them on top. Here the classes near the top are explicit, each with its own
coordinates relative to the particle, and both effects follow from their dynamics.

Geometry (eq. 95). With :math:`u = \mu_c/|\mu_c|`, :math:`x = y\,u + x_\perp`, :math:`p = |x_\perp|^2`
and :math:`\hat x_\perp = x_\perp/\sqrt p`, one other class is
:math:`\mu_k = \sigma_\mu(C_k u + w_k\hat x_\perp + \sqrt{R'_k}\,e_k)`, with :math:`e_k` a unit vector
orthogonal to u and :math:`\hat x_\perp`, and :math:`n_k = C_k^2 + w_k^2 + R'_k = |\mu_k|^2/\sigma_\mu^2`.
Its relative log-weight (eq. 56) is
:math:`\varepsilon_k = \beta(yC_k + \sqrt p\,w_k) - \tfrac c2 n_k` with :math:`\beta = a_t\sigma_\mu/\Gamma_t`,
:math:`c = a_t^2\sigma_\mu^2/\Gamma_t`. C_k and n_k are fixed; w_k moves with the particle's
perpendicular direction (eq. 96) and with the guidance's pull toward class k (eq. 97).

The pool (eq. 98): the classes with :math:`N S(\varepsilon) <` ``EXPECTED`` (S the survival of
eq. 56 at the particle's (t, |x|)) are explicit; the rest enter through their conditional mean
(eq. 57). Classes that cross the threshold upward are drawn by time reversal of the natural
dynamics (eq. 98), those that fall below it leave. The SDE moves them with its exact transition
(eqs. 96-97), the probability flow with Heun's two stages (eqs. 100-102), where the only renewal is
the rotation of the particle's perpendicular direction by its pulls toward its explicit classes.
With ``vectors`` (eq. 103) each explicit class is kept as a vector in the complement of u and the
particle's perpendicular part too, so that the pull directions need not be orthogonal (A6).
A ``probe`` (eq. 111) gives each explicit class a random sign at entry and adds that sign times a field to its
overlap: the linear response of the classes' displacements to the shared mean, measured by the signed displacement.

Conventions: arrays over particles have a leading axis n; over a particle's explicit classes a
trailing axis of length ``CAPACITY``; ``alive`` marks the occupied slots.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln, ndtr, ndtri

from cfgphase.physics.weights import weight_at

#: Expected number of explicit classes per particle (the threshold N S(e) = EXPECTED, eq. 98) and the
#: slots per particle (a Poisson(12) count exceeds 40 with probability 1e-10; the attracted classes stay).
EXPECTED, CAPACITY = 12, 40
#: Nodes in R (the squared norm of a class orthogonal to x, chi^2_{d-1}) of the sampler of eq. (98).
R_NODES = 48


def log_mean_weight(b, c, d):
    r""":math:`\log E e^\varepsilon = -\tfrac d2\log(1 + c) + b^2/(2(1 + c))` (eq. 56), elementwise in b."""
    return -0.5 * d * math.log1p(c) + b * b / (2.0 * (1.0 + c))


def orthogonal_norm2(norm2, C, w):
    r""":math:`R' = n - C^2 - w^2`, a class's squared norm orthogonal to u and :math:`\hat x_\perp` (eq. 95),
    elementwise, floored at 0."""
    return np.maximum(norm2 - C * C - w * w, 0.0)


def _pulled(q, linear, coef, g, s, tilt, weights):
    r""":math:`(\text{linear} - \text{coef}\,g\sigma_\mu\tau)\,q - \text{coef}\,g\,\pi_k` (eq. 107), (n, slots): each
    explicit class's displacement q carried by the particle's linear factor (the rest's tilt ``tilt`` included)
    plus its own pull; with (linear, coef) = (:math:`\varrho`, :math:`c_{step}`) one SDE step, with
    (:math:`A_t`, :math:`B_t`) the probability flow's velocity."""
    return (linear - coef * g * s * tilt)[:, None] * q - (coef * g)[:, None] * weights


def _window(b, c, level):
    r"""The :math:`\zeta` interval where :math:`b\zeta - \tfrac c2\zeta^2 > \text{level}`, as the upper-tail
    probabilities of its ends, :math:`\bar\Phi(\zeta_-)` and :math:`\bar\Phi(\zeta_+)` (both 0 where it is empty)."""
    disc = b * b - 2.0 * c * level
    root = np.sqrt(np.maximum(disc, 0.0))
    empty = disc <= 0
    return np.where(empty, 0.0, ndtr(-(b - root) / c)), np.where(empty, 0.0, ndtr(-(b + root) / c))


class AboveThreshold:
    r"""The prior of one other class conditioned on :math:`\varepsilon > e` (eq. 98), per particle.

    :math:`\zeta\sim\mathcal N(0, 1)` and :math:`R\sim\chi^2_{d-1}` independent. For each R the event is
    a :math:`\zeta` interval (``_window``), so R has the density
    :math:`f_{d-1}(R)\,[\Phi(\zeta_+) - \Phi(\zeta_-)]` and the survival is its integral. It is
    tabulated on ``R_NODES`` nodes and exponential between them (exact for a log-linear density);
    a draw takes R from it and :math:`\zeta` from the normal truncated to the interval.

    b (n,), c float, d int, threshold (n,): per-particle :math:`b = a\sigma_\mu|x|/\Gamma` and e."""

    def __init__(self, b, c, d, threshold):
        k = d - 1
        self.b, self.c, self.threshold = b, c, threshold
        self.dr = (k + 8.0 * math.sqrt(2.0 * k) + 10.0) / R_NODES
        self.r = np.arange(1, R_NODES + 1) * self.dr
        log_f = (k / 2 - 1) * np.log(self.r) - self.r / 2 - (k / 2) * math.log(2.0) - gammaln(k / 2)
        lo, hi = _window(b[:, None], c, threshold[:, None] + 0.5 * c * self.r[None, :])
        with np.errstate(divide="ignore"):
            log_density = log_f[None, :] + np.log(np.maximum(lo - hi, 0.0))
        top = log_density.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        log_density = np.maximum(log_density, top - 60.0)
        left, right = log_density[:, :-1], log_density[:, 1:]
        self.slope = (right - left) / self.dr
        flat = np.abs(self.slope) < 1e-9
        growth = np.where(flat, self.dr, np.expm1(self.slope * self.dr) / np.where(flat, 1.0, self.slope))
        cell = np.exp(left) * growth  # integral of the exponential interpolation over each cell
        cell[~np.isfinite(top[:, 0]) | (top[:, 0] == 0.0)] = 0.0
        self.left = left
        self.cumulative = np.cumsum(cell, axis=1)
        self.survival = self.cumulative[:, -1]

    def draw(self, owner, rng):
        r"""One class for each entry of ``owner`` (sorted indices of particles with positive survival):
        (zeta, R) from the conditioned prior of that particle."""
        cells = self.cumulative.shape[1]
        total = self.survival[owner]
        # one increasing array over all particles: cumulative fractions shifted by the particle index
        ladder = (self.cumulative / np.maximum(self.survival, 1e-300)[:, None] + np.arange(self.b.size)[:, None]).ravel()
        u = rng.random(owner.size)
        flat = np.searchsorted(ladder, owner + u, side="left")
        cell = np.clip(flat - owner * cells, 0, cells - 1)
        below = np.where(cell > 0, self.cumulative[owner, cell - 1], 0.0)
        mass = self.cumulative[owner, cell] - below
        frac = np.clip((u * total - below) / np.where(mass > 0, mass, 1.0), 0.0, 1.0)
        s = self.slope[owner, cell]
        small = np.abs(s * self.dr) < 1e-9
        offset = np.where(small, frac * self.dr,
                          np.log1p(frac * np.expm1(s * self.dr)) / np.where(small, 1.0, s))
        r = self.r[cell] + np.clip(offset, 0.0, self.dr)
        lo, hi = _window(self.b[owner], self.c, self.threshold[owner] + 0.5 * self.c * r)
        tail = lo - rng.random(owner.size) * (lo - hi)
        zeta = -ndtri(np.clip(tail, 1e-300, 1.0 - 1e-16))
        return zeta, r


class CompetitorPool:
    r"""Explicit other classes of n particles: (C, w, n) per slot (eq. 95), ``alive`` mask.

    The pool is filled at the first call of :meth:`renew` with the classes above the threshold
    (a Poisson number of draws of :class:`AboveThreshold`), and afterwards gains the classes that
    cross the threshold upward (eq. 98). Each slot also carries the particle's displacement ``q`` along
    its class's part orthogonal to u, per unit of it (eq. 107; passive: nothing else depends on it), and
    the classes that leave are kept in ``departed`` as (particle, C, n, q) until collected."""

    def __init__(self, n, d, others, rng, vectors=False, probe=None):
        self.n, self.d, self.others, self.rng = n, d, others, rng
        shape = (n, CAPACITY)
        self.C, self.w, self.norm2, self.q = np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self.alive = np.zeros(shape, dtype=bool)
        #: eq. 111: with a generator ``probe`` each class draws a sign s = +-1 at entry and its energy takes
        #: beta s ``shift`` (a random field on its overlap, ``shift`` set per time by the Competition); else None
        self.probe, self.shift = probe, 0.0
        self.sign = np.zeros(shape) if probe is not None else None
        self.departed = []  # (particle, C, norm2, q, sign) arrays of the classes that left, since the last collect()
        self.previous = None  # (beta, c, y, p, threshold) at the last renewal
        #: with ``vectors``, each class's part orthogonal to u in units of sigma_mu, (n, CAPACITY, d - 1),
        #: in fixed coordinates of the complement of u (eq. 103); w is then its overlap with x_perp/|x_perp|
        self.Z = np.zeros(shape + (d - 1,)) if vectors else None

    def align(self, direction):
        r""":math:`w_k = z_k\cdot\hat x_\perp` of every explicit class from its vector (eq. 103);
        ``direction`` (n, d - 1) the unit vectors :math:`\hat x_\perp`."""
        self.w = np.where(self.alive, np.einsum("nkd,nd->nk", self.Z, direction), 0.0)

    def energies(self, beta, c, y, p):
        r""":math:`\varepsilon_k = \beta(yC_k + \sqrt p\,w_k) - \tfrac c2 n_k` (eq. 95), -inf in empty slots."""
        e = beta * (y[:, None] * self.C + np.sqrt(p)[:, None] * self.w) - 0.5 * c * self.norm2
        if self.sign is not None:
            e = e + beta * self.shift * self.sign
        return np.where(self.alive, e, -np.inf)

    def advance(self, p_new, along, pull, noise_var=0.0, eta=0.0):
        r"""Move each explicit class with the particle over one step (eqs. 96-97, 100).

        ``along`` (n,) is the new coordinate of :math:`x_\perp` along its old direction,
        :math:`A_\parallel`; ``pull`` (n, S) the particle's displacement along each class's own
        orthogonal direction :math:`e_k` per :math:`\sqrt{R'_k}` (SDE: :math:`-c_{step}\,g\,\sigma_\mu\pi_k`;
        ODE: :math:`\kappa_k` of eq. 100); ``eta`` (n, S) the standard normal noise along :math:`e_k`."""
        r_orth = orthogonal_norm2(self.norm2, self.C, self.w)
        w_new = (along[:, None] * self.w + pull * r_orth
                 + np.sqrt(noise_var * r_orth) * eta) / np.sqrt(p_new)[:, None]
        self.w = np.where(self.alive, w_new, 0.0)

    def renew(self, beta, c, y, p, threshold, sampler, along_over_norm, direction=None):
        r"""Drop the classes below ``threshold`` and add those that crossed it upward (eq. 98).

        ``sampler`` is the :class:`AboveThreshold` of the new time; ``along_over_norm`` (n,) the
        correlation :math:`\varphi = A_\parallel/\sqrt{p'}` of :math:`\hat x_\perp` over the step
        (None at the first call: every class above the threshold is added). A class drawn above the
        threshold now is an entrant when the natural dynamics run backwards over the step take it
        below the threshold of the previous time: the w of an independent class is a Gaussian AR(1)
        with coefficient :math:`\varphi` and its own innovation variance
        :math:`(1-\varphi^2)R'/(d-2)`, :math:`R' = n - C^2 - w^2` (eq. 96), reversible. With vectors,
        ``direction`` (n, d - 1) is :math:`\hat x_\perp` and an entrant's own direction :math:`e_k` is
        drawn uniformly orthogonal to it (eq. 103)."""
        staying = self.energies(beta, c, y, p) > threshold[:, None]
        self._depart(self.alive & ~staying)
        self.alive &= staying
        rng = self.rng
        counts = rng.poisson(self.others * sampler.survival)
        owner = np.repeat(np.arange(self.n), counts)
        zeta, r = sampler.draw(owner, rng)
        psi = np.sqrt(r * rng.beta(0.5, 0.5 * (self.d - 2), owner.size)) * rng.choice([-1.0, 1.0], owner.size)
        norm = np.sqrt(y * y + p)[owner]
        C = (y[owner] * zeta + np.sqrt(p[owner]) * psi) / norm
        w = (np.sqrt(p[owner]) * zeta - y[owner] * psi) / norm
        norm2 = zeta * zeta + r
        if along_over_norm is not None and self.previous is not None:
            beta0, c0, y0, p0, threshold0 = self.previous
            phi = np.clip(along_over_norm[owner], -1.0, 1.0)
            # the class's own innovation (eq. 96): the step's turn of x_perp seen along its orthogonal part R'
            turn = (1.0 - phi * phi) * orthogonal_norm2(norm2, C, w) / max(self.d - 2, 1)
            w_before = phi * w + np.sqrt(turn) * rng.standard_normal(owner.size)
            e_before = beta0 * (y0[owner] * C + np.sqrt(p0[owner]) * w_before) - 0.5 * c0 * norm2
            entrant = e_before < threshold0[owner]
            owner, C, w, norm2 = owner[entrant], C[entrant], w[entrant], norm2[entrant]
        self.previous = (beta, c, y, p, threshold)
        Z = None
        if self.Z is not None:
            along = direction[owner]
            e = rng.standard_normal((owner.size, self.d - 1))
            e -= np.einsum("nd,nd->n", e, along)[:, None] * along
            e /= np.linalg.norm(e, axis=1)[:, None]
            Z = w[:, None] * along + np.sqrt(orthogonal_norm2(norm2, C, w))[:, None] * e
        energy = beta * (y[owner] * C + np.sqrt(p[owner]) * w) - 0.5 * c * norm2
        sign = None
        if self.probe is not None:  # eq. 111: entrants are drawn without the field, and carry it from now on
            sign = self.probe.choice([-1.0, 1.0], owner.size)
            energy = energy + beta * self.shift * sign
        self._insert(owner, C, w, norm2, energy, self.energies(beta, c, y, p), Z, sign)

    def _depart(self, leaving):
        """Record the classes of the slots in the mask ``leaving`` (n, slots) as departed."""
        owner, slot = np.nonzero(leaving)
        if owner.size:
            sign = np.zeros(owner.size) if self.sign is None else self.sign[owner, slot]
            self.departed.append((owner, self.C[owner, slot], self.norm2[owner, slot], self.q[owner, slot], sign))

    def collect(self):
        """The classes that left since the last call: (particle, C, norm2, q, sign), each (m,); sign 0 without
        a probe (eq. 111)."""
        parts, self.departed = self.departed, []
        if not parts:
            return np.zeros(0, dtype=int), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)
        return tuple(np.concatenate(column) for column in zip(*parts))

    def _insert(self, owner, C, w, norm2, energy, current, Z=None, sign=None):
        """Put new classes into free slots (q = 0: no displacement yet); where a particle runs out, keep
        its highest energies (the others depart)."""
        if owner.size == 0:
            return
        order = np.argsort(owner, kind="stable")
        owner, C, w, norm2, energy = owner[order], C[order], w[order], norm2[order], energy[order]
        first = np.searchsorted(owner, owner, side="left")
        rank = np.arange(owner.size) - first
        width = int(rank.max()) + 1
        new = [np.full((self.n, width), v) for v in (0.0, 0.0, 0.0, -np.inf)]
        for arr, val in zip(new, (C, w, norm2, energy)):
            arr[owner, rank] = val
        all_C = np.concatenate([self.C, new[0]], axis=1)
        all_w = np.concatenate([self.w, new[1]], axis=1)
        all_n = np.concatenate([self.norm2, new[2]], axis=1)
        all_q = np.concatenate([self.q, np.zeros((self.n, width))], axis=1)
        all_e = np.concatenate([current, new[3]], axis=1)
        keep = np.argsort(-all_e, axis=1)[:, :CAPACITY]
        kept = np.zeros(all_e.shape, dtype=bool)
        np.put_along_axis(kept, keep, True, axis=1)
        self._depart((np.isfinite(all_e) & ~kept)[:, :CAPACITY])  # entrants that do not fit have no q yet
        if self.sign is not None:
            new_sign = np.zeros((self.n, width))
            new_sign[owner, rank] = sign[order]
            self.sign = np.take_along_axis(np.concatenate([self.sign, new_sign], axis=1), keep, axis=1)
        self.C, self.w, self.norm2, self.q, energies = (np.take_along_axis(arr, keep, axis=1)
                                                        for arr in (all_C, all_w, all_n, all_q, all_e))
        self.alive = np.isfinite(energies)
        if self.Z is not None:
            new_Z = np.zeros((self.n, width, self.d - 1))
            new_Z[owner, rank] = Z[order]
            self.Z = np.take_along_axis(np.concatenate([self.Z, new_Z], axis=1), keep[:, :, None], axis=1)


def environment(population, t, x_norm):
    r"""Per particle of ``population`` (the finite-d population, whose |x| nodes and energy laws of
    eqs. 56 and 59 it shares) at time t (eq. 98): :math:`\beta`, c, the threshold energy e with
    N S(e) = EXPECTED (absolute, as the energies of eq. 95), the log weight of the classes below it
    and their mean :math:`\zeta`, and the :class:`AboveThreshold` sampler. The threshold relative to
    :math:`\log Ee^\varepsilon`, the rest's weight in units of :math:`N Ee^\varepsilon` and its mean
    :math:`\zeta` over the annealed one are linear in |x| between the nodes of eq. (59)."""
    m = population.model
    a, gamma, _ = m.at(t)
    beta, c = a * math.sqrt(m.mean_var) / gamma, a * a * m.mean_var / gamma
    nodes = population._norm_nodes(t, x_norm)
    level = math.log(min(EXPECTED, 0.5 * population.others) / population.others)
    table = []
    for node in nodes:
        law = population._law(t, float(node))
        e = law.top_classes(np.array([[level]]))[0][:, 0]
        weight, zeta_weight = law.rest(e, 1.0)
        # the classes below the threshold lean toward x less than the tilted law (ratio < 1); where their
        # weight underflows the ratio is undefined and multiplies a zero weight
        ratio = zeta_weight[0] / (weight[0] * law.tilted_mean) if weight[0] > 1e-200 else 1.0
        table.append((e[0], math.log(max(weight[0], 1e-300)), min(max(ratio, 0.0), 1.0)))
    table = np.array(table)
    b = beta * x_norm
    log_mean = log_mean_weight(b, c, m.d)
    relative, log_rest, rest_ratio = (np.interp(x_norm, nodes, col) for col in table.T)
    threshold = relative + log_mean
    rest_zeta = rest_ratio * b / (1 + c)
    sampler = AboveThreshold(b, c, m.d, threshold)
    return beta, c, threshold, log_rest + log_mean + math.log(population.others), rest_zeta, sampler


class Competition:
    r"""The population with its dominant other classes explicit and dynamic (eqs. 95-102).

    ``state(y, p, t)`` gives the target posterior and the guided estimate from the explicit classes
    and the rest below the threshold; ``step`` moves (y, p) and the explicit classes with the exact
    SDE transition of eq. (12) (:math:`\hat m` frozen), ``heun_step`` with the probability flow's Heun
    step (eqs. 100-102), and both renew the pool at the new time."""

    def __init__(self, model, population, rng, vectors=False, own_pull=False, field=None, probe=None):
        self.model, self.population, self.rng = model, population, rng
        #: eq. 110: the explicit classes' q without the rest's tilt in its linear factor (their own pull alone)
        self.own_pull = own_pull
        #: eq. 111: None, or a function of t giving the random field's size on the explicit classes' overlaps
        #: (units of sigma_mu; each class takes it with its own sign, drawn from the generator ``probe``)
        self.field = field
        self.pool = CompetitorPool(population.n, model.d, population.others, rng, vectors, probe)
        self.started, self.environment = False, (None, None)  # the environment: (t, environment(...) at t)
        self.xperp = None  # with vectors: x_perp (n, d - 1) in the pool's coordinates (eq. 103)

    @property
    def threshold(self):
        """(n,) the pool's energy threshold e_P (eq. 98) at the time of the last environment."""
        return self.environment[1][2]

    def start(self, y, p, t):
        """Fill the pool with the classes above the threshold at t (eq. 98)."""
        self.started = True
        self._field_at(t)
        self.environment = (t, environment(self.population, t, np.sqrt(y * y + p)))
        beta, c, threshold, _, _, sampler = self.environment[1]
        direction = None
        if self.pool.Z is not None:  # by isotropy, any direction of x_perp
            direction = self.rng.standard_normal((y.size, self.model.d - 1))
            direction /= np.linalg.norm(direction, axis=1)[:, None]
            self.xperp = np.sqrt(p)[:, None] * direction
        self.pool.renew(beta, c, y, p, threshold, sampler, None, direction)

    def state(self, y, p, t):
        r"""(pi_c, g, weights of the explicit classes among the others, the others' mean along u and
        along the perpendicular direction of x, in units of sigma_mu, and the rest's mean per unit of x,
        :math:`\pi_{rest}\bar\zeta_{rest}/|x|`) at time t (eqs. 50, 95, 98)."""
        m = self.model
        a, gamma, _ = m.at(t)
        q = y * y + p
        x_norm = np.sqrt(q)
        self._field_at(t)
        if self.environment[0] != t:  # computed at the renewal of the pool at t, for the same (y, p)
            self.environment = (t, environment(self.population, t, x_norm))
        beta, c, _, log_rest, rest_zeta, _ = self.environment[1]
        e = self.pool.energies(beta, c, y, p)
        shift = np.maximum(e.max(axis=1), log_rest)
        explicit, rest = np.exp(e - shift[:, None]), np.exp(log_rest - shift)
        z = explicit.sum(axis=1) + rest
        log_others = shift + np.log(z) - q / (2 * gamma)  # log sum_k exp(E_k), E_k = -|x|^2/2Gamma + eps_k
        target = -(q - 2 * a * m.target * y + a * a * m.target ** 2) / (2 * gamma)  # eq. 50
        pi = 0.5 * (1.0 + np.tanh(0.5 * (target - log_others)))
        g = weight_at(m.omega, t) * (1.0 - pi)
        weights, rest = explicit / z[:, None], rest / z
        along_u = (weights * self.pool.C).sum(axis=1) + rest * rest_zeta * y / x_norm
        along_perp = (weights * self.pool.w).sum(axis=1) + rest * rest_zeta * np.sqrt(p) / x_norm
        return pi, g, weights, along_u, along_perp, rest * rest_zeta / x_norm

    def _field_at(self, t):
        """Set the probe's field on the explicit classes' overlaps to its value at t (eq. 111)."""
        if self.field is not None:
            self.pool.shift = float(self.field(t))

    def _q_tilt(self, tilt):
        """The rest's tilt in the explicit classes' q (eq. 107), zero with ``own_pull`` (eq. 110)."""
        return np.zeros_like(tilt) if self.own_pull else tilt

    def _others_perp(self, weights, tilt, xperp):
        """The others' mean orthogonal to u in units of sigma_mu, (n, d - 1): the explicit classes' vectors
        and the rest's mean along x (eq. 103)."""
        return np.einsum("nk,nkd->nd", weights, self.pool.Z) + tilt[:, None] * xperp

    def _renew_vectors(self, t_next, y_new, xperp_new):
        """With vectors: move x_perp to ``xperp_new``, the explicit classes' w to its direction, and renew
        the pool at t_next with the cosine between the old and new directions as phi (eqs. 98, 103).
        Returns p' = |x_perp'|^2."""
        old = self.xperp / np.linalg.norm(self.xperp, axis=1)[:, None]
        p_new = (xperp_new * xperp_new).sum(axis=1)
        direction = xperp_new / np.sqrt(p_new)[:, None]
        self.xperp = xperp_new
        self.pool.align(direction)
        self._renew(t_next, y_new, p_new, (xperp_new * old).sum(axis=1), direction)
        return p_new

    def step(self, t, t_next, y, p, noise):
        """One exact SDE step (eqs. 12, 96, 97; with vectors eq. 103) and the renewal of the pool at
        t_next (eq. 98)."""
        m, pool = self.model, self.pool
        s = math.sqrt(m.mean_var)
        pi, g, weights, along_u, along_perp, tilt = self.state(y, p, t)
        r, coef, V = m.process.reverse_transition(t, t_next, m.class_var)
        # eq. 107: each class's displacement, the linear factor of the rest's tilt and its own pull
        pool.q = np.where(pool.alive, _pulled(pool.q, r, coef, g, s, self._q_tilt(tilt), weights), 0.0)
        xi1, xi2, chi = noise
        m_par = (1 + g) * m.target - g * s * along_u
        y_new = r * y + coef * m_par + math.sqrt(V) * xi1
        if pool.Z is not None:
            # the noise orthogonal to u: xi2 along x_perp and chi^2_{d-2} in the other directions (as the
            # population's, so that the control variate sees the same noise)
            direction = self.xperp / np.sqrt(p)[:, None]
            other = self.rng.standard_normal(self.xperp.shape)
            other -= (other * direction).sum(axis=1)[:, None] * direction
            other *= (np.sqrt(chi) / np.maximum(np.linalg.norm(other, axis=1), 1e-300))[:, None]
            xperp_new = r * self.xperp - (coef * g * s)[:, None] * self._others_perp(weights, tilt, self.xperp) + \
                math.sqrt(V) * (xi2[:, None] * direction + other)
            return y_new, self._renew_vectors(t_next, y_new, xperp_new), pi
        along = r * np.sqrt(p) - coef * g * s * along_perp + math.sqrt(V) * xi2
        pull = -coef * g * s
        r_orth = np.where(pool.alive, orthogonal_norm2(pool.norm2, pool.C, pool.w), 0.0)
        eta = self.rng.standard_normal(r_orth.shape)
        orth = (pull ** 2 * (weights ** 2 * r_orth).sum(axis=1)
                + 2 * pull * math.sqrt(V) * (weights * np.sqrt(r_orth) * eta).sum(axis=1) + V * chi)
        p_new = along ** 2 + np.maximum(orth, 0.0)
        pool.advance(p_new, along, pull[:, None] * weights, V, eta)
        self._renew(t_next, y_new, p_new, along)
        return y_new, p_new, pi

    def _renew(self, t_next, y_new, p_new, along, direction=None):
        """The environment at the end of a step and the renewal of the pool there (eq. 98)."""
        self._field_at(t_next)
        self.environment = (t_next, environment(self.population, t_next, np.sqrt(y_new ** 2 + p_new)))
        beta, c, threshold, _, _, sampler = self.environment[1]
        self.pool.renew(beta, c, y_new, p_new, threshold, sampler, along / np.sqrt(p_new), direction)

    def heun_step(self, t, t_next, y, p):
        r"""One Heun step of the probability flow (eqs. 100-102), as the simulator's ``heun`` stepper: an
        Euler predictor, the guided estimate at the predictor (the explicit classes moved with it) and the
        trapezoid; a step into zero noise is the Euler step. x is followed in the frame of the step's
        start, :math:`(u, \hat x_\perp, e_k)`: its coordinate along :math:`\hat x_\perp` (``along``) and
        along each explicit class's own direction :math:`e_k`, :math:`\kappa_k\sqrt{R'_k}` (eq. 100).
        Then the pool is renewed at t_next (eq. 98; the rotation of :math:`\hat x_\perp` by the pulls
        renews the classes below the threshold, eq. 102)."""
        m, pool = self.model, self.pool
        s, h, M = math.sqrt(m.mean_var), t_next - t, m.target
        if pool.Z is not None:
            return self._heun_vectors(t, t_next, y, p)
        pi, g, weights, along_u, along_perp, tilt = self.state(y, p, t)
        A, B = m.process.ode_coefficients(t, m.class_var)
        root = np.sqrt(p)
        vq1 = _pulled(pool.q, A, B, g, s, self._q_tilt(tilt), weights)  # eq. 107
        q_pred = pool.q + h * vq1
        r_orth = np.where(pool.alive, orthogonal_norm2(pool.norm2, pool.C, pool.w), 0.0)
        vy1 = A * y + B * ((1 + g) * M - g * s * along_u)
        vperp1 = A * root - B * g * s * along_perp
        kappa1 = (-B * g * s)[:, None] * weights  # velocity along e_k per sqrt(R'_k), eq. 100
        y_pred, along_pred, kappa_pred = y + h * vy1, root + h * vperp1, h * kappa1
        p_pred = along_pred ** 2 + (kappa_pred ** 2 * r_orth).sum(axis=1)
        if float(m.process.var(t_next)) == 0.0:
            y_new, along, kappa = y_pred, along_pred, kappa_pred
            pool.q = q_pred
        else:
            w_start = pool.w
            pool.w = np.where(pool.alive, (along_pred[:, None] * w_start + kappa_pred * r_orth)
                              / np.sqrt(p_pred)[:, None], 0.0)
            _, g2, weights2, along_u2, _, tilt2 = self.state(y_pred, p_pred, t_next)
            pool.w = w_start
            A2, B2 = m.process.ode_coefficients(t_next, m.class_var)
            vy2 = A2 * y_pred + B2 * ((1 + g2) * M - g2 * s * along_u2)
            # the predictor's estimate in the frame of the step's start (eq. 101)
            vperp2 = A2 * along_pred - B2 * g2 * s * ((weights2 * w_start).sum(axis=1) + tilt2 * along_pred)
            kappa2 = A2 * kappa_pred - (B2 * g2 * s)[:, None] * (weights2 + tilt2[:, None] * kappa_pred)
            y_new = y + 0.5 * h * (vy1 + vy2)
            along = root + 0.5 * h * (vperp1 + vperp2)
            kappa = 0.5 * h * (kappa1 + kappa2)
            pool.q = pool.q + 0.5 * h * (vq1 + _pulled(q_pred, A2, B2, g2, s, self._q_tilt(tilt2), weights2))
        pool.q = np.where(pool.alive, pool.q, 0.0)
        p_new = along ** 2 + (kappa ** 2 * r_orth).sum(axis=1)
        pool.advance(p_new, along, kappa)
        self._renew(t_next, y_new, p_new, along)
        return y_new, p_new, pi

    def _heun_vectors(self, t, t_next, y, p):
        """The Heun step of the probability flow with the explicit classes as vectors (eq. 103): the
        simulator's stepper on (y, x_perp), the classes' directions as they are, not orthogonal."""
        m, pool = self.model, self.pool
        s, h, M = math.sqrt(m.mean_var), t_next - t, m.target
        pi, g, weights, along_u, _, tilt = self.state(y, p, t)
        A, B = m.process.ode_coefficients(t, m.class_var)
        vy1 = A * y + B * ((1 + g) * M - g * s * along_u)
        v1 = A * self.xperp - (B * g * s)[:, None] * self._others_perp(weights, tilt, self.xperp)
        y_new, xperp_new = y + h * vy1, self.xperp + h * v1
        vq1 = _pulled(pool.q, A, B, g, s, self._q_tilt(tilt), weights)  # eq. 107
        q_new = pool.q + h * vq1
        if float(m.process.var(t_next)) != 0.0:
            p_pred = (xperp_new * xperp_new).sum(axis=1)
            w_start = pool.w
            pool.align(xperp_new / np.sqrt(p_pred)[:, None])
            _, g2, weights2, along_u2, _, tilt2 = self.state(y_new, p_pred, t_next)
            pool.w = w_start
            A2, B2 = m.process.ode_coefficients(t_next, m.class_var)
            vy2 = A2 * y_new + B2 * ((1 + g2) * M - g2 * s * along_u2)
            v2 = A2 * xperp_new - (B2 * g2 * s)[:, None] * self._others_perp(weights2, tilt2, xperp_new)
            y_new, xperp_new = y + 0.5 * h * (vy1 + vy2), self.xperp + 0.5 * h * (v1 + v2)
            q_new = pool.q + 0.5 * h * (vq1 + _pulled(q_new, A2, B2, g2, s, self._q_tilt(tilt2), weights2))
        pool.q = np.where(pool.alive, q_new, 0.0)
        return y_new, self._renew_vectors(t_next, y_new, xperp_new), pi
