r"""What is simulated: value objects that declare a model, its disorder and its noising process.

:class:`Model` is the Gaussian mixture of docs/theory.md eq. (2) with its forward process and
target class: K classes in d dimensions, class k is :math:`\mathcal N(\mu_k, s^2 I)` with weight
:math:`\pi_k`, means i.i.d. :math:`\mathcal N(0, \sigma_\mu^2 I)` drawn from ``seed`` (the
*disorder*) or given. The noise of a run is not part of the model: ``cfgphase.simulate(model,
..., seed=...)`` takes its own seed, so the same model can be sampled with many noises and the
same noise can drive two guidance schedules (common random numbers).

:class:`GaussianModel` is the jointly Gaussian problem of section 7 (eqs. 16-18): a conditional
:math:`\mathcal N(\mu_c, \lambda_c)` and an unconditional :math:`\mathcal N(\mu_u, \lambda_u)` per
eigendirection, with a process.

Both are immutable; the means are drawn once, when first needed (:attr:`Model.mixture`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from cfgphase.physics.gaussian import GaussianPair
from cfgphase.physics.mixture import (GaussianMixture, GeneratedMixture, check_class_var, check_mode_weights,
                                      default_memory_budget, number_of_classes)
from cfgphase.physics.processes import Process, get_process

#: alpha of the default model when neither ``classes``, ``alpha`` nor ``means`` is given.
DEFAULT_ALPHA = 0.12


def _integer(value, name, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _positive(value, name, allow_zero=False):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class Model:
    r"""A Gaussian mixture, its forward process, its target class and the seed of its means.

    Parameters (keyword-only)
    -------------------------
    d : int
        Dimension (taken from ``means`` when they are given).
    alpha : float, optional
        Exponential regime, :math:`K = \mathrm{round}(e^{\alpha d})` classes (default 0.12 when neither
        ``classes`` nor ``means`` is given).
    classes : int, optional
        Number of classes K.
    means : array_like (K, d), optional
        Class (component) means, instead of drawing them; with optional ``weights`` and ``labels``.
    mean_var : float, default 1
        :math:`\sigma_\mu^2`, variance of the drawn means (> 0).
    class_var : float or array_like (d,), default 0.25
        :math:`s^2 \ge 0`, within-class variance; or one per coordinate, :math:`S = \mathrm{diag}(s_j^2)`
        (anisotropic classes with a shared spectrum, docs/theory.md eq. 72).
    process : {'ou', 've', 'flow'} or Process, default 'ou'
        Forward noising process (docs/theory.md eq. 1).
    target : int, default 0
        Class c of the conditional score.
    seed : int in [0, 2^64 - 1], default 0
        Seed of the class means (the disorder; the key of the counter-based generator of
        cfgphase.physics.disorder, docs/theory.md eq. 64). It does not drive the sampler's noise.
    weights : array_like (K,), optional
        Class weights (component weights with ``means``); uniform by default.
    labels : array_like of int (K,), optional
        With ``means``: the class of each component (multimodal classes).
    modes : int, default 1
        Components per drawn class (multimodal conditionals), with ``mode_weights``.
    unconditional : float or GaussianMixture, optional
        An independent unconditional model instead of the mixture of all classes: a variance v for
        :math:`\mathcal N(0, vI)`, or a mixture.
    memory : int, optional
        Budget in bytes for stored class means (default: half the physical memory, read when needed).
        :attr:`mixture` refuses means beyond it with a ValueError; ``simulate(..., means='auto')``
        generates them instead (:attr:`generated_mixture`, random means with uniform weights and one
        mode per class).
    """

    d: int | None = None
    alpha: float | None = None
    classes: int | None = None
    means: np.ndarray | None = field(default=None, repr=False)
    mean_var: float = 1.0
    class_var: float = 0.25
    process: Process | str = "ou"
    target: int = 0
    seed: int = 0
    weights: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    modes: int = 1
    mode_weights: tuple | None = None
    unconditional: float | GaussianMixture | None = None
    memory: int | None = field(default=None, repr=False)
    #: The label of each class when the model was built from data (:meth:`from_data`), else None.
    data_labels: tuple | None = field(default=None, init=False, repr=False)
    #: (branching, level variances, guided level) of a :meth:`hierarchical` model, else None.
    hierarchy: tuple | None = field(default=None, init=False, repr=False)

    @classmethod
    def hierarchical(cls, *, d, branching, level_vars, class_var=0.25, level=None, target=0, process="ou",
                     seed=0):
        r"""Classes in a tree (docs/theory.md eq. 71): ``branching`` :math:`(K_0, K_1, \dots)` children per
        node at each level; a level-0 node's mean is drawn from :math:`\mathcal N(0, v_0 I)`, a level-l
        node's from :math:`\mathcal N(	ext{parent's mean}, v_l I)`, ``level_vars`` :math:`= (v_0, v_1, \dots)`;
        the leaves are the components, each :math:`\mathcal N(	ext{mean}, s^2 I)`, equally weighted.

        ``level`` (default the leaves, ``len(branching) - 1``) is the level whose nodes are the classes:
        guidance on a super-class is ``level=0``, on a sub-class the last level; ``target`` is a node
        of that level, numbered depth first. The means are drawn from ``seed``.
        """
        if isinstance(branching, (int, np.integer)) or not hasattr(branching, "__len__") or len(branching) < 1:
            raise ValueError(f"branching must be a list of children per level, got {branching!r}")
        branching = tuple(_integer(k, "branching", 2) for k in branching)
        if not hasattr(level_vars, "__len__") or len(level_vars) != len(branching):
            raise ValueError(f"level_vars must have one variance per level ({len(branching)}), got {level_vars!r}")
        level_vars = tuple(_positive(v, "level_vars") for v in level_vars)
        d = _integer(d, "d", 1)
        levels = len(branching)
        level = levels - 1 if level is None else level
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level < levels:
            raise ValueError(f"level must be an integer in [0, {levels - 1}], got {level!r}")
        leaves = int(np.prod(branching))
        budget = default_memory_budget()
        if leaves * d * 8 > budget:
            raise ValueError(f"branching: {leaves} leaves in d = {d} need {leaves * d * 8} bytes, over the memory "
                             f"budget of {budget}")
        rng = np.random.default_rng(np.random.SeedSequence(_integer(seed, "seed", 0)))
        means = np.zeros((1, d))
        for k, v in zip(branching, level_vars):
            means = np.repeat(means, k, axis=0) + math.sqrt(v) * rng.standard_normal((means.shape[0] * k, d))
        labels = np.arange(leaves) // int(np.prod(branching[level + 1:]))
        model = cls(means=means, labels=labels if level < levels - 1 else None, class_var=class_var, target=target,
                    process=process, seed=seed)
        object.__setattr__(model, "hierarchy", (branching, level_vars, int(level)))
        return model

    def ancestors(self, level):
        """For a :meth:`hierarchical` model: the level-``level`` ancestor of every leaf, shape (leaves,)."""
        if self.hierarchy is None:
            raise ValueError("model: ancestors are defined for a hierarchical model")
        branching = self.hierarchy[0]
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level < len(branching):
            raise ValueError(f"level must be an integer in [0, {len(branching) - 1}], got {level!r}")
        return np.arange(int(np.prod(branching))) // int(np.prod(branching[level + 1:]))

    @classmethod
    def from_data(cls, x, labels, *, width=0.0, target=None, process="ou"):
        r"""The empirical model of a labelled data set (docs/theory.md eq. 68).

        Class c is the mixture of its own training points, each smoothed by :math:`\mathcal N(0, s^2 I)`,
        ``width`` :math:`= s^2 \ge 0` (0: the exact empirical score, the memorising regime); every
        point has the same weight, so a class weighs its share of the data.

        ``x``: (N, d) finite numbers; ``labels``: (N,) integers (any values), at least two classes;
        ``target``: the label to guide towards (default: the smallest). The classes are numbered in
        increasing label order (``data_labels`` holds the labels); the model's ``target`` is the
        target's number. Raises ValueError naming ``x``, ``labels``, ``width`` or ``target``.
        """
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("x must be an (N, d) array of numbers") from None
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise ValueError(f"x must have shape (N, d) with N >= 2 points and d >= 1, got {x.shape}")
        if not np.all(np.isfinite(x)):
            bad = int(np.flatnonzero(~np.all(np.isfinite(x), axis=1))[0])
            raise ValueError(f"x must be finite: point {bad} is not")
        raw = np.asarray(labels)
        if raw.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape ({x.shape[0]},), one per point of x, got {raw.shape}")
        if raw.dtype.kind not in "iu":
            if raw.dtype.kind != "f" or not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
                raise ValueError(f"labels must be integers, got dtype {raw.dtype}")
            raw = raw.astype(np.int64)
        classes, index = np.unique(raw, return_inverse=True)
        if classes.size < 2:
            raise ValueError(f"labels: guidance needs at least two classes, got {classes.size}")
        if target is None:
            target = classes[0]
        hit = np.flatnonzero(classes == target) if isinstance(target, (int, np.integer)) and not isinstance(
            target, bool) else np.array([], dtype=int)
        if hit.size != 1:
            raise ValueError(f"target must be one of the labels {classes.tolist()}, got {target!r}")
        model = cls(means=x, labels=index, class_var=_positive(width, "width", allow_zero=True),
                    target=int(hit[0]), process=process)
        object.__setattr__(model, "data_labels", tuple(int(c) for c in classes))
        return model

    def __post_init__(self):
        setattr = object.__setattr__  # frozen: normalise once, here
        setattr(self, "process", get_process(self.process))
        setattr(self, "seed", _integer(self.seed, "seed", 0))
        if np.ndim(self.class_var) == 0:
            setattr(self, "class_var", _positive(self.class_var, "class_var", allow_zero=True))
        setattr(self, "modes", _integer(self.modes, "modes", 1))
        if self.means is not None:
            if self.alpha is not None or self.classes is not None or self.modes != 1 or self.mode_weights is not None:
                raise ValueError("means: give either means (with weights, labels) or classes/alpha/modes/mode_weights, "
                                 "not both")
            mixture = GaussianMixture(self.means, class_var=self.class_var, weights=self.weights, labels=self.labels)
            if self.d is not None and self.d != mixture.d:
                raise ValueError(f"d: {self.d} differs from the means' dimension {mixture.d}")
            setattr(self, "d", mixture.d)
            setattr(self, "class_var", mixture.class_var)
            self.__dict__["mixture"] = mixture
        else:
            if self.labels is not None:
                raise ValueError("labels: give them with means")
            if self.d is None:
                raise ValueError("d: the dimension is required (or give means)")
            setattr(self, "d", _integer(self.d, "d", 1))
            setattr(self, "class_var", check_class_var(self.class_var, self.d))
            setattr(self, "mean_var", _positive(self.mean_var, "mean_var"))
            if self.seed > 2**64 - 1:
                raise ValueError(f"seed must be an integer in [0, 2**64 - 1], got {self.seed!r}")
            if self.alpha is None and self.classes is None:
                setattr(self, "alpha", DEFAULT_ALPHA)
            if self.classes is not None:
                setattr(self, "classes", _integer(self.classes, "classes", 1))
            # validates alpha/classes before anything is drawn; the memory budget binds stored means only
            number_of_classes(self.d, classes=self.classes, alpha=self.alpha, itemsize=8 * self.modes,
                              budget=math.inf)
            if self.memory is not None and not (isinstance(self.memory, (int, float)) and self.memory > 0):
                raise ValueError(f"memory: the budget must be a positive number of bytes, got {self.memory!r}")
            check_mode_weights(self.mode_weights, self.modes)
        if self.unconditional is not None and not isinstance(self.unconditional, GaussianMixture):
            setattr(self, "unconditional", _positive(self.unconditional, "unconditional"))
        if isinstance(self.unconditional, GaussianMixture) and self.unconditional.d != self.d:
            raise ValueError(f"unconditional: dimension {self.unconditional.d} differs from the model's {self.d}")
        target = self.target
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < self.K:
            raise ValueError(f"target must be a class index in [0, {self.K - 1}], got {target!r}")
        setattr(self, "target", int(target))

    @property
    def K(self):
        """Number of classes."""
        if "mixture" in self.__dict__:
            return self.mixture.n_classes
        return number_of_classes(self.d, classes=self.classes, alpha=self.alpha, itemsize=8 * self.modes,
                                 budget=math.inf)

    @property
    def can_generate(self):
        """Whether the means can be generated instead of stored: random, uniform weights, one mode per class,
        isotropic classes."""
        return self.means is None and self.modes == 1 and self.weights is None and np.ndim(self.class_var) == 0

    def means_fit(self, budget=None):
        """Whether the stored class means fit in ``budget`` bytes (default: the model's ``memory``, else
        half the physical memory)."""
        if self.means is not None or "mixture" in self.__dict__:
            return True
        budget = self.memory if budget is None else budget
        budget = default_memory_budget() if budget is None else budget
        return self.K * self.modes * self.d * 8 <= budget

    @cached_property
    def generated_mixture(self):
        """The :class:`~cfgphase.physics.mixture.GeneratedMixture`: the same class means as :attr:`mixture`,
        never stored. ValueError naming ``means`` unless :attr:`can_generate`."""
        if not self.can_generate:
            raise ValueError("means: generated means need random means (no means=), uniform weights, modes=1 and one "
                             "class_var")
        return GeneratedMixture(self.d, self.K, mean_var=self.mean_var, class_var=self.class_var, seed=self.seed)

    @cached_property
    def mixture(self):
        """The :class:`~cfgphase.physics.mixture.GaussianMixture`, means drawn from ``seed`` on first use
        (ValueError if they exceed the ``memory`` budget)."""
        return GaussianMixture.random(self.d, classes=self.classes, alpha=self.alpha, mean_var=self.mean_var,
                                      class_var=self.class_var, weights=self.weights, seed=self.seed,
                                      modes=self.modes, mode_weights=self.mode_weights, memory=self.memory)

    @cached_property
    def unconditional_mixture(self):
        """The independent unconditional model as a mixture, or None (the mixture of all classes)."""
        if self.unconditional is None or isinstance(self.unconditional, GaussianMixture):
            return self.unconditional
        return GaussianMixture(np.zeros((1, self.d)), class_var=self.unconditional)

    @property
    def target_mean(self):
        r""":math:`\mu_c`, the mean of the target class (its components' weighted mean), shape (d,); generated
        (the same numbers) rather than all means drawn when they have not been."""
        mix = self.generated_mixture if self.can_generate and "mixture" not in self.__dict__ else self.mixture
        comps = mix.components(self.target)
        w = mix.component_weights(comps)
        return w @ mix.component_means(comps) / w.sum()

    @property
    def target_norm(self):
        r""":math:`\rho = |\mu_c|^2/d` of the drawn target (it fluctuates by O(1/sqrt d) around
        :math:`\sigma_\mu^2` from one seed to the next; docs/theory.md eq. 44)."""
        mu = self.target_mean
        return float(mu @ mu / self.d)

    @property
    def alpha_effective(self):
        r""":math:`\log K / d`: the alpha of the mean-field theory for this model."""
        return math.log(self.K) / self.d

    def record(self):
        """The model's parameters as a flat dict (JSON-ready; None where a parameter does not apply)."""
        given = self.means is not None
        if self.unconditional is None:
            unconditional = "mixture"
        elif isinstance(self.unconditional, GaussianMixture):
            unconditional = "given"
        else:
            unconditional = f"N(0, {self.unconditional:g} I)"
        data = self.data_labels is not None
        return dict(d=self.d, K=self.K, components=self.K * self.modes if not given else self.mixture.K,
                    alpha=self.alpha, classes=self.classes, mean_var=None if given else self.mean_var,
                    class_var=self.class_var if np.ndim(self.class_var) == 0 else self.class_var.tolist(),
                    process=self.process.name, target=self.target,
                    target_label=self.data_labels[self.target] if data else None,
                    disorder="data" if data else "hierarchical" if self.hierarchy else "given" if given else "random",
                    branching=list(self.hierarchy[0]) if self.hierarchy else None,
                    level_vars=list(self.hierarchy[1]) if self.hierarchy else None,
                    level=self.hierarchy[2] if self.hierarchy else None,
                    weights="uniform" if self.weights is None else "given",
                    modes=None if given else self.modes, unconditional=unconditional, model_seed=self.seed,
                    alpha_effective=self.alpha_effective)


@dataclass(frozen=True, eq=False)
class GaussianModel:
    r"""Jointly Gaussian conditional :math:`\mathcal N(\mu_c,\lambda_c)` and unconditional
    :math:`\mathcal N(\mu_u,\lambda_u)` per eigendirection, with a forward process (eqs. 16-18).

    ``mean_c``, ``var_c``, ``mean_u``, ``var_u`` are numbers or arrays of length d (scalars
    broadcast to ``d``, default 1); the variances are positive.
    """

    var_c: float | np.ndarray
    var_u: float | np.ndarray
    mean_c: float | np.ndarray = 1.0
    mean_u: float | np.ndarray = 0.0
    d: int | None = None
    process: Process | str = "ou"

    def __post_init__(self):
        object.__setattr__(self, "process", get_process(self.process))
        d = None if self.d is None else _integer(self.d, "d", 1)
        pair = GaussianPair(self.mean_c, self.var_c, self.mean_u, self.var_u, d=d)
        object.__setattr__(self, "pair", pair)
        object.__setattr__(self, "d", pair.d)

    def record(self):
        p = self.pair
        scalar = p.d == 1 or all(np.all(v == v[0]) for v in (p.mean_c, p.var_c, p.mean_u, p.var_u))
        values = {k: (float(v[0]) if scalar else v.tolist()) for k, v in
                  (("mean_c", p.mean_c), ("var_c", p.var_c), ("mean_u", p.mean_u), ("var_u", p.var_u))}
        return dict(d=p.d, K=None, alpha=None, mean_var=None, class_var=values["var_c"],
                    process=self.process.name, **values)
