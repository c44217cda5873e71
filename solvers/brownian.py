"""A replayable source of Gaussian noise for the samplers (common random numbers).

Draws are keyed by (seed, purpose, step), not by the order of the calls: two runs with the
same seed and grid see the same initial condition and the same increment at every step, so
comparing two guidance weights (or two rules) on the same noise isolates their difference.
"""

from __future__ import annotations

import numpy as np

_INITIAL, _STEP, _REFERENCE = 0, 1, 2


class BrownianSource:
    """Standard normal draws for the initial condition and for each step of a grid."""

    def __init__(self, seed=0):
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)

    def _rng(self, *key):
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def initial_rng(self):
        """Generator for the initial condition."""
        return self._rng(_INITIAL)

    def reference_rng(self):
        """Generator for exact reference samples of the target (energy distance, quantiles of p(c|x))."""
        return self._rng(_REFERENCE)

    def increment(self, step, shape):
        """Standard normals (float64) of ``shape`` for step ``step`` of the grid."""
        return self._rng(_STEP, int(step)).standard_normal(shape)
