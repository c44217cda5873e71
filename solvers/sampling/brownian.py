r"""The noise of a run: initial draws and a Brownian path that is a function of (key, time).

Common random numbers. Two runs with the same noise seed start from the same initial particles
(for the same t_max and initial law) and are driven by the same Brownian path :math:`W(u)`,
whatever their schedules, rules, step counts or grids: a step from u to u' uses the increment
:math:`W(u') - W(u)` of that one path, so comparing two guidance schedules on the same noise
isolates their difference.

The path is a *virtual Brownian tree* (Levy's construction): :math:`W(0) = 0`,
:math:`W(U) \sim \mathcal N(0, U)` on the horizon U, and the midpoint of every dyadic interval
[a, b] is drawn from the Brownian bridge, :math:`\mathcal N((W_a + W_b)/2, (b - a)/4)`, with a
random stream keyed by the seed and the midpoint's place in the tree (docs/theory.md eq. 48).
A query at u descends until the interval is shorter than ``tol * u`` (resolution relative to u,
because the samplers' clock spans many decades near the start) and interpolates inside that leaf
with its own keyed bridge draw. Every value has the exact Brownian law, and the values at any set
of times have the exact joint law as long as no two of them share a leaf (a grid whose relative
steps in u are below ``tol``); for two queries in one leaf the second is drawn from the bridge
conditioned on the first (still the exact law, but then no longer a function of time alone).
Values are memoised along the last descent, so a sampler's monotone queries cost about
:math:`\log_2(\Delta u/(\mathrm{tol}\,u)) + 1` draws of shape (B, d) each.

Draws are row-major standard normals, so the first rows of a larger run are those of a smaller
one, and a path restricted to ``rows`` [a, b) of a (B, d) path gives those rows of the full path
exactly: it draws the first b rows and keeps the last b - a (the streams cannot skip ahead, the
normals are drawn by rejection). That is how a shard of particles of one simulation sees the noise
of the single-process run (cfgphase.solvers.sweeps.shards). The clock u in which the samplers read
the path is chosen by the driver (eq. 48).
"""

from __future__ import annotations

import math

import numpy as np

_INITIAL, _REFERENCE, _ROOT, _MIDPOINT, _LEAF = 0, 2, 3, 4, 5
#: Deepest level of the tree (float64 resolves dyadic midpoints of the horizon to about 2^-52).
MAX_LEVEL = 52


def check_seed(seed, name="seed"):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


class Noise:
    """The random streams of one run, keyed by its noise ``seed`` and by purpose."""

    def __init__(self, seed=0):
        self.seed = check_seed(seed)

    def _rng(self, *key):
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def initial_rng(self):
        """Generator for the initial condition."""
        return self._rng(_INITIAL)

    def reference_rng(self):
        """Generator for exact reference samples of the target (energy distance, quantiles of p(c|x))."""
        return self._rng(_REFERENCE)

    def path(self, shape, horizon, tol=2.0**-6, rows=None):
        """The run's :class:`BrownianPath` of ``shape`` on [0, ``horizon``] (``rows``: a range of its
        first axis, see :class:`BrownianPath`)."""
        return BrownianPath(self.seed, shape, horizon, tol, rows)


class BrownianPath:
    """A Brownian motion W(u) of ``shape`` on [0, ``horizon``], a function of (seed, u).

    ``path(u)`` is W(u); ``path.normal(u0, u1)`` is the standard normal
    :math:`(W(u_1) - W(u_0))/\\sqrt{u_1 - u_0}` of a step (independent across disjoint steps).
    ``rows`` = (a, b) restricts the path to rows a .. b - 1 of its first axis: values of shape
    (b - a, ...), equal bit for bit to those rows of the full path.
    """

    def __init__(self, seed, shape, horizon, tol=2.0**-6, rows=None):
        self.seed = check_seed(seed)
        full = tuple(int(n) for n in shape)
        start, stop = (0, full[0]) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= start < stop <= full[0]:
            raise ValueError(f"rows must be a range (a, b) with 0 <= a < b <= {full[0]}, got {rows!r}")
        self._drawn, self._start = (stop, *full[1:]), start  # the streams are read up to row b
        self.shape = (stop - start, *full[1:])
        self.horizon = float(horizon)
        if not (math.isfinite(self.horizon) and self.horizon > 0):
            raise ValueError(f"horizon must be a finite number > 0, got {horizon!r}")
        if not 0 < tol < 1:
            raise ValueError(f"tol must lie in (0, 1), got {tol!r}")
        self.tol = float(tol)
        root = math.sqrt(self.horizon) * self._draw(_ROOT)
        # the last descent: per level (a, b, W(a), W(b), index of [a, b] among the level's intervals)
        self._path = [(0.0, self.horizon, np.zeros(self.shape), root, 0)]
        self._last = None  # (level, index, u, W(u), draws in this leaf) of the last query

    def _draw(self, *key):
        # SFC64: about 1.7x faster than the default PCG64 for these draws, which are a fifth of an SDE
        # step's time at B = 1024, d = 64, K = 2172
        stream = np.random.SFC64(np.random.SeedSequence(self.seed, spawn_key=key))
        z = np.random.Generator(stream).standard_normal(self._drawn)
        return z[self._start:] if self._start else z

    def __call__(self, u):
        u = float(u)
        if not 0.0 <= u <= self.horizon:
            raise ValueError(f"u = {u!r} is outside the Brownian path's horizon [0, {self.horizon}]")
        if u == 0.0:
            return np.zeros(self.shape)
        if self._last is not None and self._last[2] == u:  # a step's start is the previous step's end
            return self._last[3]
        path = self._path
        level = 0
        while level + 1 < len(path) and path[level + 1][0] <= u <= path[level + 1][1]:
            level += 1
        del path[level + 1:]
        a, b, wa, wb, index = path[level]
        while b - a > self.tol * u and level < MAX_LEVEL:
            mid = 0.5 * (a + b)
            w_mid = 0.5 * (wa + wb) + 0.5 * math.sqrt(b - a) * self._draw(_MIDPOINT, level + 1, 2 * index + 1)
            level += 1
            if u <= mid:
                b, wb, index = mid, w_mid, 2 * index
            else:
                a, wa, index = mid, w_mid, 2 * index + 1
            path.append((a, b, wa, wb, index))
        count = 0
        if self._last is not None and self._last[:2] == (level, index) and self._last[2] != u:
            # a second query in this leaf: the bridge conditioned on the first (exact joint law)
            _, _, u_prev, w_prev, count = self._last
            if u > u_prev:
                a, wa = u_prev, w_prev
            else:
                b, wb = u_prev, w_prev
            count += 1
        w = wa + (u - a) / (b - a) * (wb - wa)
        bridge = (u - a) * (b - u) / (b - a)
        if bridge > 0:
            w = w + math.sqrt(bridge) * self._draw(_LEAF, level, index, count)
        self._last = (level, index, u, w, count)
        return w

    def normal(self, u0, u1):
        """Standard normals :math:`(W(u_1) - W(u_0))/\\sqrt{|u_1 - u_0|}` of ``shape``."""
        if u1 == u0:
            raise ValueError(f"a step needs two distinct clock values, got u0 = u1 = {u0!r}")
        w0 = self(u0)
        return (self(u1) - w0) / math.sqrt(abs(u1 - u0))
