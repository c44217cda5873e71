r"""Learned guidance weights (Learn to Guide, Galashov et al. 2025) on an exact-score model.

The weight of one sampler step from t to s < t is a small model, in the excess convention,

.. math:: \omega_\phi(c, s, t) = \mathrm{ReLU}\big(b_c + \textstyle\sum_j \theta_{c,j} h_j(t) + \gamma_c (t - s)\big),

with hat functions :math:`h_j` on knots in t (docs/theory.md eq. 46). It is trained so that one
guided DDIM step from the forward-noised data of class c at t matches the forward-noised data at
s: the loss is the energy distance with exponent :math:`\beta` (1.75 in the source) between the two
samples, summed over random pairs (t, s) with :math:`t - s \ge` ``min_step`` (log-uniform steps, so
that small steps like a sampler's are represented), or the plain L2
variant :math:`E|\mathrm{step}(a_t x_0 + \sigma_t\epsilon) - (a_s x_0 + \sigma_s\epsilon)|^2` (same
:math:`x_0` and :math:`\epsilon`). The guided DDIM step is affine in the weight,
:math:`x_s = b + \omega\,u` (eq. 46), so each pair's field evaluation is done once and the loss
of any parameters costs O(samples^2 d) per pair. The parameters are fitted with L-BFGS-B from
common random numbers (the loss is deterministic). With exact scores the best weight is 0; it
becomes positive when the conditional model is degraded (cfgphase.solvers.score.fields.DegradedField).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from cfgphase.physics.mixture import denoiser_from_mean
from cfgphase.physics.schedules import StepwiseSchedule
from cfgphase.solvers.sampling.observables import energy_statistic
from cfgphase.solvers.sampling.timegrid import default_t_max

LOSSES = ("energy", "l2")


@dataclass
class GuidanceModel:
    """:math:`\\omega_\\phi(c, s, t)` (eq. 46): per class a bias, hat-function coefficients on ``knots``
    (forward times) and a step-size coefficient; ReLU output (never negative, as in the source)."""

    knots: np.ndarray  #: (n,) increasing forward times of the hat functions
    coef: dict  #: class -> (n + 2,) [bias, theta_1..theta_n, gamma]
    step_range: tuple = (0.0, np.inf)  #: the step sizes t - s seen in training; others are clipped to it

    def features(self, s, t):
        """[1, h_1(t), ..., h_n(t), t - s], the step clipped to the training range: the model is never
        extrapolated in the step size (a sampler's steps are usually smaller than the training pairs')."""
        return np.concatenate([[1.0], _hats(self.knots, t), [np.clip(t - s, *self.step_range)]])

    def __call__(self, c, s, t):
        return max(0.0, float(self.coef[c] @ self.features(s, t)))

    def schedule(self, c):
        """The weights of class c on a sampler's steps (bind it to the grid, or pass it to ``run``)."""
        return StepwiseSchedule(lambda s, t: self(c, s, t))


def _hats(knots, t):
    """Values of the piecewise-linear hat functions on ``knots`` at t (a partition of unity)."""
    eye = np.eye(knots.size)
    return np.array([np.interp(t, knots, eye[j]) for j in range(knots.size)])


@dataclass
class LearnedGuidance:
    """A trained :class:`GuidanceModel`, the pairs it was trained on, and the optimiser's report."""

    model: GuidanceModel
    target: int
    loss: str
    pairs: np.ndarray  #: (P, 2) the (t, s) pairs
    pair_optimum: np.ndarray  #: (P,) best weight of each pair alone (>= 0)
    initial_loss: float
    final_loss: float
    inputs: dict = field(default_factory=dict)
    nfev: int = 0
    success: bool = True
    message: str = ""

    def weights(self):
        """The learned weight on each training pair."""
        return np.array([self.model(self.target, s, t) for t, s in self.pairs])


def ddim_affine(field, x, t, s):
    """A guided DDIM step from t to s as b + omega u: returns (b, u), each like x (eqs. 40, 46)."""
    process = field.process
    ev = field.evaluate(x, t)
    m_c = np.broadcast_to(ev.cond, x.shape)
    sig_t, sig_s = math.sqrt(float(process.var(t))), math.sqrt(float(process.var(s)))
    a_t, a_s = float(process.a(t)), float(process.a(s))
    scale = a_s - sig_s * a_t / sig_t
    base = (sig_s / sig_t) * x + scale * denoiser_from_mean(x, m_c, t, process, field.reference_var)
    slope = scale * float(process.var(t)) / process.class_var(t, field.reference_var) * (m_c - ev.uncond)
    return base, slope


