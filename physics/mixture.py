r"""Isotropic Gaussian mixtures and their exact noised scores.

The data distribution has :math:`K` classes in :math:`d` dimensions,

.. math:: p_0(x) = \sum_{k=1}^K \pi_k\, \mathcal N(x;\, \mu_k, s^2 I),

so under any process of :mod:`cfgphase.physics.processes` the noised density is
:math:`p_t(x) = \sum_k \pi_k \mathcal N(x; a_t\mu_k, \Gamma_t I)` (docs/theory.md eq. 2).
The class posterior is a softmax of logits linear in :math:`x` (eq. 5),

.. math:: \ell_k(x,t) = \frac{a_t}{\Gamma_t}\, x\cdot\mu_k
          - \frac{a_t^2 |\mu_k|^2}{2\Gamma_t} + \log \pi_k ,

and every exact score is written through the *class-mean estimate*
:math:`\hat m(x,t) = \sum_k \pi_k(x,t)\, \mu_k` (eq. 6):

.. math:: s(x,t) = -\frac{x - a_t\, \hat m(x,t)}{\Gamma_t}, \qquad
          D(x,t) = E[x_0 \mid x_t = x] = \frac{a_t s^2 x + \sigma_t^2 \hat m}{\Gamma_t}.

For the conditional score of class :math:`c`, :math:`\hat m = \mu_c`.

The dense methods here build the :math:`B\times K` logit matrix: they are the reference
implementation, meant for small K. Large K goes through :func:`cfgphase.solvers.score.kernel.posterior_moments`,
which uses the same :meth:`GaussianMixture.logit_coefficients`.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np

def default_memory_budget():
    """Default budget in bytes for the class means: half of the physical memory, read when called
    (8 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def check_class_var(value, d):
    """``class_var``: a number >= 0, or d of them (diagonal classes), as a float or a float64 (d,) array."""
    if np.ndim(value) == 0:
        return _check_nonneg(value, "class_var")
    try:
        v = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"class_var must be a number or {d} numbers, got {value!r}") from None
    if v.shape != (d,) or not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError(f"class_var must be a number >= 0 or {d} finite numbers >= 0 (one per coordinate), "
                         f"got shape {v.shape}")
    v.setflags(write=False)
    return v


#: Largest number of classes (or components), 2^40 = 1.1e12, far below the generator's 64-bit class counter:
#: one score evaluation there generates 2^40 d numbers (an hour at d = 64 on two cores), so a larger K is
#: far likelier a typo than a plan, and is refused rather than run for days.
MAX_CLASSES = 2**40


def _check_nonneg(value, name):
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return value


def number_of_classes(d, classes=None, alpha=None, itemsize=8, budget=None):
    """Number of classes K, from ``classes`` directly or ``K = round(exp(alpha d))``.

    Exactly one of ``classes`` and ``alpha`` must be given. Raises ValueError naming the
    parameter if K < 1, or if the K x d class means (``itemsize`` bytes each) would exceed
    ``budget`` bytes (default: :func:`default_memory_budget`, half the physical memory; ``math.inf``
    for means that are generated, not stored), or if K > :data:`MAX_CLASSES`.
    """
    d = int(d)
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if (classes is None) == (alpha is None):
        raise ValueError("give exactly one of classes (K) and alpha (K = exp(alpha d))")
    budget = default_memory_budget() if budget is None else budget
    if not (isinstance(budget, (int, float)) and budget > 0):
        raise ValueError(f"memory: the budget must be a positive number of bytes, got {budget!r}")
    if alpha is not None:
        alpha = float(alpha)
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        log_k = alpha * d
        if log_k > math.log(MAX_CLASSES):
            raise ValueError(f"alpha={alpha} gives K = exp({log_k:.4g}) classes at d={d}, more than 2^40")
        if log_k > math.log(budget / (itemsize * d)):
            raise ValueError(
                f"alpha={alpha} gives K = exp({log_k:.4g}) classes, whose means do not fit in "
                f"{budget / 2**30:.1f} GiB at d={d} (generated means are never stored: simulate(..., "
                f"means='generated'))"
            )
        return max(1, round(math.exp(log_k)))
    if int(classes) != classes or classes < 1:
        raise ValueError(f"classes (K) must be an integer >= 1, got {classes!r}")
    classes = int(classes)
    if classes > MAX_CLASSES:
        raise ValueError(f"classes (K) must be at most 2^40, got {classes}")
    if classes * d * itemsize > budget:
        raise ValueError(f"classes={classes} means do not fit in {budget / 2**30:.1f} GiB at d={d} "
                         "(generated means are never stored: simulate(..., means='generated'))")
    return classes


