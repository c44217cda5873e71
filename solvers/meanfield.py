r"""Leading-order mean-field theory of guided sampling with K = e^{alpha d} classes (eqs. 23-25).

Before condensation the class posterior of a typical particle is spread over exponentially many
classes in the annealed phase (solvers.condensation), whose average mean is the tilted mean
:math:`a_t\sigma_\mu^2 x/Q_t`; the unconditional score is then that of
:math:`\mathcal N(0, Q_t I)`, :math:`Q_t = \Gamma_t + a_t^2\sigma_\mu^2` (eq. 23). Guided sampling
is the jointly Gaussian problem of solvers.gaussian_theory with :math:`\lambda_c = s^2`,
:math:`\lambda_u = \sigma_\mu^2 + s^2`, per eigendirection: the direction of :math:`\mu_c` (mean
gap :math:`|\mu_c|`) and the orthogonal ones (no gap). The order parameters are the overlap
ratio :math:`r = x\cdot\mu_c/|\mu_c|^2` and the orthogonal variance :math:`v_\perp`.

The particles condense on the target at :math:`t^*`, where the target's log-weight per
dimension :math:`-(\rho(r-a_t)^2 + v_\perp)/(2\Gamma_t)` (:math:`\rho = |\mu_c|^2/d`) reaches the
free entropy of the other classes :math:`\phi(\alpha, q = \rho r^2 + v_\perp, t)` (eq. 24; annealed
or frozen). After :math:`t^*` the unconditional score equals the conditional one and guidance
vanishes: the remaining dynamics is conditional sampling (eq. 25).

The O(1) variance along :math:`\mu_c` (var_par) needs one more ingredient (eq. 27): particles
condense at times spread by O(1/sqrt d) around :math:`t^*`, because their log-odds
:math:`d\,\Delta` fluctuate by O(sqrt d) through their own coordinate along :math:`\mu_c` and
their own :math:`|x_\perp|^2`; over that spread the guidance velocity along :math:`\mu_c`, O(sqrt d),
is on for some particles and off for others, which changes their coordinate by O(1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from physics.gaussian import GaussianPair
from physics.guidance import excess_weight
from physics.processes import get_process
from solvers.condensation import others_free_entropy
from solvers.gaussian_theory import integrate_moments, moment_rhs


@dataclass
class MeanFieldPrediction:
    """Predicted final statistics (d -> infinity), the condensation time and the inputs."""

    inputs: dict
    t_condensation: float | None
    r_condensation: float | None  #: bulk overlap ratio at t*
    v_perp_condensation: float | None  #: bulk orthogonal variance at t*
    mean_ratio: float
    var_par: float
    var_perp: float
    distortion: float
    accuracy: float | None
    phase_at_condensation: str | None
    nfev: int
    success: bool
    message: str

    def summary(self):
        out = dict(self.inputs)
        out.update(mean_ratio=self.mean_ratio, var_par=self.var_par, var_perp=self.var_perp, distortion=self.distortion,
                   accuracy=self.accuracy, inv_prob=None, t_condensation=self.t_condensation,
                   phase_at_condensation=self.phase_at_condensation, nfev=self.nfev, success=self.success,
                   message=self.message)
        return out


def target_log_weight(r, v_perp, t, process, mean_var, class_var):
    r"""Log-weight per dimension of the target class, :math:`-(\rho(r - a_t)^2 + v_\perp)/(2\Gamma_t)` (eq. 24)."""
    a = float(process.a(t))
    return -(mean_var * (r - a) ** 2 + v_perp) / (2.0 * float(process.class_var(t, class_var)))


def condensation_gap(t, r, v_perp, alpha, process, mean_var, class_var):
    """Target log-weight minus the other classes' free entropy per dimension (eq. 24); zero at t*."""
    return target_log_weight(r, v_perp, t, process, mean_var, class_var) - others_free_entropy(
        alpha, mean_var * r**2 + v_perp, t, process, mean_var, class_var).phi