def learn_guidance(field, loss="energy", pairs=24, samples=256, min_step=0.1, beta=1.75, knots=5, t_max=None,
                   seed=0, maxiter=200):
    """Fit :math:`\\omega_\\phi(c, s, t)` for the field's target class c (eq. 46).

    Parameters
    ----------
    field : MixtureField or DegradedField
        The conditional and unconditional models the sampler will use; data of class c are drawn
        exactly from the field's true model.
    loss : {'energy', 'l2'}
    pairs, samples : int
        Number of (t, s) pairs and of data samples per pair (common random numbers, ``seed``).
    min_step : float
        Smallest t - s, in forward time.
    beta : float
        Exponent of the energy distance, in (0, 2).
    knots : int
        Hat functions in t, evenly spaced on [0, t_max].
    t_max : float, optional
        Largest t of the pairs (default: where the data's signal-to-noise ratio is 1e-4, at most
        just below the process's end).

    Returns
    -------
    LearnedGuidance
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if not 0 < beta < 2:
        raise ValueError(f"beta must lie in (0, 2), got {beta!r}")
    for name, value in (("pairs", pairs), ("samples", samples), ("knots", knots)):
        if int(value) != value or value < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
    process = field.process
    if t_max is None:
        t_max = min(default_t_max(process, field.signal_var), process.t_upper - 1e-3)
    if not min_step > 0 or not t_max > min_step:
        raise ValueError(f"min_step must lie in (0, t_max = {t_max:.4g}), got {min_step!r}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    t = rng.uniform(min_step, t_max, pairs)
    s = t - np.exp(rng.uniform(np.log(min_step), np.log(t)))  # steps log-uniform in [min_step, t]
    target = field.target
    affine, goals = [], []
    for t_k, s_k in zip(t, s):
        x0 = field.sample_initial(0.0, samples, rng, "conditional")
        eps = rng.standard_normal(x0.shape)
        x_t = float(process.a(t_k)) * x0 + math.sqrt(float(process.var(t_k))) * eps
        if loss == "l2":
            goal = float(process.a(s_k)) * x0 + math.sqrt(float(process.var(s_k))) * eps
        else:
            goal = field.sample_initial(s_k, samples, rng, "conditional")
        affine.append(ddim_affine(field, x_t, float(t_k), float(s_k)))
        goals.append(goal)

    def pair_loss(k, omega):
        base, slope = affine[k]
        out = base + omega * slope
        if loss == "l2":
            return float(np.mean(np.sum((out - goals[k]) ** 2, axis=1)))
        return energy_statistic(out, goals[k], beta)

    grid_knots = np.linspace(0.0, t_max, int(knots))
    shell = GuidanceModel(grid_knots, {}, (float(np.min(t - s)), float(np.max(t - s))))
    features = np.array([shell.features(s_k, t_k) for t_k, s_k in zip(t, s)])

    def total(theta):
        omegas = np.maximum(features @ theta, 0.0)
        return float(np.mean([pair_loss(k, w) for k, w in enumerate(omegas)]))

    start = np.zeros(features.shape[1])
    start[0] = 0.5  # inside the ReLU's active region, so that the gradient can pull it either way
    result = minimize(total, start, method="L-BFGS-B", options=dict(maxiter=maxiter))
    # each pair alone, on a fine grid of non-negative weights: what the model tries to fit
    candidates = np.linspace(0.0, 8.0, 161)
    pair_optimum = np.array([candidates[np.argmin([pair_loss(k, w) for w in candidates])] for k in range(pairs)])
    model = GuidanceModel(grid_knots, {target: result.x}, shell.step_range)
    inputs = dict(loss=loss, pairs=pairs, samples=samples, min_step=min_step, beta=beta, knots=knots, t_max=t_max,
                  seed=seed, process=process.name)
    return LearnedGuidance(model, target, loss, np.column_stack([t, s]), pair_optimum, total(start), float(result.fun),
                           inputs, int(result.nfev), bool(result.success), str(result.message))
