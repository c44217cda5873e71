r"""Guidance rules: how a conditional and an unconditional prediction are combined.

Samplers carry every score as a class-mean estimate :math:`\hat m` (docs/theory.md eq. 6), so a
rule maps the conditional and unconditional estimates :math:`\hat m_c, \hat m_u` to a guided
:math:`\hat m_\omega`. Each rule is applied in the space its source uses: any prediction at
fixed (x, t) is affine in :math:`\hat m`, :math:`y = P_t x + Q_t\hat m` (eq. 34), for

=========  ==========================================  ==========================================
space      prediction                                  :math:`(P_t, Q_t)`
=========  ==========================================  ==========================================
``x0``     denoiser :math:`D = E[x_0|x_t]`             :math:`(a\nu/\Gamma,\ \sigma^2/\Gamma)`
``eps``    noise :math:`\epsilon = (x - aD)/\sigma`    :math:`(\sigma/\Gamma,\ -a\sigma/\Gamma)`
``v``      :math:`v = a\epsilon - \sigma D`            :math:`(a\sigma(1-\nu)/\Gamma,\ -\sigma(a^2+\sigma^2)/\Gamma)`
``score``  :math:`\nabla\log p_t`                      :math:`(-1/\Gamma,\ a/\Gamma)`
=========  ==========================================  ==========================================

with :math:`\Gamma = a_t^2\nu + \sigma_t^2` and :math:`\nu` the field's reference variance. A rule
computes its correction :math:`c = y_\omega - y_c` from :math:`y_c` and the exact difference
:math:`\Delta y = y_c - y_u = Q\,(\hat m_c - \hat m_u)` (never by subtracting two predictions), and
the guided estimate is :math:`\hat m_\omega = \hat m_c + c/Q` (eq. 34): exact, with no cancellation
as the noise vanishes. Linear CFG is the same in every space; the others are not.

Weights: every rule reads the excess weight :math:`\omega(t)` of the schedule
(cfgphase.physics.schedules; ``w = 1 + omega`` in the Ho convention the sources use), except CFG++,
whose strength is its own :math:`\lambda`.

=============  =====  =====================================================  ===============================
name           space  rule                                                   source
=============  =====  =====================================================  ===============================
``cfg``        any    :math:`D_c + \omega\Delta`                             Ho & Salimans 2022
``adg``        x0     rotate :math:`D_c` away from :math:`D_u` by            Jin, Xiao, Liu & Gu 2025
                      :math:`\min(w'\gamma, a_{max})`, norm at most
                      :math:`\sqrt2|D_c|`
``apg``        x0     momentum, norm cap, orthogonal part only               Sadat, Hilliges & Weber 2025
``cfgpp``      x0     DDIM step re-noised with :math:`\epsilon_u`            Chung et al. 2025
``rescaled``   v      CFG rescaled to the std of the conditional             Lin et al. 2024
``powerlaw``   score  :math:`D_c + \omega|s_c - s_u|^{p}\,\Delta`             Lehman Pavasovic et al. 2025
=============  =====  =====================================================  ===============================
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from cfgphase.physics.weights import guided_mean

SPACES = ("x0", "eps", "v", "score")


def prediction_coefficients(space, t, process, nu):
    r""":math:`(P_t, Q_t)` with prediction :math:`y = P_t x + Q_t\hat m` in ``space`` (eq. 34).

    ``nu`` is the reference variance (float or (d,)); the coefficients have its shape.
    """
    a, var = float(process.a(t)), float(process.var(t))
    sigma = math.sqrt(var)
    gamma = a * a * nu + var
    if space == "x0":
        return a * nu / gamma, var / gamma
    if space == "eps":
        return sigma / gamma + 0.0 * nu, -a * sigma / gamma
    if space == "v":
        return a * sigma * (1.0 - nu) / gamma, -sigma * (a * a + var) / gamma
    if space == "score":
        return -1.0 / gamma, a / gamma
    raise ValueError(f"space must be one of {SPACES}, got {space!r}")


class GuidanceContext(NamedTuple):
    """What a rule sees at one evaluation: the particles, the time, the weight and the estimates."""

    x: np.ndarray  #: (B, d) particles
    t: float  #: forward time of the evaluation
    t_next: float  #: the end of the current step (CFG++)
    omega: float  #: excess weight of the schedule at this evaluation
    m_cond: np.ndarray  #: (d,) or (B, d) conditional class-mean estimate
    m_uncond: np.ndarray  #: (B, d) unconditional class-mean estimate
    process: object
    nu: float | np.ndarray  #: reference variance of Gamma_t


def _rowdot(u, v):
    return np.einsum("bd,bd->b", u, v)[:, None]


def _norm(u):
    return np.sqrt(_rowdot(u, u))


class Rule:
    """Base class. Subclasses set ``name``, ``source``, ``summary``, ``space`` and ``PARAMETERS``
    (name -> (default, description)) and implement :meth:`correction` (or :meth:`guided_mean`)."""

    name = ""
    source = ""
    summary = ""
    space = "x0"
    PARAMETERS: dict = {}
    #: whether the rule reads the schedule's weight (False: its strength is a parameter of its own)
    uses_weight = True
    #: the sampler method the rule is defined for (None: any)
    method = None

    @property
    def regular_at_zero_noise(self):
        """Whether the rule can be evaluated where the noise vanishes. In x0, eps and v space
        :math:`Q_t = 0` there (eq. 34): Heun's last step into t = 0 is then an Euler step."""
        return self.space in ("any", "score")

    def start(self, shape):
        """Fresh per-run state for particles of ``shape`` (None for stateless rules)."""
        return None

    def correction(self, y_cond, dy, omega, ctx, state):
        """:math:`c = y_\\omega - y_c` from the conditional prediction and :math:`\\Delta y` (each (B, d))."""
        raise NotImplementedError

    def guided_mean(self, ctx, state=None):
        r"""Guided class-mean estimate :math:`\hat m_\omega` (B, d) (eq. 34)."""
        x = ctx.x
        m_c = np.broadcast_to(ctx.m_cond, x.shape)
        delta = m_c - ctx.m_uncond
        P, Q = prediction_coefficients(self.space, ctx.t, ctx.process, ctx.nu)
        if np.any(np.asarray(Q) == 0):
            raise ValueError(f"t: the {self.name} rule works in {self.space} space, which carries no guidance at "
                             f"t = {ctx.t:.6g} (Q_t = 0); start or stop sampling away from it")
        y_c = P * x + Q * m_c
        return m_c + self.correction(y_c, Q * delta, ctx.omega, ctx, state) / Q

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.PARAMETERS)
        return f"{type(self).__name__}({args})"