def guided_prediction(alpha, omega=None, guidance_scale=None, process="ou", sampler="ode", mean_var=1.0,
                      class_var=0.25, t_max=None):
    r"""Mean-field prediction for guided sampling of K = e^{alpha d} classes (eqs. 23-25).

    ``omega`` is a number or a schedule of forward time (excess convention). ``t_max`` defaults
    to where one direction's signal-to-noise ratio is 1e-10, so that starting there is negligible.
    Returns a :class:`MeanFieldPrediction`; ``t_condensation`` is None when the particles never
    condense (dense classes), and then the final law is the guided bulk's.
    """
    process = get_process(process)
    omega = excess_weight(omega, guidance_scale)
    if sampler not in ("ode", "sde"):
        raise ValueError(f"sampler must be 'ode' or 'sde', got {sampler!r}")
    for name, value in (("alpha", alpha), ("mean_var", mean_var), ("class_var", class_var)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if class_var <= 0 or mean_var <= 0:
        raise ValueError("mean_var and class_var must be > 0 for the mean-field theory")
    # direction 0: along mu_c with unit mean gap (r is the mean); direction 1: orthogonal
    pair = GaussianPair(mean_c=[1.0, 0.0], var_c=class_var, mean_u=0.0, var_u=mean_var + class_var)
    t_max = float(process.time_at_snr(1e-10 / pair.signal_var)) if t_max is None else float(t_max)
    t_max = min(t_max, process.t_upper if sampler == "ode" else np.nextafter(process.t_upper, 0))
    process.check_times(t_max, "t_max")
    mean, var = pair.noised_moments(t_max, process, conditional=False)

    def gap(t, m, v):
        return condensation_gap(t, m[0], v[1], alpha, process, mean_var, class_var)

    mean, var, t_star, nfev, ok, message = integrate_moments(pair, process, omega, sampler, t_max, 0.0, mean, var,
                                                             event=gap)
    phase, at_star = None, (None, None)
    if ok and t_star is not None:
        at_star = (float(mean[0]), float(var[1]))
        phase = others_free_entropy(alpha, mean_var * mean[0] ** 2 + var[1], t_star, process, mean_var,
                                    class_var).phase
        var = var.copy()
        var[0] = _variance_after_spread_condensation(pair, process, omega, sampler, alpha, mean_var, class_var,
                                                     t_star, *at_star)
        # condensed: guidance vanishes, conditional sampling to t = 0
        mean, var, _, more, ok, message = integrate_moments(pair, process, 0.0, sampler, t_star, 0.0, mean, var)
        nfev += more
    r, v_perp = float(mean[0]), float(var[1])
    distortion = 0.5 * (v_perp / class_var - 1 - np.log(v_perp / class_var)) + mean_var * (r - 1) ** 2 / (2 * class_var)
    inputs = dict(d=None, K=None, alpha=float(alpha), omega=None if callable(omega) else omega,
                  guidance_scale=None if callable(omega) else 1.0 + omega, mean_var=mean_var, class_var=class_var,
                  process=process.name, sampler=sampler,
                  schedule=repr(omega) if callable(omega) else "constant", t_max=t_max)
    return MeanFieldPrediction(inputs, t_star, *at_star, r, float(var[0]), v_perp, float(distortion),
                               1.0 if t_star is not None else None, phase, nfev, ok, message)


def _variance_after_spread_condensation(pair, process, omega, sampler, alpha, mean_var, class_var, t_star, r, v):
    r"""Variance along :math:`\mu_c` just after :math:`t^*`, from the spread of condensation times (eq. 27).

    With :math:`\Delta(t; r, v)` the target log-weight minus the bulk free entropy, a particle at
    :math:`r + \delta y/|\mu_c|` with :math:`|x_\perp|^2/d = v + \xi/\sqrt d` condenses at
    :math:`t^* + \delta t`, :math:`\delta t = -(\partial_r\Delta\,\delta y/\sqrt\rho + \partial_v\Delta\,\xi)/(\sqrt d\,\dot{\bar\Delta})`,
    and moves by :math:`\sqrt{\rho d}\,\Delta v_r\,\delta t` relative to the bulk, where
    :math:`\Delta v_r` is the guided minus conditional velocity of r. With
    :math:`\delta y \sim \mathcal N(0, v)` and :math:`\xi \sim \mathcal N(0, 2v^2)` independent:
    :math:`v(1 - \Delta v_r\partial_r\Delta/\dot{\bar\Delta})^2 + 2 v^2\rho(\Delta v_r\partial_v\Delta/\dot{\bar\Delta})^2`.
    Partial derivatives by central differences (h = 1e-6; the functions are smooth in the
    annealed phase, where guided condensation happens).
    """
    def gap(t, r_, v_):
        return condensation_gap(t, r_, v_, alpha, process, mean_var, class_var)

    h = 1e-6
    d_r = (gap(t_star, r + h, v) - gap(t_star, r - h, v)) / (2 * h)
    d_v = (gap(t_star, r, v + h) - gap(t_star, r, v - h)) / (2 * h)
    d_t = (gap(t_star + h, r, v) - gap(t_star - h, r, v)) / (2 * h)
    y = np.array([r, 0.0, np.log(v), np.log(v)])
    segment = (t_star, t_star + 1e-6)  # guidance as it is just before condensation (t > t*)
    guided = moment_rhs(pair, process, omega, sampler, segment)(t_star, y)
    conditional = moment_rhs(pair, process, 0.0, sampler, segment)(t_star, y)
    gap_rate = d_t + d_r * guided[0] + d_v * guided[3] * v  # along the bulk: r' and v' = v (log v)'
    dv_r = guided[0] - conditional[0]
    return v * (1 - dv_r * d_r / gap_rate) ** 2 + 2 * v * v * mean_var * (dv_r * d_v / gap_rate) ** 2


@dataclass
class EffectivePotential:
    """The two branches of the per-dimension log-weight as functions of the overlap ratio r (eq. 26)."""

    r: np.ndarray  #: overlap ratios x.mu_c / |mu_c|^2
    target: np.ndarray  #: target branch -(rho (r - a_t)^2 + v_perp) / (2 Gamma_t)
    others: np.ndarray  #: free entropy of the other classes at q = rho r^2 + v_perp
    potential: np.ndarray  #: -max(target, others): the d -> infinity effective potential
    crossings: np.ndarray  #: overlaps where the branches cross (linear interpolation)
    phases: list  #: 'annealed' / 'frozen' of the other classes at each r


def effective_potential(r, t, alpha, v_perp, process="ou", mean_var=1.0, class_var=0.25):
    r"""Effective potential of the overlap at time t, with its target and bulk branches (eq. 26).

    A particle with overlap ratio r and orthogonal variance ``v_perp`` has posterior condensed on
    the target where the target branch is above the other classes' free entropy. ``r`` is an
    array; the result's ``crossings`` are the overlaps where the branches exchange.
    """
    process = get_process(process)
    r = np.asarray(r, dtype=float)
    target = target_log_weight(r, v_perp, t, process, mean_var, class_var)
    frees = [others_free_entropy(alpha, mean_var * ri**2 + v_perp, t, process, mean_var, class_var) for ri in r]
    others = np.array([f.phi for f in frees])
    diff = target - others
    idx = np.nonzero(np.diff(np.sign(diff)))[0]
    crossings = r[idx] - diff[idx] * (r[idx + 1] - r[idx]) / (diff[idx + 1] - diff[idx])
    return EffectivePotential(r, target, others, -np.maximum(target, others), crossings, [f.phase for f in frees])


def distortion_boundary(alphas, threshold, sampler="ode", process="ou", mean_var=1.0, class_var=0.25,
                        omega_max=20.0, t_max=None):
    r"""For each alpha, the guidance weight omega_c >= 0 at which the predicted distortion per
    dimension reaches ``threshold`` (brentq; NaN where omega_max does not reach it). Above the
    curve in the (alpha, omega) plane the distortion is macroscopic.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")

    def excess(omega, alpha):
        return guided_prediction(alpha, omega, process=process, sampler=sampler, mean_var=mean_var,
                                 class_var=class_var, t_max=t_max).distortion - threshold

    out = []
    for alpha in np.atleast_1d(alphas):
        if excess(omega_max, alpha) < 0:
            out.append(np.nan)
        elif excess(0.0, alpha) >= 0:
            out.append(0.0)
        else:
            out.append(brentq(excess, 0.0, omega_max, args=(alpha,), xtol=1e-8))
    return np.array(out)


def finite_d_distortion(prediction, d):
    r"""Distortion per dimension at dimension d: the d -> infinity value plus the direction of
    :math:`\mu_c`, :math:`\tfrac{1}{2d}(v_\parallel/s^2 - 1 - \log(v_\parallel/s^2))` (eq. 13 at finite d, eq. 28)."""
    ratio = prediction.var_par / prediction.inputs["class_var"]
    return prediction.distortion + 0.5 * (ratio - 1 - np.log(ratio)) / d


def subexponential_distortion(classes, dims, omega=None, guidance_scale=None, sampler="ode", process="ou",
                              mean_var=1.0, class_var=0.25, t_max=None):
    r"""Predicted distortion per dimension at each d when K grows slower than e^{alpha d} (eq. 28).

    ``classes`` is a fixed K or a callable ``K(d)`` (e.g. ``lambda d: d**2``); each d uses the
    mean-field theory at :math:`\alpha_{eff} = \log K(d)/d` and :func:`finite_d_distortion`.
    As d grows, t* ~ (1/2) log d and the distortion vanishes. Returns (dims, distortions).
    """
    dims = np.atleast_1d(np.asarray(dims, dtype=int))
    out = []
    for d in dims:
        K = classes(d) if callable(classes) else classes
        if K < 1 or d < 1:
            raise ValueError(f"classes and dims must be >= 1, got K={K}, d={d}")
        pred = guided_prediction(np.log(K) / d, omega, guidance_scale, process, sampler, mean_var, class_var, t_max)
        out.append(finite_d_distortion(pred, d))
    return dims, np.array(out)
