"""Score fields: what a sampler evaluates at (x, t).

:func:`field_for` builds the field of a model (cfgphase.physics.model): a :class:`MixtureField`
for a :class:`~cfgphase.physics.model.Model`, a :class:`GaussianField` for a
:class:`~cfgphase.physics.model.GaussianModel`.

A field exposes ``process``, ``reference_var`` (:math:`\\nu` in :math:`\\Gamma_t = a_t^2\\nu +
\\sigma_t^2`, scalar or (d,)), ``target_mean`` (d,), ``d``, ``evaluate(x, t) -> Evaluation`` and
``sample_initial(t, n, rng, init)``. Every score is :math:`-(x - a_t\\hat m)/\\Gamma_t`
(docs/theory.md eq. 6), so an evaluation returns class-mean estimates, not scores.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from cfgphase.physics.mixture import GeneratedMixture, mean_for_reference_var
from cfgphase.physics.model import GaussianModel, Model
from cfgphase.physics.processes import get_process
from cfgphase.solvers.score.blas import gemm_library, single_threaded_blas
from cfgphase.solvers.score.dense import dense_posterior_moments

INITS = ("unconditional", "conditional")
#: How a random model's class means reach the kernel: materialised once, generated chunk by chunk in the
#: kernel (docs/theory.md eq. 64), or generated when stored ones would exceed the model's memory budget.
MEANS = ("stored", "generated", "auto")


class Evaluation(NamedTuple):
    """Class-mean estimates at (x, t); posterior fields are None where a model has no classes."""

    cond: np.ndarray  #: (d,) or (B, d) conditional estimate m_c
    uncond: np.ndarray  #: (B, d) unconditional estimate m_u
    log_partition: np.ndarray | None = None  #: (B,) log sum_k exp(logit_k)
    entropy: np.ndarray | None = None  #: (B,) class-posterior entropy (nats)
    #: (B,) log-weight of the target class: the kernel's own logit (eq. 31), or the logsumexp of its components
    target_logit: np.ndarray | None = None
    argmax: np.ndarray | None = None  #: (B,) Bayes class
    responsibilities: np.ndarray | None = None  #: (B, n_c) posterior of the target's modes within the class


def _check_init(init):
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


#: Largest number of components for a model with multimodal classes (its class posterior is dense).
MULTIMODAL_COMPONENTS = 100_000
#: Up to this many components the class posterior is computed in NumPy from the whole (B, K) logit
#: matrix (cfgphase.solvers.score.dense), above it by the streaming kernel: the choice depends on the
#: model alone, never on the number of particles, so a run gives the same numbers however it is split.
DENSE_COMPONENTS = 64


def _posterior_moments(x, means, scale, bias, chunk, threads, dtype, hint=None):
    """The class posterior of particles ``x`` (float64, as the samplers hold them) in ``dtype``: dense for stored
    arrays of at most DENSE_COMPONENTS means (the field materialises such means), else the streaming kernel
    (imported, with Numba, when first needed), whose lanes cast x's rows to float32 block by block."""
    if x.dtype not in (np.float64, dtype):  # e.g. float32 particles of a float64 field
        x = x.astype(dtype)
    if isinstance(means, np.ndarray) and means.shape[0] <= DENSE_COMPONENTS:
        return dense_posterior_moments(x.astype(dtype, copy=False), means, scale, bias, hint=hint)
    from cfgphase.solvers.score.kernel import posterior_moments

    return posterior_moments(x, means, scale, bias, chunk, threads, hint=hint, dtype=dtype)


