"""Score fields: what a sampler evaluates at (x, t).

A field exposes ``process``, ``reference_var`` (:math:`\\nu` in :math:`\\Gamma_t = a_t^2\\nu +
\\sigma_t^2`, scalar or (d,)), ``target_mean`` (d,), ``d``, ``evaluate(x, t) -> Evaluation`` and
``sample_initial(t, n, rng, init)``. Every score is :math:`-(x - a_t\\hat m)/\\Gamma_t`
(docs/theory.md eq. 6), so an evaluation returns class-mean estimates, not scores.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import logsumexp

from physics.mixture import mean_for_reference_var
from physics.processes import get_process
from solvers.kernel import posterior_moments

INITS = ("unconditional", "conditional")


class Evaluation(NamedTuple):
    """Class-mean estimates at (x, t); posterior fields are None where a model has no classes."""

    cond: np.ndarray  #: (d,) or (B, d) conditional estimate m_c
    uncond: np.ndarray  #: (B, d) unconditional estimate m_u
    log_partition: np.ndarray | None = None  #: (B,) log sum_k exp(logit_k)
    entropy: np.ndarray | None = None  #: (B,) class-posterior entropy (nats)
    target_logit: np.ndarray | None = None  #: (B,) log-weight of the target class (logsumexp of its components)
    argmax: np.ndarray | None = None  #: (B,) Bayes class
    responsibilities: np.ndarray | None = None  #: (B, n_c) posterior of the target's modes within the class


def _check_init(init):
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


#: Largest number of components for a model with multimodal classes (its class posterior is dense).
MULTIMODAL_COMPONENTS = 100_000


class MixtureField:
    """Exact scores of a :class:`physics.mixture.GaussianMixture`, conditioned on class ``target``.

    ``dtype`` (float64 or float32) is the precision of the two GEMMs and of the softmax pass of
    the streaming kernel; the estimates are returned in float64. The target seeds the kernel's
    running maximum, so that once the posterior has condensed on it the other classes' chunks
    are skipped (eq. 30).

    A multimodal target class (``labels``) has an x-dependent conditional estimate, the
    within-class posterior average of its component means, and within-class responsibilities.
    ``unconditional`` replaces the mixture of all classes by an independent exact-score model
    (a GaussianMixture with its own component variance, e.g. N(0, I), the setting of Jin, Shi and
    Gu); its estimate is converted to the field's reference variance (eq. 8), and class-posterior
    observables, which need the joint model, are then not defined.
    """

    def __init__(self, model, process="ou", target=0, dtype=np.float64, chunk=None, threads=None,
                 unconditional=None):
        self.model = model
        self.process = get_process(process)
        self.components = model.components(target)
        self.target = int(target)
        if model.multimodal and model.K > MULTIMODAL_COMPONENTS:
            raise ValueError(f"labels: multimodal classes are supported up to {MULTIMODAL_COMPONENTS} components "
                             f"(their class posterior is dense), got {model.K}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        if unconditional is not None and unconditional.d != model.d:
            raise ValueError(f"unconditional: dimension {unconditional.d} differs from the model's {model.d}")
        self.unconditional = unconditional
        driver = model if unconditional is None else unconditional
        self.means = driver.means.astype(self.dtype, copy=False)
        self.chunk = chunk
        self.threads = threads

    reference_var = property(lambda self: self.model.class_var)
    d = property(lambda self: self.model.d)

    @property
    def signal_var(self):
        """Second moment E|x_0|^2 of the data the sampler starts from (it sets the default t_max)."""
        return max(self.model.signal_var, 0.0 if self.unconditional is None else self.unconditional.signal_var)

    @property
    def target_mean(self):
        """Mean of the target class, sum over its components of pi_k mu_k / pi_c, shape (d,)."""
        w = self.model.weights[self.components]
        return w @ self.model.means[self.components] / w.sum()

    @property
    def target_modes(self):
        """(means (n_c, d), within-class weights (n_c,)) of the target class."""
        w = self.model.weights[self.components]
        return self.model.means[self.components], w / w.sum()

    def evaluate(self, x, t):
        model = self.model
        scale, bias = model.logit_coefficients(t, self.process)
        if self.components.size == 1:
            cond, resp = self.target_mean, None
            target_logit = scale * (x @ cond) + bias[self.components[0]]
        else:
            logits = scale * (x @ model.means[self.components].T) + bias[self.components]
            target_logit = logsumexp(logits, axis=1)
            resp = np.exp(logits - target_logit[:, None])
            cond = resp @ model.means[self.components]
        if self.unconditional is not None:
            other = self.unconditional
            u_scale, u_bias = other.logit_coefficients(t, self.process)
            res = posterior_moments(x.astype(self.dtype, copy=False), self.means, u_scale, u_bias, self.chunk,
                                    self.threads)
            uncond = mean_for_reference_var(x, res.mean.astype(np.float64, copy=False), t, self.process,
                                            other.class_var, model.class_var)
            return Evaluation(cond, uncond, responsibilities=resp)
        res = posterior_moments(x.astype(self.dtype, copy=False), self.means, scale, bias, self.chunk, self.threads,
                                hint=self.components[0])
        argmax = res.argmax
        if model.multimodal:
            argmax = model.class_posterior(x, t, self.process).argmax(axis=1)
        return Evaluation(cond, res.mean.astype(np.float64, copy=False), res.log_partition, res.entropy,
                          target_logit, argmax, resp)

    def sample_initial(self, t, n, rng, init="unconditional"):
        _check_init(init)
        if init == "conditional":
            return self.model.sample_noised(t, self.process, n, rng, target=self.target)[0]
        source = self.model if self.unconditional is None else self.unconditional
        return source.sample_noised(t, self.process, n, rng)[0]


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