def check_mode_weights(mode_weights, modes):
    """The within-class mode weights as an array (uniform if None); ValueError naming ``mode_weights``
    unless they are ``modes`` finite positive numbers given with ``modes`` > 1."""
    if mode_weights is None:
        return np.full(modes, 1.0 / modes)
    if modes == 1:
        raise ValueError("mode_weights: give them with modes > 1")
    try:
        mw = np.asarray(mode_weights, dtype=float)
    except (TypeError, ValueError):
        mw = None
    if mw is None or mw.shape != (modes,) or not np.all(np.isfinite(mw)) or np.any(mw <= 0):
        raise ValueError(f"mode_weights must be {modes} positive numbers, got {mode_weights!r}")
    return mw


class GaussianMixture:
    r"""K Gaussian components :math:`\mathcal N(\mu_k, S)` with weights :math:`\pi_k`, grouped into
    classes; the covariance is shared, isotropic :math:`S = s^2 I` or diagonal :math:`S = \mathrm{diag}(s_j^2)`
    (anisotropic classes, docs/theory.md eq. 72).

    By default each component is its own class. With ``labels``, class c is the mixture of the
    components labelled c (a *multimodal* conditional, e.g. Jin, Shi and Gu's 0.3/0.7 two-mode
    class): its conditional density is :math:`\sum_{k\in c}\pi_k\mathcal N(\mu_k, s^2 I)/\pi_c`,
    :math:`\pi_c = \sum_{k\in c}\pi_k`, and the class posterior sums the component posteriors.

    Parameters
    ----------
    means : array_like, shape (K, d)
        Component means :math:`\mu_k`, float64.
    class_var : float or array_like (d,), default 0.25
        Within-component variance :math:`s^2 \ge 0`, or one per coordinate (a spectrum in the
        coordinate basis: rotate the data to put another basis there).
    weights : array_like, shape (K,), optional
        Positive component weights :math:`\pi_k`, normalised here; uniform if omitted.
    labels : array_like of int, shape (K,), optional
        Class of each component, covering 0 .. C-1; default ``arange(K)``.
    sq_norms : array_like, shape (K,), optional
        :math:`|\mu_k|^2`, when they are known (the generator of cfgphase.physics.disorder computes
        them in its own fixed order, and the kernel uses the same numbers for generated means).
    """

    def __init__(self, means, class_var=0.25, weights=None, labels=None, sq_norms=None):
        means = np.ascontiguousarray(means, dtype=np.float64)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must have shape (K, d) with K, d >= 1, got {means.shape}")
        if not np.all(np.isfinite(means)):
            raise ValueError("means must be finite")
        self.means = means
        self.class_var = check_class_var(class_var, means.shape[1])
        K = means.shape[0]
        self.uniform = weights is None
        if weights is None:
            self.weights = np.full(K, 1.0 / K)
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (K,):
                raise ValueError(f"weights must have shape ({K},), got {w.shape}")
            if not np.all(np.isfinite(w)) or np.any(w <= 0):
                raise ValueError("weights must be finite and positive")
            self.weights = w / w.sum()
        # uniform: -log K exactly as GeneratedMixture's bias has it
        self.log_weights = np.full(K, -math.log(K)) if self.uniform else np.log(self.weights)
        self.sq_norms = np.einsum("kd,kd->k", means, means) if sq_norms is None else np.asarray(sq_norms, float)
        if labels is None:
            self.labels = None
        else:
            labels = np.asarray(labels)
            if labels.shape != (K,) or labels.dtype.kind not in "iu":
                raise ValueError(f"labels must be {K} integers, got shape {labels.shape}, dtype {labels.dtype}")
            if labels.min() != 0 or np.any(np.bincount(labels) == 0):
                raise ValueError("labels must cover every class 0 .. C-1")
            self.labels = None if np.array_equal(labels, np.arange(K)) else labels.astype(np.int64)

    @classmethod
    def random(cls, d, classes=None, alpha=None, mean_var=1.0, class_var=0.25, weights=None, seed=0, modes=1,
               mode_weights=None, memory=None):
        r"""Means drawn i.i.d. from :math:`\mathcal N(0, \sigma_\mu^2 I)` with a fixed seed, by the
        counter-based generator of cfgphase.physics.disorder (component k is its class mean k), so
        that :class:`GeneratedMixture` has the same numbers without storing them.

        Give the number of classes either directly (``classes``) or through the exponential
        scaling ``K = round(exp(alpha d))`` (``alpha``). ``mean_var`` is :math:`\sigma_\mu^2`.
        ``weights`` are the class weights. With ``modes`` > 1 every class is a mixture of that
        many components with means drawn from the same prior and within-class weights
        ``mode_weights`` (default uniform); component ``c * modes + j`` is mode j of class c.
        ``memory`` is the budget in bytes for the means (:func:`number_of_classes`).
        """
        if int(modes) != modes or modes < 1:
            raise ValueError(f"modes must be an integer >= 1, got {modes!r}")
        modes = int(modes)
        K = number_of_classes(d, classes=classes, alpha=alpha, itemsize=8 * modes, budget=memory)
        mean_var = _check_nonneg(mean_var, "mean_var")
        from cfgphase.physics.disorder import RandomMeans  # Numba: imported when means are drawn

        means, sq_norms = RandomMeans(K * modes, int(d), seed=seed, mean_var=mean_var).materialise()
        if modes == 1:
            check_mode_weights(mode_weights, modes)
            return cls(means, class_var=class_var, weights=weights, sq_norms=sq_norms)
        mw = check_mode_weights(mode_weights, modes)
        cw = np.full(K, 1.0 / K) if weights is None else np.asarray(weights, dtype=float)
        if cw.shape != (K,) or not np.all(np.isfinite(cw)) or np.any(cw <= 0):
            raise ValueError(f"weights must be {K} positive class weights, got shape {np.shape(weights)}")
        component_weights = (cw[:, None] / cw.sum() * (mw / mw.sum())[None, :]).ravel()
        return cls(means, class_var=class_var, weights=component_weights, labels=np.repeat(np.arange(K), modes),
                   sq_norms=sq_norms)

    @property
    def K(self):
        """Number of components."""
        return self.means.shape[0]

    @property
    def d(self):
        return self.means.shape[1]

    @property
    def n_classes(self):
        return self.K if self.labels is None else int(self.labels.max()) + 1

    @property
    def multimodal(self):
        """Whether some class has more than one component."""
        return self.labels is not None

    def components(self, c):
        """Indices of the components of class ``c``, shape (n_c,)."""
        if int(c) != c or not 0 <= c < self.n_classes:
            raise ValueError(f"target must be a class index in [0, {self.n_classes - 1}], got {c!r}")
        return np.array([int(c)]) if self.labels is None else np.flatnonzero(self.labels == c)

    @property
    def class_weights(self):
        r""":math:`\pi_c`, shape (C,)."""
        return self.weights if self.labels is None else np.bincount(self.labels, self.weights)

    @property
    def signal_var(self):
        """Total second moment of the data, E|x_0|^2 = sum_k pi_k |mu_k|^2 + d s^2 (all directions
        enter the class posterior through x . mu_k). With uniform weights the sum of the squared norms
        is blocked (cfgphase.physics.disorder.blocked_sum) as GeneratedMixture computes it."""
        spread = float(np.sum(np.broadcast_to(self.class_var, (self.d,))))
        if self.uniform:
            from cfgphase.physics.disorder import blocked_sum

            return blocked_sum(self.sq_norms) / self.K + spread
        return float(self.weights @ self.sq_norms + spread)

    @property
    def isotropic(self):
        """Whether the shared covariance is a multiple of the identity (``class_var`` a float)."""
        return np.ndim(self.class_var) == 0

    def component_means(self, components):
        """Means of ``components`` (indices), shape (n, d)."""
        return self.means[components]

    def component_weights(self, components):
        """Weights of ``components`` (indices), shape (n,)."""
        return self.weights[components]

    # --- exact formulas (docs/theory.md eqs. 2, 5, 6) ---------------------------------

    def logit_coefficients(self, t, process):
        r"""Scale :math:`a_t/\Gamma_t` and bias :math:`-a_t^2|\mu_k|^2/(2\Gamma_t) + \log\pi_k` (eq. 5);
        the logits are :math:`(\text{scale}\odot x)\cdot\mu_k + \text{bias}_k`.

        Returns ``(scale, bias: ndarray (K,))``, scale a float, or (d,) for diagonal classes, whose
        :math:`\Gamma_{t,j} = a_t^2 s_j^2 + \sigma_t^2` is per coordinate (eq. 72).
        """
        a = float(process.a(t))
        if self.isotropic:
            gamma = float(process.class_var(t, self.class_var))
            return a / gamma, self.log_weights - (0.5 * a * a / gamma) * self.sq_norms
        gamma = process.class_var(t, self.class_var)
        return a / gamma, self.log_weights - 0.5 * a * a * (self._squared_means @ (1.0 / gamma))

    @functools.cached_property
    def _squared_means(self):
        r""":math:`\mu_{kj}^2`, shape (K, d): the anisotropic biases' matrix, squared once, not per evaluation."""
        return self.means * self.means

    def logits(self, x, t, process, components=None):
        r"""Component logits :math:`\ell_k(x, t)`, shape (B, K) or (B, len(components)) (eq. 5). Dense."""
        scale, bias = self.logit_coefficients(t, process)
        means = self.means if components is None else self.means[components]
        bias = bias if components is None else bias[components]
        if np.ndim(scale) == 0:
            return scale * (np.atleast_2d(x) @ means.T) + bias
        return (np.atleast_2d(x) * scale) @ means.T + bias

    def posterior(self, x, t, process):
        r"""Component posterior :math:`\pi_k(x, t)`, shape (B, K). Dense: small K only."""
        from scipy.special import softmax  # here: scipy.special takes 0.2 s to import

        return softmax(self.logits(x, t, process), axis=1)

    def class_posterior(self, x, t, process):
        """Class posterior, the component posteriors summed per class, shape (B, C). Dense."""
        post = self.posterior(x, t, process)
        if self.labels is None:
            return post
        out = np.zeros((post.shape[0], self.n_classes))
        np.add.at(out.T, self.labels, post.T)
        return out

    def class_mean_estimate(self, x, t, process):
        r""":math:`\hat m(x,t) = \sum_k \pi_k(x,t) \mu_k`, shape (B, d) (eq. 6). Dense: small K only."""
        return self.posterior(x, t, process) @ self.means

    def conditional_mean_estimate(self, x, t, process, target=0):
        r"""Class-mean estimate of class ``target`` alone: :math:`\mu_c`, shape (d,), for a one-component
        class; the within-class posterior average of its component means, shape (B, d), otherwise."""
        comps = self.components(target)
        if comps.size == 1:
            return self.means[comps[0]]
        from scipy.special import softmax

        return softmax(self.logits(x, t, process, comps), axis=1) @ self.means[comps]

    def score(self, x, t, process):
        r"""Unconditional score :math:`\nabla \log p_t(x)`, shape (B, d) (eq. 6)."""
        return score_from_mean(x, self.class_mean_estimate(x, t, process), t, process, self.class_var)

    def conditional_score(self, x, t, process, target=0):
        r"""Score of class ``target``, :math:`-(x - a_t\hat m_c)/\Gamma_t`, shape (B, d) (eq. 6)."""
        return score_from_mean(x, self.conditional_mean_estimate(x, t, process, target), t, process, self.class_var)

    def denoiser(self, x, t, process):
        """Unconditional denoiser :math:`E[x_0 | x_t = x]`, shape (B, d) (eq. 6)."""
        return denoiser_from_mean(x, self.class_mean_estimate(x, t, process), t, process, self.class_var)

    def log_density(self, x, t, process, components=None):
        r""":math:`\log p_t(x)`, shape (B,), from the Gaussian densities directly (eq. 2); over
        ``components`` only (their weights renormalised) if given: a class's conditional density."""
        from scipy.special import logsumexp

        a = float(process.a(t))
        gamma = np.broadcast_to(process.class_var(t, self.class_var), (self.d,))
        root = np.sqrt(gamma)
        x = np.atleast_2d(x) / root  # whitened: |x - a mu|^2 / Gamma coordinate by coordinate
        means = self.means / root
        comps = slice(None) if components is None else components
        log_w = self.log_weights[comps]
        log_w = log_w - logsumexp(log_w)
        sq = (
            np.einsum("bd,bd->b", x, x)[:, None]
            - 2 * a * (x @ means[comps].T)
            + a * a * np.einsum("kd,kd->k", means[comps], means[comps])[None, :]
        )
        return logsumexp(log_w - sq / 2, axis=1) - 0.5 * np.sum(np.log(2 * np.pi * gamma))

    def sample_noised(self, t, process, n, rng, target=None):
        r"""``n`` exact draws of :math:`x_t`: a component :math:`k\sim\pi` (or within class ``target``),
        then :math:`a_t\mu_k + \sqrt{\Gamma_t}\, z` (eq. 2). Returns (samples (n, d), components (n,))."""
        if target is None:  # uniform: floor(K u) from the n uniforms that rng.choice would draw
            comps = (np.minimum((rng.random(n) * self.K).astype(np.int64), self.K - 1) if self.uniform
                     else rng.choice(self.K, size=n, p=self.weights))
        else:
            members = self.components(target)
            if members.size == 1:
                comps = np.full(n, members[0])
            else:
                p = self.weights[members] / self.weights[members].sum()
                comps = members[rng.choice(members.size, size=n, p=p)]
        a = float(process.a(t))
        gamma = process.class_var(t, self.class_var)
        return a * self.component_means(comps) + np.sqrt(gamma) * rng.standard_normal((n, self.d)), comps