class CFG(Rule):
    r"""Classifier-free guidance, :math:`D_c + \omega(D_c - D_u)`: linear, the same in every space (eq. 10)."""

    name = "cfg"
    source = "Ho & Salimans 2022"
    summary = "D_c + omega (D_c - D_u); linear, the same in every space"
    space = "any"

    def guided_mean(self, ctx, state=None):
        return guided_mean(ctx.m_cond, ctx.m_uncond, ctx.omega)


class ADG(Rule):
    r"""Angle-domain guidance (Jin, Xiao, Liu & Gu 2025), in x0 space, per sample (eq. 35).

    With :math:`F = D_c`, :math:`B = D_u`, :math:`w' = \max(w - 1, 0) + \epsilon`,
    :math:`\gamma = \angle(F, B)`, :math:`a = \mathrm{clip}(w'\gamma, \pm a_{max})` and
    :math:`e = F - \mathrm{proj}_B F`, the output is :math:`\cos a\,F + (\sin a/\sin\gamma)\,e`
    (:math:`\cos a\,F + w'e` when :math:`\sin\gamma \le 10^{-3}`). Then
    :math:`|out|^2/|F|^2 = 1 + \sin 2a\,\sin\gamma \le 2`. With the source's
    :math:`\epsilon = 10^{-3}` (``offset``) the rule rotates F by :math:`10^{-3}\gamma` even at
    w = 1; ``offset = 0`` makes it exactly conditional there.
    """

    name = "adg"
    source = "Jin, Xiao, Liu & Gu 2025"
    summary = "rotate D_c away from D_u by min(w' angle, a_max); |out| <= sqrt(2) |D_c|"
    space = "x0"
    PARAMETERS = {"a_max": (math.pi / 3, "largest rotation angle (radians)"),
                  "offset": (1e-3, "epsilon added to max(w - 1, 0)")}

    def __init__(self, a_max=math.pi / 3, offset=1e-3):
        self.a_max, self.offset = float(a_max), float(offset)
        if not 0 < self.a_max <= math.pi / 2:
            raise ValueError(f"a_max must lie in (0, pi/2], got {a_max!r}")
        if not (math.isfinite(self.offset) and self.offset >= 0):
            raise ValueError(f"offset must be a finite number >= 0, got {offset!r}")

    def correction(self, F, dy, omega, ctx, state):
        w_prime = max(omega, 0.0) + self.offset  # max(w - 1, 0) + epsilon with w = 1 + omega
        B = F - dy
        b_norm = _norm(B)
        b_hat = np.divide(B, b_norm, out=np.zeros_like(B), where=b_norm > 0)
        e = dy - _rowdot(dy, b_hat) * b_hat  # F - proj_B F, from the exact difference
        e_norm = _norm(e)
        gamma = np.arctan2(e_norm, b_norm + _rowdot(dy, b_hat))
        angle = np.clip(w_prime * gamma, -self.a_max, self.a_max)
        sin_gamma = np.sin(gamma)
        small = sin_gamma <= 1e-3
        coef = np.where(small, w_prime, np.sin(angle) / np.where(small, 1.0, sin_gamma))
        return -2.0 * np.sin(0.5 * angle) ** 2 * F + coef * e  # (cos a - 1) F + coef e


