r"""The draw's shared mean (docs/theory.md eqs. 104-105, 107), predicted with passive test classes.

In a simulation every particle sees the same K - 1 other means, so the guidance moves all of them
toward (negative weight) or away from (positive weight) the same classes, and their mean orthogonal to
:math:`\mu_c`, :math:`m_\perp`, is not zero. The simulator's var_perp is the spread about the draw's own
mean, below the population's :math:`E p/(d-1)` by :math:`S = E|m_\perp|^2/(d-1)` (eq. 104), while the
population's environments are independent (A5) and cannot produce it.

Linear response (eq. 105). The mean of the probability flow or of the SDE over the particles of one draw
moves with the mean of the guided estimate, whose part orthogonal to :math:`\mu_c` is
:math:`-\omega\sum_k E_i[P(k\mid x_i)]\,\mu_{k\perp}`: a sum of one-class averages. Each is predicted by a
test class with fixed overlap C with the target direction and squared norm R orthogonal to it (in units of
:math:`\sigma_\mu`), carried passively by every particle of the population: its overlap :math:`o = x_\perp\cdot
\mu_{k\perp}/\sigma_\mu` follows the particle's linear factor, the noise and its own pull (so a class that
pulls its particle gains weight), and its posterior competes with the target and the particle's other
classes, :math:`P = e^{\varepsilon}/(e^{\varepsilon} + Z_{all})`, :math:`Z_{all} = T/\pi_c` (the test class is
not part of the particle's environment: a cavity). The coefficient q of the particle's displacement along
:math:`\mu_{k\perp}` follows the same step without the noise; its mean over particles b(C, R) gives
:math:`m_\perp = \sum_k b_k\mu_{k\perp}` and
:math:`S = (K - 1)\,\sigma_\mu^2\,E_{C,R}[b(C, R)^2 R]/(d - 1)`, the expectation over the prior of one class
(:math:`C\sim\mathcal N(0, 1)`, :math:`R\sim\chi^2_{d-1}`) by Gauss quadrature.

The back-reaction (eq. 107). A test class is a cavity: when it takes a particle, the target and the
particle's other classes do not answer. Where the population keeps its dominant classes explicit
(cfgphase.solvers.theory.competitors, eqs. 95-103) those classes answer, so above the pool's energy
threshold they carry the displacement (each slot its own q, kept with a per-cell sum when the class
leaves) and a test class adds to its q only below it; every increment is counted once. There b is an average over
a cell's classes, so S sums those cells with their prior masses and mean R (eq. 112), not with the quadrature's.

The cross terms (eqs. 108-110). The classes' displacements add up with cross terms: each class's response to the
others' shared displacement along it. The test classes hold them already, through the particle's linear factor on q
(the other classes' reaction). A ``field`` on the test classes, with ``own_pull`` (q without that factor), computes
them a second way (benchmarks/shared_mean_response.py); the predictions do not use either option. Under the explicit
classes ``own_pull`` drops the rest's tilt from their q too, and ``signed`` keeps the departed classes' q times their
probe signs (eq. 111). Under the explicit classes the cross terms lie along each particle's own direction (eq. 111),
and the prediction's S adds them to the diagonal (eq. 112, ``shared_mean(..., along=True)``).

Conventions: forward time t, sampling runs down; arrays over particles (n,) and test classes (n, M).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy.linalg import eigh_tridiagonal
from scipy.special import betainc, chdtr, ndtr
from scipy.special import beta as beta_function

from cfgphase.physics.weights import weight_at

#: Gauss nodes over the overlap C with the target direction (Hermite, N(0, 1)) and over the squared norm R
#: orthogonal to it (generalised Laguerre, chi^2_{d-1}). At alpha = 0.2, d = 16 (K = 25, ODE) 8 x 2, 16 x 4 and
#: 24 x 8 nodes give the same S within its Monte-Carlo error (0.5 % at omega = 3, eq. 105).
C_NODES, R_NODES = 16, 4
#: Nodes over C of the finer cells in which the explicit classes' displacements are averaged per class (eq. 107):
#: their b varies across a cell of the 16 C nodes (the averaging loses E[b^2] - E[b]^2 within a cell; at alpha =
#: 0.4, omega = 3, SDE, d = 16, S with 16, 32, 48, 64, 96 C nodes: 0.00035, 0.00039, 0.00041, 0.00042, 0.00043,
#: each +- 0.00001).
POOL_C_NODES = 64


def class_nodes(d, c_nodes=C_NODES, r_nodes=R_NODES):
    """(C, R, W), each (c_nodes * r_nodes,): quadrature over one other class's prior (eq. 105). The
    chi^2_{d-1} nodes are generalised Laguerre's, from the eigenvectors of its Jacobi matrix (Golub-Welsch;
    the normalised weights, which stay finite at any d)."""
    c, wc = hermegauss(c_nodes)
    alpha, k = 0.5 * (d - 1) - 1.0, np.arange(r_nodes)
    x, vectors = eigh_tridiagonal(2.0 * k + alpha + 1.0, np.sqrt(k[1:] * (k[1:] + alpha)))
    wx = vectors[0] ** 2
    C, R = np.repeat(c, r_nodes), np.tile(2.0 * x, c_nodes)
    return C, R, np.repeat(wc / wc.sum(), r_nodes) * np.tile(wx / wx.sum(), c_nodes)


def _cell_bounds(d, c_nodes, r_nodes):
    """The midpoints between successive nodes of :func:`class_nodes` in C and in R, and the prior masses of the
    intervals they bound, (c_mid, r_mid, c_mass (c_nodes,), r_mass (r_nodes,))."""
    nodes_C, nodes_R, _ = class_nodes(d, c_nodes, r_nodes)
    c_mid = 0.5 * (np.unique(nodes_C)[1:] + np.unique(nodes_C)[:-1])
    r_mid = 0.5 * (np.unique(nodes_R)[1:] + np.unique(nodes_R)[:-1])
    lo, hi = np.concatenate([[-np.inf], c_mid]), np.concatenate([c_mid, [np.inf]])
    c_mass = np.where(lo > 0, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))  # from the nearer tail: no underflow
    r_mass = np.diff(np.concatenate([[0.0], chdtr(d - 1, r_mid), [1.0]]))
    return c_mid, r_mid, c_mass, r_mass


def node_cells(d, c_nodes=C_NODES, r_nodes=R_NODES):
    """The cells of the quadrature nodes of :func:`class_nodes` (eq. 107), bounded by the midpoints between
    successive nodes in C (N(0, 1)) and in R (chi^2_{d-1}) and indexed as the nodes: a function of (C, R),
    elementwise, giving (the cell of each, the prior mass of every cell (c_nodes * r_nodes,))."""
    c_mid, r_mid, c_mass, r_mass = _cell_bounds(d, c_nodes, r_nodes)
    mass = np.outer(c_mass, r_mass).ravel()
    return lambda C, R: (np.searchsorted(c_mid, C) * r_nodes + np.searchsorted(r_mid, R), mass)


def cell_moments(d, c_nodes=C_NODES, r_nodes=R_NODES):
    r"""(prior mass, mean R) of every cell of :func:`node_cells`, each (c_nodes * r_nodes,): the weights of a sum over
    classes whose b is a cell average (eq. 107). The mean R of a chi^2_{d-1} interval from
    :math:`R f_{d-1}(R) = (d-1) f_{d+1}(R)`. A quadrature's weight and node stand for a smooth function at the node,
    not for an average over the cell: at d = 16 the first of 4 R cells holds 0.259 of the prior with mean R 8.80, its
    Laguerre node 0.219 at R = 7.68."""
    _, r_mid, c_mass, r_mass = _cell_bounds(d, c_nodes, r_nodes)
    r_first = (d - 1) * np.diff(np.concatenate([[0.0], chdtr(d + 1, r_mid), [1.0]]))
    return np.outer(c_mass, r_mass).ravel(), np.tile(r_first / r_mass, c_mass.size)


def below_threshold_overlap(d, R, level):
    r"""(:math:`E[w\,1\{w < \text{level}\}]`, :math:`P(w < \text{level})`) for a class's overlap
    :math:`w = \sqrt R\cos\theta` with the particle's direction orthogonal to u, :math:`\theta` uniform on the sphere
    of the d - 1 dimensions orthogonal to u (eq. 111): the density of :math:`\cos\theta` is
    :math:`(1-v^2)^{(d-4)/2}/B(\tfrac12, \tfrac{d-2}2)`, so the first is
    :math:`-\sqrt R\,(1-a^2)^{(d-2)/2}/((d-2)B(\tfrac12, \tfrac{d-2}2))` with :math:`a = \text{level}/\sqrt R` clipped
    to [-1, 1]. Elementwise in R and level (broadcast)."""
    a = np.clip(level / np.sqrt(R), -1.0, 1.0)
    return _truncated_mean(d, R, a), 0.5 + 0.5 * np.sign(a) * betainc(0.5, 0.5 * (d - 2), a * a)


def _truncated_mean(d, R, a):
    """The first of :func:`below_threshold_overlap` at a = level/sqrt(R) clipped to [-1, 1] (no incomplete beta: eq.
    111's sum over the rest needs this alone)."""
    return -np.sqrt(R) * (1.0 - a * a) ** (0.5 * (d - 2)) / ((d - 2) * beta_function(0.5, 0.5 * (d - 2)))


class TestClasses:
    r"""Passive test classes carried by n particles of a finite-d population (eqs. 105, 107).

    Call :meth:`step` at the start of every sampling step with the particle's target posterior
    ``pi`` and linear factor ``k`` (the guided estimate's part orthogonal to :math:`\mu_c` per unit of
    :math:`x_\perp`, from the others' tilt) at (y, p, t), and :meth:`finish` at the end. Heun's second stage is
    evaluated at the step's end, where the population evaluates its next step (an O(h^2) difference per
    step from the predictor). ``rng`` draws the initial overlaps and the SDE noise along each class.

    Under the explicit classes of eqs. 95-103 (eq. 107) pass the pool's ``threshold`` (n,) to :meth:`step`:
    a test class then moves its particle only while its energy is below it, the explicit classes
    carrying the displacement above it, and :meth:`absorb` takes the displacements of the explicit
    classes that leave the pool, which then decay with the particle's linear factor, per (C, R) cell."""

    def __init__(self, model, n, rng, c_nodes=C_NODES, r_nodes=R_NODES, field=None, own_pull=False, signed=False):
        self.model, self.rng = model, rng
        #: eq. 110: q without the particle's linear factor k (its other classes' reaction to x_perp): the class's own
        #: pull alone, the diagonal of eq. 108's exact split; o is unchanged (without explicit classes only)
        self.own_pull = own_pull
        #: eq. 110: None, or a function of t (a number, or (M,) per node) added to every test class's overlap o in
        #: its energy (units of sigma_mu), the shared displacement of the others along the class; with it every
        #: completed step's mean q per node goes to ``profile`` as (t, (M,))
        self.field, self.profile = field, []
        #: under the explicit classes (eq. 111), the mean displacement per fine cell of :meth:`displacement` at each
        #: completed step, as (t, (fine cells,)), appended by the population's run when it has a field
        self.fine_profile = []
        self.C, self.R, self.W = class_nodes(model.d, c_nodes, r_nodes)
        # eq. 107: the explicit classes' cells, finer in C, and the test node of each (the cell holding its node)
        self.fine = class_nodes(model.d, POOL_C_NODES, r_nodes)
        self.cells = node_cells(model.d, POOL_C_NODES, r_nodes)
        #: the fine cells' prior masses and mean R: b there is an average over each cell's classes (eq. 107)
        self.fine_moments = cell_moments(model.d, POOL_C_NODES, r_nodes)
        self.test_node = node_cells(model.d, c_nodes, r_nodes)(self.fine[0], self.fine[1])[0]
        self.sigma = math.sqrt(model.mean_var)
        self.q = np.zeros((n, self.C.size))  # displacement along mu_k_perp per unit of it
        self.o = None  # x_perp . mu_k_perp / sigma_mu, drawn at the first step (isotropic x_perp)
        self.pending = None  # Heun: (t_next, h, c1, q velocity, o velocity, predictors)
        # eq. 107: the summed q of the explicit classes that left, per particle and cell, in units of the particle's
        # linear factor accumulated since t_max (``growth``), so that their decay costs nothing per step
        self.departed = np.zeros((n, self.fine[0].size))
        #: eq. 111: with ``signed``, the same sums of q times each departed class's probe sign
        self.departed_signed = np.zeros((n, self.fine[0].size)) if signed else None
        self.growth = np.ones(n)
        self.incoming = []  # (particle, cell, q, sign) that left during a pending Heun step, added at its end

    def _posterior(self, y, p, t, pi, o):
        r"""(P(k | x), :math:`\varepsilon`) of every test class (eq. 105):
        :math:`\varepsilon = \beta(yC + o) - \tfrac c2(C^2 + R)` against :math:`Z_{all} = T/\pi_c` in the same
        units (T the target's weight, eq. 50)."""
        m = self.model
        a, gamma, _ = m.at(t)
        beta, c = a * self.sigma / gamma, a * a * m.mean_var / gamma
        q = y * y + p
        log_target = -(q - 2 * a * m.target * y + a * a * m.target ** 2) / (2 * gamma) + q / (2 * gamma)
        log_all = log_target - np.log(np.maximum(pi, 1e-300))
        if self.field is not None:
            o = o + self.field(t)
        eps = beta * (y[:, None] * self.C + o) - 0.5 * c * (self.C ** 2 + self.R)
        return 0.5 * (1.0 + np.tanh(0.5 * (eps - log_all[:, None]))), eps

    def _source(self, y, p, t, pi, o, threshold):
        """The guided estimate's coefficient along each mu_k, -omega(t) P(k | x) (eqs. 7, 105), for o, and
        for q only below ``threshold`` (eq. 107; None: everywhere)."""
        posterior, eps = self._posterior(y, p, t, pi, o)
        src = -weight_at(self.model.omega, t) * posterior
        return src, src if threshold is None else np.where(eps < threshold[:, None], src, 0.0)

    def step(self, kind, t, t_next, y, p, pi, k, threshold=None):
        """Move the test classes from t to t_next with the particles' state (y, p), target posterior ``pi``
        and linear factor ``k`` at t (the sampler of the population: ``kind`` 'ode' Heun, 'sde' exact);
        ``threshold`` (n,) the explicit classes' energy threshold at t, if any (eq. 107)."""
        m = self.model
        if self.o is None:
            z = self.rng.standard_normal(self.q.shape)
            rest = self.rng.chisquare(m.d - 2, self.q.shape) if m.d > 2 else np.zeros(self.q.shape)
            self.o = np.sqrt(p)[:, None] * np.sqrt(self.R) * z / np.sqrt(z * z + rest)
        self._complete(y, p, t, pi, k, threshold)
        src, src_q = self._source(y, p, t, pi, self.o, threshold)
        if kind == "sde":
            r, coef, V = m.process.reverse_transition(t, t_next, m.class_var)
            f = (r + coef * k)[:, None]
            noise = np.sqrt(V * self.R) * self.rng.standard_normal(self.q.shape)
            self.q = (r if self.own_pull else f) * self.q + coef * src_q
            self.o = f * self.o + coef * self.sigma * self.R * src + noise
            self.growth = self.growth * (r if self.own_pull else f[:, 0])
            self._record(t_next)
            return
        h = t_next - t
        A, B = m.process.ode_coefficients(t, m.class_var)
        c1 = (A + B * k)[:, None]
        vq, vo = (A if self.own_pull else c1) * self.q + B * src_q, c1 * self.o + B * self.sigma * self.R * src
        predictors = (self.q + h * vq, self.o + h * vo)
        if self.own_pull:  # q's factor, which the departed sums follow, is the process's alone
            c1 = np.full_like(c1, A)
        if float(m.process.var(t_next)) == 0.0:  # the last step into zero noise is Euler's, as the sampler's
            self.q, self.o = predictors
            self.growth = self.growth * (1.0 + h * c1[:, 0])
            self._record(t_next)
        else:
            self.pending = (t_next, h, c1[:, 0], vq, vo, predictors)

    def _complete(self, y, p, t, pi, k, threshold=None):
        """Heun's second stage of the pending step, at (y, p, t) (the step's end)."""
        if self.pending is None:
            return
        t_end, h, c1, vq, vo, (q_pred, o_pred) = self.pending
        if t != t_end:
            raise RuntimeError(f"test classes: the pending step ends at t = {t_end}, evaluated at t = {t}")
        m = self.model
        A, B = m.process.ode_coefficients(t, m.class_var)
        c2 = (A + B * k)[:, None]
        f2 = np.full_like(c2, A) if self.own_pull else c2
        src, src_q = self._source(y, p, t, pi, o_pred, threshold)
        self.q = self.q + 0.5 * h * (vq + (A if self.own_pull else c2) * q_pred + B * src_q)
        self.o = self.o + 0.5 * h * (vo + c2 * o_pred + B * self.sigma * self.R * src)
        self.growth = self.growth * (1.0 + 0.5 * h * (c1 + f2[:, 0] * (1.0 + h * c1)))  # Heun's, without source
        self.pending = None
        self._record(t)
        for particle, cell, q, sign in self.incoming:
            self._add(particle, cell, q, sign)
        self.incoming = []

    def _record(self, t):
        if self.field is not None:
            self.profile.append((t, self.q.mean(axis=0)))

    def _add(self, particle, cell, q, sign):
        np.add.at(self.departed, (particle, cell), q / self.growth[particle])
        if self.departed_signed is not None:
            np.add.at(self.departed_signed, (particle, cell), sign * q / self.growth[particle])

    def absorb(self, particle, C, norm2, q, sign=None):
        """The explicit classes that left the pool at the end of the current step (eq. 107): their
        displacements q, by particle and (C, R) cell (R = norm2 - C^2), each (m,), and their probe signs
        (eq. 111; None: none)."""
        cell = self.cells(C, norm2 - C * C)[0]
        sign = np.zeros_like(q) if sign is None else sign
        if self.pending is None:
            self._add(particle, cell, q, sign)
        else:
            self.incoming.append((particle, cell, q, sign))

    def departed_sums(self):
        """(n, cells): the summed q of the explicit classes that left, per particle and cell, now (eq. 107)."""
        return self.departed * self.growth[:, None]

    def finish(self, y, p, t, pi, k, threshold=None):
        """Complete the last step at the end of sampling."""
        self._complete(y, p, t, pi, k, threshold)

    def _per_class(self, pool, sums, signed):
        """(n, fine cells): ``sums`` of the departed plus the explicit classes' q (times their probe signs if
        ``signed``) per class of the cell."""
        particle, slot = np.nonzero(pool.alive)
        C, norm2 = pool.C[particle, slot], pool.norm2[particle, slot]
        cell, mass = self.cells(C, norm2 - C * C)
        q = pool.q[particle, slot]
        np.add.at(sums, (particle, cell), q * pool.sign[particle, slot] if signed else q)
        return np.divide(sums, (self.model.K - 1) * mass, out=np.zeros_like(sums), where=mass > 0)

    def displacement(self, pool=None):
        """(q per particle and node (n, M), the weights and R of a sum over the nodes): the test classes' q at the
        quadrature's nodes (weights W), and with the explicit classes' ``pool`` (eq. 107) on the fine cells, the test
        class of the coarse cell holding each plus the explicit classes' displacements, present and departed, per class
        of the cell, with the cells' prior masses and mean R (:func:`cell_moments`): an average over a cell's classes."""
        if pool is None:
            return self.q, self.W, self.R
        mass, R = self.fine_moments
        return self.q[:, self.test_node] + self._per_class(pool, self.departed_sums(), False), mass, R

    def signed_displacement(self, pool):
        """(fine cells,): the mean over particles of the explicit classes' q times their probe signs, per class
        of the cell (eq. 111; the pool and the test classes built with a probe)."""
        sums = self.departed_signed * self.growth[:, None]
        return self._per_class(pool, sums, True).mean(axis=0)

    def explicit_classes(self, pool, b=None):
        """(b per fine cell (cells,), and per slot of the ``pool`` (n, slots), zero in empty slots: the b of the
        class's fine cell, its q, its w): the population's mean displacement per class (eq. 107; given, or from
        :meth:`displacement`) and the explicit classes' terms of eq. 111."""
        if b is None:
            b = self.displacement(pool)[0].mean(axis=0)
        alive = pool.alive
        cell = np.where(alive, self.cells(pool.C, pool.norm2 - pool.C * pool.C)[0], 0)
        return (b,) + tuple(np.where(alive, v, 0.0) for v in (b[cell], pool.q, pool.w))

    def _along(self, pool, labels, groups, b=None):
        r"""(2B along the particles' directions, its standard error, its means over the groups (groups,)) of eq. (111)
        at the end of sampling: per particle
        :math:`\tfrac{2\sigma_\mu^2}{d-1}\sum_{k\ne l} w_k(q_k - r_k)\,r_lw_l` over its classes, w a class's overlap with
        the particle's direction orthogonal to u (units of :math:`\sigma_\mu`) and r the population's b of its fine
        cell: the explicit classes with their w and q, the rest, below the pool's threshold, with q = 0 and w from
        the prior truncated there (:func:`below_threshold_overlap`), their sums in expectation over the K - 1
        independent classes, each cell's with its prior mass and mean R. The error from the means of ``groups`` groups
        of particles (``labels`` (n,)); ``b`` the fine cells' b if already computed. Uses the pool's state at its last
        renewal, the end of sampling."""
        m = self.model
        beta, c, y, p, threshold = pool.previous
        C, (W, R) = self.fine[0], self.fine_moments
        b, r, q, w = self.explicit_classes(pool, b)
        level = (threshold[:, None] + 0.5 * c * (C * C + R) - beta * y[:, None] * C) / (beta * np.sqrt(p)[:, None])
        first = _truncated_mean(m.d, R, np.clip(level / np.sqrt(R), -1.0, 1.0))
        # the K - 1 classes are independent: the sum of r w over those below the threshold has mean `rest`, and the
        # ordered pairs of distinct ones (K - 1)(K - 2) times the square of one's mean
        rest = (m.K - 1) * np.sum(W * b * first, axis=1)
        explicit_a, explicit = (w * (q - r)).sum(axis=1), (r * w).sum(axis=1)
        pairs = (explicit_a - rest) * (explicit + rest) - (r * w * w * (q - r)).sum(axis=1) + rest * rest / (m.K - 1)
        per_particle = 2.0 * m.mean_var / (m.d - 1) * pairs
        means = np.array([per_particle[labels == j].mean() for j in range(groups)])
        return float(per_particle.mean()), float(means.std(ddof=1) / math.sqrt(groups)), means

    def response_along(self, pool, labels, groups):
        """(2B along the particles' directions, its standard error) of eq. (111): :meth:`_along`."""
        return self._along(pool, labels, groups)[:2]

    def shared_mean(self, labels, groups, pool=None, along=False):
        r"""(S, its standard error) of eq. (105): :math:`b^2` per node unbiased from the means of ``groups``
        groups of particles (``labels`` (n,)), the error by the jackknife over the groups. With the
        explicit classes' ``pool`` (eq. 107) b is the test class's plus the explicit classes' displacements,
        present and departed, of its (C, R) bin per class of the bin; with ``along`` too, S adds the cross terms along
        each particle's direction (eq. 112, :meth:`_along`), the jackknife taking both from the same groups."""
        m = self.model
        displacement, W, R = self.displacement(pool)
        means = np.stack([displacement[labels == j].mean(axis=0) for j in range(groups)])  # (G, M)
        scale = (m.K - 1) * m.mean_var / (m.d - 1)

        def estimate(rows):
            total, g = rows.sum(axis=0), rows.shape[0]
            square = (total * total - (rows * rows).sum(axis=0)) / (g * (g - 1))
            return scale * float(np.sum(W * R * square))

        cross = np.zeros(groups)
        if along and pool is not None:
            cross = self._along(pool, labels, groups, displacement.mean(axis=0))[2]
        value = estimate(means) + float(cross.mean())
        leave_one_out = np.array([estimate(np.delete(means, j, axis=0)) + float(np.delete(cross, j).mean())
                                  for j in range(groups)])
        spread = math.sqrt((groups - 1) / groups * float(((leave_one_out - leave_one_out.mean()) ** 2).sum()))
        return value, spread