class GeneratedMixture:
    r"""K classes :math:`\mathcal N(\mu_k, s^2 I)` with uniform weights whose means are never stored.

    The means :math:`\mu_{kj} = \sigma_\mu z(\text{seed}, k, j)` come from the counter-based generator
    of cfgphase.physics.disorder, the one :meth:`GaussianMixture.random` materialises, so both give the
    same numbers: the kernel (cfgphase.solvers.score.kernel) generates each chunk in a per-thread
    buffer, and this object computes only what a sampler needs beyond it (the target's mean, the
    particles' components, the data's second moment) in memory O(d) per class asked for.
    """

    multimodal = False
    labels = None
    uniform = True
    components = GaussianMixture.components
    sample_noised = GaussianMixture.sample_noised

    def __init__(self, d, classes, mean_var=1.0, class_var=0.25, seed=0):
        from cfgphase.physics.disorder import RandomMeans

        self.means_generator = RandomMeans(classes, d, seed=seed, mean_var=_check_nonneg(mean_var, "mean_var"))
        self.K = self.n_classes = self.means_generator.K
        self.d = self.means_generator.d
        self.class_var = _check_nonneg(class_var, "class_var")

    def component_means(self, components):
        """Means of ``components`` (indices), shape (n, d), generated."""
        means = self.means_generator.rows(np.asarray(components).reshape(-1))[0]
        return means.reshape(np.shape(components) + (self.d,))

    def component_weights(self, components):
        return np.full(np.shape(components), 1.0 / self.K)

    @functools.cached_property
    def signal_var(self):
        """E|x_0|^2, as :attr:`GaussianMixture.signal_var` computes it: one pass over all K means."""
        return self.means_generator.sum_of_square_norms() / self.K + self.d * self.class_var

    def logit_coefficients(self, t, process):
        r"""Scale :math:`a_t/\Gamma_t` and the bias :math:`-\log K - a_t^2|\mu_k|^2/(2\Gamma_t)` (eq. 5) as a
        :class:`~cfgphase.physics.disorder.NormBias`, which the kernel evaluates chunk by chunk."""
        from cfgphase.physics.disorder import NormBias

        a = float(process.a(t))
        gamma = float(process.class_var(t, self.class_var))
        return a / gamma, NormBias(self.means_generator, -math.log(self.K), 0.5 * a * a / gamma)