class APG(Rule):
    r"""Adaptive projected guidance (Sadat, Hilliges & Weber 2025), in x0 space (eq. 36).

    Momentum :math:`m_k = \Delta_k + \beta m_{k-1}` over the evaluations of a run, capped at norm
    ``norm_cap`` r (per sample; 0: no cap), split into parts parallel and orthogonal to :math:`D_c`
    (float64), output :math:`D_c + (w-1)(m_\perp + \eta\,m_\parallel)`. The momentum advances at every
    evaluation of the guided denoiser (twice per Heun step), as in the reference implementation.
    It carries x0-space corrections into steps where :math:`\Delta` has vanished, so it cannot be
    evaluated at zero noise: Heun's last step into t = 0 is then an Euler step.
    """

    name = "apg"
    source = "Sadat, Hilliges & Weber 2025"
    summary = "momentum of D_c - D_u, norm cap r, keep the part orthogonal to D_c (plus eta times the parallel part)"
    space = "x0"
    PARAMETERS = {"beta": (-0.75, "momentum (negative in the source)"),
                  "norm_cap": (2.5, "norm cap r of the update in data units (0: none)"),
                  "eta": (0.0, "weight of the part parallel to D_c")}

    def __init__(self, beta=-0.75, norm_cap=2.5, eta=0.0):
        self.beta, self.norm_cap, self.eta = float(beta), float(norm_cap), float(eta)
        for name in ("beta", "norm_cap", "eta"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        if self.norm_cap < 0:
            raise ValueError(f"norm_cap must be >= 0, got {norm_cap!r}")

    def start(self, shape):
        return {"momentum": np.zeros(shape)}

    def correction(self, F, dy, omega, ctx, state):
        if state is None:
            raise ValueError("state: APG needs the per-run state from start()")
        m = dy + self.beta * state["momentum"]
        state["momentum"] = m
        if self.norm_cap > 0:
            norm = _norm(m)
            m = m * np.minimum(1.0, np.divide(self.norm_cap, norm, out=np.ones_like(norm), where=norm > 0))
        f_norm2 = _rowdot(F, F)
        par = np.divide(_rowdot(m, F), f_norm2, out=np.zeros_like(f_norm2), where=f_norm2 > 0) * F
        return omega * ((m - par) + self.eta * par)


class CFGPlusPlus(Rule):
    r"""CFG++ (Chung et al. 2025): a DDIM step re-noised with the unconditional noise,
    :math:`x_s = a_s(D_u + \lambda\Delta) + \sigma_s\epsilon_u`, :math:`\lambda\in[0,1]` (eq. 37).

    It equals a DDIM step with CFG at the step-dependent Ho weight
    :math:`w' = \lambda/(1 - \rho_s/\rho_t)`, :math:`\rho = \sigma/a` the noise level: with many
    small steps the equivalent weight grows without bound. No :math:`\lambda` gives conditional
    sampling. Defined for the ``ddim`` method only.
    """

    name = "cfgpp"
    source = "Chung et al. 2025"
    summary = "DDIM step a_s (D_u + lam Delta) + sigma_s eps_u; = CFG at w' = lam / (1 - rho_s/rho_t)"
    space = "x0"
    uses_weight = False
    method = "ddim"
    PARAMETERS = {"lam": (0.6, "lambda in [0, 1]: 0 unconditional, guidance strength")}

    def __init__(self, lam=0.6):
        self.lam = float(lam)
        if not 0 <= self.lam <= 1:
            raise ValueError(f"lam must lie in [0, 1], got {lam!r}")

    def equivalent_weight(self, t, t_next, process):
        """Excess CFG weight w' - 1 of the DDIM step from t to t_next (eq. 37)."""
        a_t, a_s = float(process.a(t)), float(process.a(t_next))
        s_t, s_s = math.sqrt(float(process.var(t))), math.sqrt(float(process.var(t_next)))
        return self.lam / (1.0 - (s_s * a_t) / (a_s * s_t)) - 1.0

    def guided_mean(self, ctx, state=None):
        omega = self.equivalent_weight(ctx.t, ctx.t_next, ctx.process)
        return ctx.m_cond + omega * (ctx.m_cond - ctx.m_uncond)


class RescaledCFG(Rule):
    r"""Rescaled CFG (Lin et al. 2024), per sample over all elements, in v space by default (eq. 38).

    :math:`y_{cfg} = y_u + w(y_c - y_u)`, :math:`y_{resc} = y_{cfg}\,\mathrm{std}(y_c)/\mathrm{std}(y_{cfg})`,
    output :math:`\phi\,y_{resc} + (1-\phi)\,y_{cfg}`. The source rescales the model output of a
    v-prediction model (``space='v'``; ``'eps'`` is what eps-prediction pipelines do). The std ratio
    is computed from the exact moments of :math:`y_c` and :math:`\Delta y`; with d = 1 the std of a
    single element is 0 and no rescaling happens.
    """

    name = "rescaled"
    source = "Lin et al. 2024"
    summary = "CFG output rescaled to the std of the conditional prediction, blended with phi"
    space = "v"
    PARAMETERS = {"phi": (0.7, "blend: 1 = fully rescaled, 0 = CFG"),
                  "space": ("v", "prediction space: v, eps or x0")}

    def __init__(self, phi=0.7, space="v"):
        self.phi = float(phi)
        if not 0 <= self.phi <= 1:
            raise ValueError(f"phi must lie in [0, 1], got {phi!r}")
        if space not in ("v", "eps", "x0"):
            raise ValueError(f"space must be 'v', 'eps' or 'x0', got {space!r}")
        self.space = space

    def correction(self, y_c, dy, omega, ctx, state):
        cfg = y_c + omega * dy
        yc0, dy0 = y_c - y_c.mean(1, keepdims=True), dy - dy.mean(1, keepdims=True)
        var_c = np.mean(yc0 * yc0, axis=1, keepdims=True)
        var_cfg = np.mean((yc0 + omega * dy0) ** 2, axis=1, keepdims=True)
        # var_c - var_cfg expanded: no cancellation when omega dy is small
        diff = -2.0 * omega * np.mean(yc0 * dy0, axis=1, keepdims=True) - omega**2 * np.mean(dy0 * dy0, axis=1,
                                                                                            keepdims=True)
        std_c, std_cfg = np.sqrt(var_c), np.sqrt(var_cfg)
        denom = std_cfg * (std_c + std_cfg)
        ratio_minus_one = np.divide(diff, denom, out=np.zeros_like(diff), where=denom > 0)
        return self.phi * ratio_minus_one * cfg + omega * dy


class PowerLawCFG(Rule):
    r"""Power-law CFG (Lehman Pavasovic, Verbeek, Biroli & Mezard 2025) (eq. 39).

    :math:`D_c + \varphi_t\Delta`, :math:`\varphi_t = \omega\,|s_c - s_u|^{p}` with the per-sample
    norm of the score difference :math:`|s_c - s_u| = a_t|\hat m_c - \hat m_u|/\Gamma_t` (score
    units, so :math:`\varphi` grows like :math:`d^{p/2}` for O(1) coordinates). Guidance is strong
    where the scores disagree and vanishes where they agree.
    """

    name = "powerlaw"
    source = "Lehman Pavasovic, Verbeek, Biroli & Mezard 2025"
    summary = "D_c + omega |s_c - s_u|^power (D_c - D_u)"
    space = "score"
    PARAMETERS = {"power": (0.9, "exponent of the score-difference norm")}

    def __init__(self, power=0.9):
        self.power = float(power)
        if not (math.isfinite(self.power) and self.power >= 0):
            raise ValueError(f"power must be a finite number >= 0, got {power!r}")

    def correction(self, s_c, ds, omega, ctx, state):
        return omega * _norm(ds) ** self.power * ds  # ds = s_c - s_u in score space: c/Q = phi (m_c - m_u)


RULES = {cls.name: cls for cls in (CFG, ADG, APG, CFGPlusPlus, RescaledCFG, PowerLawCFG)}


def make_rule(name, **params):
    """The rule called ``name`` with keyword ``params``; ValueError naming an unknown name or parameter."""
    if isinstance(name, Rule):
        if params:
            raise ValueError("rule: parameters go with a rule name, not with a Rule instance")
        return name
    if name not in RULES:
        raise ValueError(f"rule: unknown name {name!r} (known: {', '.join(RULES)})")
    cls = RULES[name]
    for key in params:
        if key not in cls.PARAMETERS:
            known = ", ".join(cls.PARAMETERS) or "none"
            raise ValueError(f"{key}: not a parameter of the {name} rule (its parameters: {known})")
    return cls(**params)


__all__ = ["RULES", "SPACES", "GuidanceContext", "Rule", "make_rule", "prediction_coefficients"]
