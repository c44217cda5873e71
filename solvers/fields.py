"""Score fields: what a sampler evaluates at (x, t).

A field exposes ``process``, ``reference_var`` (:math:`\\nu` in :math:`\\Gamma_t = a_t^2\\nu +
\\sigma_t^2`, scalar or (d,)), ``target_mean`` (d,), ``d``, ``evaluate(x, t) -> Evaluation`` and
``sample_initial(t, n, rng, init)``. Every score is :math:`-(x - a_t\\hat m)/\\Gamma_t`
(docs/theory.md eq. 6), so an evaluation returns class-mean estimates, not scores.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from physics.processes import get_process
from solvers.kernel import posterior_moments

INITS = ("unconditional", "conditional")


class Evaluation(NamedTuple):
    """Class-mean estimates at (x, t); posterior fields are None where a model has no classes."""

    cond: np.ndarray  #: (d,) or (B, d) conditional estimate m_c
    uncond: np.ndarray  #: (B, d) unconditional estimate m_u
    log_partition: np.ndarray | None = None  #: (B,) log sum_k exp(logit_k)
    entropy: np.ndarray | None = None  #: (B,) class-posterior entropy (nats)
    target_logit: np.ndarray | None = None  #: (B,) logit of the target class
    argmax: np.ndarray | None = None  #: (B,) Bayes class


def _check_init(init):
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


class MixtureField:
    """Exact scores of a :class:`physics.mixture.GaussianMixture`, conditioned on ``target``.

    ``dtype`` (float64 or float32) is the precision of the two GEMMs and of the softmax pass of
    the streaming kernel; the estimates are returned in float64. The target seeds the kernel's
    running maximum, so that once the posterior has condensed on it the other classes' chunks
    are skipped (eq. 30).
    """

    def __init__(self, model, process="ou", target=0, dtype=np.float64, chunk=None, threads=None):
        self.model = model
        self.process = get_process(process)
        if int(target) != target or not 0 <= target < model.K:
            raise ValueError(f"target must be a class index in [0, {model.K - 1}], got {target!r}")
        self.target = int(target)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.means = model.means.astype(self.dtype, copy=False)
        self.chunk = chunk
        self.threads = threads

    reference_var = property(lambda self: self.model.class_var)
    target_mean = property(lambda self: self.model.means[self.target])
    d = property(lambda self: self.model.d)

    signal_var = property(lambda self: self.model.signal_var)

    def evaluate(self, x, t):
        scale, bias = self.model.logit_coefficients(t, self.process)
        res = posterior_moments(x.astype(self.dtype, copy=False), self.means, scale, bias, self.chunk, self.threads,
                                hint=self.target)
        target_logit = scale * (x @ self.target_mean) + bias[self.target]
        return Evaluation(
            self.target_mean,
            res.mean.astype(np.float64, copy=False),
            res.log_partition,
            res.entropy,
            target_logit,
            res.argmax,
        )

    def sample_initial(self, t, n, rng, init="unconditional"):
        _check_init(init)
        target = self.target if init == "conditional" else None
        return self.model.sample_noised(t, self.process, n, rng, target=target)[0]


class GaussianField:
    """Exact scores of a :class:`physics.gaussian.GaussianPair` (no class posterior)."""

    def __init__(self, pair, process="ou"):
        self.pair = pair
        self.process = get_process(process)

    reference_var = property(lambda self: self.pair.reference_var)
    target_mean = property(lambda self: self.pair.mean_c)
    d = property(lambda self: self.pair.d)

    signal_var = property(lambda self: self.pair.signal_var)

    def evaluate(self, x, t):
        return Evaluation(self.pair.mean_c, self.pair.unconditional_mean_estimate(x, t, self.process))

    def sample_initial(self, t, n, rng, init="unconditional"):
        _check_init(init)
        return self.pair.sample_noised(t, self.process, n, rng, conditional=init == "conditional")