class MixtureField:
    """Exact scores of a :class:`cfgphase.physics.mixture.GaussianMixture`, conditioned on class ``target``.

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

    ``model`` may be a :class:`~cfgphase.physics.mixture.GeneratedMixture`: the kernel then generates
    the means chunk by chunk (``means_mode`` is 'generated') and gives the numbers of the stored ones.
    """

    def __init__(self, model, process="ou", target=0, dtype=np.float64, chunk=None, threads=None,
                 unconditional=None, training=False):
        self.model = model
        self.training = bool(training)  # the components are training points: copies are measured
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
        if isinstance(driver, GeneratedMixture) and driver.K > DENSE_COMPONENTS:
            self.means, self._sq_norms = driver.means_generator, None
        elif isinstance(driver, GeneratedMixture):  # a handful of means: the dense kernel takes them stored
            means, self._sq_norms = driver.means_generator.materialise()
            self.means = means.astype(self.dtype, copy=False)
        else:
            self.means, self._sq_norms = driver.means.astype(self.dtype, copy=False), None
        self.means_mode = "generated" if isinstance(model, GeneratedMixture) else "stored"
        w = model.component_weights(self.components)
        self._target = (model.component_means(self.components), w / w.sum())
        self.chunk = chunk
        self.threads = threads

    reference_var = property(lambda self: self.model.class_var)
    d = property(lambda self: self.model.d)

    @property
    def blas(self):
        """The streaming kernel's GEMM library ('openblas' or 'mkl', cfgphase.solvers.score.blas.gemm_library)
        if this field's posteriors go through it (generated means, or more than DENSE_COMPONENTS), else None."""
        if isinstance(self.means, np.ndarray) and self.means.shape[0] <= DENSE_COMPONENTS:
            return None
        return gemm_library().name

    @property
    def signal_var(self):
        """Second moment E|x_0|^2 of the data the sampler starts from (it sets the default t_max)."""
        return max(self.model.signal_var, 0.0 if self.unconditional is None else self.unconditional.signal_var)

    @functools.cached_property
    def target_mean(self):
        """Mean of the target class, sum over its components of pi_k mu_k / pi_c, shape (d,), read-only.

        Computed once: every evaluation returns it, and out of cache, right after a kernel call, computing it
        took 0.1 ms (a float32 score at B = 1024, K = 4096 takes 3-17 ms at d = 32-256)."""
        w = self.model.component_weights(self.components)
        mean = w @ self._target[0] / w.sum()
        mean.setflags(write=False)
        return mean

    @property
    def target_modes(self):
        """(means (n_c, d), within-class weights (n_c,)) of the target class."""
        return self._target

    def precise(self):
        """This field in float64 (itself if it is): what must stay exact, such as the target's
        posterior near 1 in the final statistics, is evaluated there (docs/theory.md eq. 31)."""
        if self.dtype == np.float64:
            return self
        return MixtureField(self.model, self.process, self.target, np.float64, self.chunk, self.threads,
                            self.unconditional, self.training)

    def evaluate(self, x, t):
        with single_threaded_blas():  # a multimodal target's logits too: no OpenBLAS threads left spinning
            return self._evaluate(x, t)

    def _evaluate(self, x, t):
        model = self.model
        scale, bias = model.logit_coefficients(t, self.process)
        # diagonal classes (eq. 72): the per-coordinate scale goes into x, the kernel's scale is 1
        xs, scale = (x, scale) if np.ndim(scale) == 0 else (x * scale, 1.0)
        if self.components.size == 1:  # its logit comes from the kernel (below)
            cond, resp, target_logit = self.target_mean, None, None
        else:
            logits = scale * (xs @ model.means[self.components].T) + bias[self.components]
            from scipy.special import logsumexp  # multimodal targets only: scipy.special takes 0.2 s to import

            target_logit = logsumexp(logits, axis=1)
            resp = np.exp(logits - target_logit[:, None])
            cond = resp @ model.means[self.components]
        if self.unconditional is not None:
            other = self.unconditional
            u_scale, u_bias = other.logit_coefficients(t, self.process)
            ux, u_scale = (x, u_scale) if np.ndim(u_scale) == 0 else (x * u_scale, 1.0)
            res = _posterior_moments(ux, self.means, u_scale, self._bias(u_bias), self.chunk, self.threads, self.dtype)
            uncond = mean_for_reference_var(x, res.mean, t, self.process, other.class_var, model.class_var)
            return Evaluation(cond, uncond, responsibilities=resp)
        res = _posterior_moments(xs, self.means, scale, self._bias(bias), self.chunk, self.threads, self.dtype,
                                 hint=self.components[0])
        argmax = res.argmax
        if target_logit is None:  # the value the partition sum took, in the kernel's precision (eq. 31)
            target_logit = res.hint_logit
        if model.multimodal:
            argmax = model.class_posterior(x, t, self.process).argmax(axis=1)
        return Evaluation(cond, res.mean, res.log_partition, res.entropy, target_logit, argmax, resp)

    def _bias(self, bias):
        """The logit bias as the kernel takes it: generated means materialised for the dense kernel take
        their NormBias as an array."""
        return bias if self._sq_norms is None else bias.of_norms(self._sq_norms)

    def sample_initial(self, t, n, rng, init="unconditional"):
        _check_init(init)
        if init == "conditional":
            return self.model.sample_noised(t, self.process, n, rng, target=self.target)[0]
        source = self.model if self.unconditional is None else self.unconditional
        return source.sample_noised(t, self.process, n, rng)[0]