def mean_for_reference_var(x, m, t, process, var, nu):
    r"""Class-mean estimate for reference variance ``nu`` of a score written with variance ``var``
    (eq. 8): :math:`(a_t(\lambda - \nu)x + \Gamma_\nu\hat m)/\Gamma_\lambda`, :math:`\Gamma_v = a_t^2 v + \sigma_t^2`.

    Lets a model whose components have variance :math:`\lambda` (an independent unconditional
    model such as N(0, I)) drive a sampler whose scores use :math:`\nu`."""
    a = float(process.a(t))
    return (a * (var - nu) * x + process.class_var(t, nu) * m) / process.class_var(t, var)


def score_from_mean(x, m, t, process, class_var):
    r"""Score :math:`-(x - a_t m)/\Gamma_t` from a class-mean estimate ``m`` (eq. 6).

    ``class_var`` (the reference variance of :math:`\Gamma_t`) is a float or a (d,) array.
    """
    return -(x - float(process.a(t)) * m) / process.class_var(t, class_var)


def denoiser_from_mean(x, m, t, process, class_var):
    r"""Denoiser :math:`(a_t s^2 x + \sigma_t^2 m)/\Gamma_t` from a class-mean estimate (eq. 6)."""
    a = float(process.a(t))
    return (a * class_var * x + float(process.var(t)) * m) / process.class_var(t, class_var)