class GaussianField:
    """Exact scores of a :class:`cfgphase.physics.gaussian.GaussianPair` (no class posterior)."""

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


class DegradedField:
    r"""A field whose conditional estimate is degraded the way an under-trained conditional model is.

    Galashov et al. (2025) find learned guidance weights positive only when the conditional
    denoiser is imperfect. Here the exact conditional estimate :math:`\hat m_c` of ``field`` is, in
    this order: ``shrink``-ed toward the data mean :math:`\bar\mu` (:math:`(1-\lambda)\hat m_c + \lambda\bar\mu`,
    a conditional model that has not yet separated the classes); given the class variance
    ``inflate`` :math:`\cdot s^2` (a blurrier conditional, converted to the field's reference variance
    by eq. 8); ``mix``-ed with the unconditional estimate (:math:`(1-\lambda_u)\hat m_c + \lambda_u\hat m_u`,
    a conditional model that ignores the label some of the time). Everything else, including the
    exact reference samples of the observables, is the wrapped field's: measurements are against
    the true conditional.
    """

    def __init__(self, field, shrink=0.0, inflate=1.0, mix=0.0):
        for name, value in (("shrink", shrink), ("mix", mix)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        if not (np.isfinite(inflate) and inflate > 0):
            raise ValueError(f"inflate must be a finite number > 0, got {inflate!r}")
        self.field, self.shrink, self.inflate, self.mix = field, float(shrink), float(inflate), float(mix)
        model = field.model
        self.data_mean = model.weights @ model.means

    def __getattr__(self, name):  # process, reference_var, target_mean, d, signal_var, sample_initial, ...
        return getattr(self.field, name)

    def evaluate(self, x, t):
        ev = self.field.evaluate(x, t)
        cond = (1.0 - self.shrink) * ev.cond + self.shrink * self.data_mean
        if self.inflate != 1.0:
            nu = self.field.reference_var
            cond = mean_for_reference_var(x, np.broadcast_to(cond, x.shape), t, self.field.process,
                                          self.inflate * nu, nu)
        if self.mix:
            cond = (1.0 - self.mix) * cond + self.mix * ev.uncond
        return ev._replace(cond=cond)


def means_mode(model, means="auto"):
    """'stored' or 'generated': how the class means of ``model`` reach the kernel (:data:`MEANS`).

    'auto' generates them when the model can (random means, uniform weights, one mode per class) and
    stored ones would exceed its memory budget (``Model.memory``, default half the physical memory,
    read when called). ValueError naming ``means`` for an unknown mode or means that cannot be generated.
    """
    if not isinstance(means, str) or means not in MEANS:
        raise ValueError(f"means must be one of {MEANS}, got {means!r}")
    if not isinstance(model, Model):
        return "stored"
    if means == "auto":
        return "generated" if model.can_generate and not model.means_fit() else "stored"
    if means == "generated" and not model.can_generate:
        raise ValueError("means: 'generated' needs random means (no means=), uniform weights, modes=1 and one "
                         "class_var")
    return means


def field_for(model, dtype="float64", threads=None, chunk=None, means="stored"):
    """The exact-score field of ``model`` (a Model or a GaussianModel).

    ``dtype`` ('float64' or 'float32') is the precision of the kernel's GEMMs and softmax pass,
    ``threads`` its worker threads (default: the usable cores, read at call time) and ``chunk`` its
    classes per chunk (cfgphase.solvers.score.kernel.posterior_moments). ``means`` ('stored',
    'generated' or 'auto', :func:`means_mode`) says whether a random model's class means are
    materialised or generated inside the kernel (the same numbers either way).
    """
    mode = means_mode(model, means)
    if dtype not in ("float64", "float32", np.float64, np.float32):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if isinstance(model, GaussianModel):
        return GaussianField(model.pair, model.process)
    if not isinstance(model, Model):
        raise ValueError(f"model must be a cfgphase Model or GaussianModel, got {type(model).__name__}")
    mixture = model.generated_mixture if mode == "generated" else model.mixture
    return MixtureField(mixture, process=model.process, target=model.target, dtype=np.dtype(dtype),
                        chunk=chunk, threads=threads, unconditional=model.unconditional_mixture,
                        training=model.data_labels is not None)
