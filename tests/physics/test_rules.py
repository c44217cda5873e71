"""Guidance rules against direct implementations of their sources' formulas (physics/rules.py, eqs. 34-39).

The references below are written on the full predictions (F = D_c, B = D_u, v_c, v_u, ...), the
way the sources state them; the rules compute the same thing from the exact difference of the
class-mean estimates and convert back through eq. (34). Tolerances: 1e-9 relative, well above
float64 rounding of these O(d) reductions and far below any effect a rule has.
"""

import math

import numpy as np
import pytest

from cfgphase.physics.mixture import GaussianMixture, denoiser_from_mean
from cfgphase.physics.processes import OU, VE, Flow
from cfgphase.physics.rules import ADG, APG, CFG, RULES, CFGPlusPlus, GuidanceContext, PowerLawCFG, RescaledCFG, make_rule, \
    prediction_coefficients
from cfgphase.solvers.score.fields import MixtureField
import cfgphase as cp
from cfgphase.solvers.sampling.steppers import Guide, ddim

D = 12


@pytest.fixture(scope="module")
def setup():
    """A mixture whose target class has two modes (an x-dependent conditional estimate)."""
    model = GaussianMixture.random(D, classes=6, modes=2, mode_weights=[0.3, 0.7], class_var=0.4, seed=3)
    field = MixtureField(model, "ou", target=0)
    x = model.sample_noised(0.8, OU(), 16, np.random.default_rng(1))[0]
    return model, field, x


def context(field, x, t, omega, t_next=None):
    ev = field.evaluate(x, t)
    return GuidanceContext(x, t, 0.5 * t if t_next is None else t_next, omega, ev.cond, ev.uncond, field.process,
                           field.reference_var), ev


def predictions(field, x, t, m):
    """(D, eps, v, score) of a class-mean estimate, from the score and Tweedie's formula (eq. 6)."""
    p = field.process
    a, var = float(p.a(t)), float(p.var(t))
    score = -(x - a * m) / p.class_var(t, field.reference_var)
    D_ = (x + var * score) / a
    eps = -math.sqrt(var) * score
    return dict(x0=D_, eps=eps, v=a * eps - math.sqrt(var) * D_, score=score)


@pytest.mark.parametrize("process", [OU(), VE(), Flow()])
def test_prediction_coefficients_match_tweedie(setup, process):
    model, _, x = setup
    field = MixtureField(model, process, target=0)
    t = 0.4
    m = model.class_mean_estimate(x, t, process)
    ref = predictions(field, x, t, m)
    for space, y in ref.items():
        P, Q = prediction_coefficients(space, t, process, model.class_var)
        np.testing.assert_allclose(P * x + Q * m, y, rtol=1e-12, atol=1e-12, err_msg=space)


def adg_reference(F, B, w, a_max=math.pi / 3, offset=1e-3):
    wp = max(w - 1, 0) + offset
    out = np.empty_like(F)
    for i, (f, b) in enumerate(zip(F, B)):
        cos_g = np.clip(f @ b / (np.linalg.norm(f) * np.linalg.norm(b)), -1, 1)
        gamma = math.acos(cos_g)
        a = float(np.clip(wp * gamma, -a_max, a_max))
        e = f - (f @ b) / (b @ b) * b
        out[i] = math.cos(a) * f + (math.sin(a) / math.sin(gamma) if math.sin(gamma) > 1e-3 else wp) * e
    return out


@pytest.mark.parametrize("w", [1.5, 3.0, 12.0])
def test_adg_matches_its_definition_and_the_norm_identity(setup, w):
    _, field, x = setup
    t = 0.8
    ctx, ev = context(field, x, t, w - 1)
    rule = ADG()
    F = denoiser_from_mean(x, ev.cond, t, field.process, field.reference_var)
    B = denoiser_from_mean(x, ev.uncond, t, field.process, field.reference_var)
    out = denoiser_from_mean(x, rule.guided_mean(ctx), t, field.process, field.reference_var)
    np.testing.assert_allclose(out, adg_reference(F, B, w), rtol=1e-9)
    gamma = np.arccos(np.clip(np.sum(F * B, 1) / np.linalg.norm(F, axis=1) / np.linalg.norm(B, axis=1), -1, 1))
    a = np.clip((w - 1 + 1e-3) * gamma, 0, math.pi / 3)
    ratio = np.sum(out * out, 1) / np.sum(F * F, 1)
    np.testing.assert_allclose(ratio, 1 + np.sin(2 * a) * np.sin(gamma), rtol=1e-9)
    assert np.all(np.sqrt(ratio) <= math.sqrt(2))


def test_adg_at_w_one_returns_the_conditional(setup):
    _, field, x = setup
    ctx, ev = context(field, x, 0.8, 0.0)
    np.testing.assert_allclose(ADG(offset=0.0).guided_mean(ctx), np.broadcast_to(ev.cond, x.shape), rtol=1e-12)
    # with the source's epsilon = 1e-3 the output is rotated by 1e-3 gamma at most
    F = denoiser_from_mean(x, ev.cond, 0.8, field.process, field.reference_var)
    out = denoiser_from_mean(x, ADG().guided_mean(ctx), 0.8, field.process, field.reference_var)
    assert np.all(np.linalg.norm(out - F, axis=1) <= 1e-3 * math.pi * np.linalg.norm(F, axis=1))


def test_apg_matches_momentum_cap_and_projection(setup):
    model, field, x = setup
    rule = APG(beta=-0.5, norm_cap=0.3, eta=0.25)
    state = rule.start(x.shape)
    momentum = np.zeros_like(x)
    for t, omega in ((1.2, 2.0), (0.9, 3.0), (0.5, 1.5)):
        ctx, ev = context(field, x, t, omega)
        F = denoiser_from_mean(x, ev.cond, t, field.process, field.reference_var)
        B = denoiser_from_mean(x, ev.uncond, t, field.process, field.reference_var)
        momentum = (F - B) + (-0.5) * momentum
        norm = np.linalg.norm(momentum, axis=1, keepdims=True)
        capped = momentum * np.minimum(1.0, 0.3 / norm)
        par = np.sum(capped * F, 1, keepdims=True) / np.sum(F * F, 1, keepdims=True) * F
        expected = F + omega * ((capped - par) + 0.25 * par)
        out = denoiser_from_mean(x, rule.guided_mean(ctx, state), t, field.process, field.reference_var)
        np.testing.assert_allclose(out, expected, rtol=1e-9)
        x = x * 0.97  # the particles move between evaluations
    assert np.any(np.linalg.norm(momentum, axis=1) > 0.3)  # the cap was active


@pytest.mark.parametrize("space", ["v", "eps", "x0"])
def test_rescaled_cfg_matches_its_definition(setup, space):
    _, field, x = setup
    t, w, phi = 0.8, 4.0, 0.7
    ctx, ev = context(field, x, t, w - 1)
    yc = predictions(field, x, t, np.broadcast_to(ev.cond, x.shape))[space]
    yu = predictions(field, x, t, ev.uncond)[space]
    cfg = yu + w * (yc - yu)
    resc = cfg * (yc.std(axis=1, keepdims=True) / cfg.std(axis=1, keepdims=True))
    expected = phi * resc + (1 - phi) * cfg
    m = RescaledCFG(phi=phi, space=space).guided_mean(ctx)
    np.testing.assert_allclose(predictions(field, x, t, m)[space], expected, rtol=1e-9)


def test_power_law_cfg_matches_its_definition(setup):
    _, field, x = setup
    t, omega, power = 0.8, 0.3, 0.9
    ctx, ev = context(field, x, t, omega)
    pc = predictions(field, x, t, np.broadcast_to(ev.cond, x.shape))
    pu = predictions(field, x, t, ev.uncond)
    phi = omega * np.linalg.norm(pc["score"] - pu["score"], axis=1, keepdims=True) ** power
    expected = pc["x0"] + phi * (pc["x0"] - pu["x0"])
    m = PowerLawCFG(power=power).guided_mean(ctx)
    np.testing.assert_allclose(predictions(field, x, t, m)["x0"], expected, rtol=1e-9)


@pytest.mark.parametrize("lam", [0.0, 0.4, 1.0])
def test_cfgpp_step_is_ddim_renoised_with_the_unconditional_noise(setup, lam):
    """z_s = a_s (D_u + lam (D_c - D_u)) + sigma_s eps_u, against the DDIM stepper with the rule."""
    _, field, x = setup
    t, s = 0.8, 0.6
    rule = CFGPlusPlus(lam=lam)
    guide = Guide(field, rule, 0.0, x.shape[0])
    ev = field.evaluate(x, t)
    step, _ = ddim(field, guide, t, s, x, ev, guide(x, t, ev, s))
    p = field.process
    pc = predictions(field, x, t, np.broadcast_to(ev.cond, x.shape))
    pu = predictions(field, x, t, ev.uncond)
    expected = float(p.a(s)) * (pu["x0"] + lam * (pc["x0"] - pu["x0"])) + math.sqrt(float(p.var(s))) * pu["eps"]
    np.testing.assert_allclose(step, expected, rtol=1e-10)
    # its equivalent CFG weight (eq. 37)
    rho = lambda u: math.sqrt(float(p.var(u))) / float(p.a(u))  # noqa: E731
    assert rule.equivalent_weight(t, s, p) == pytest.approx(lam / (1 - rho(s) / rho(t)) - 1, rel=1e-13)


@pytest.mark.parametrize("rule", [CFG(), ADG(offset=0.0), APG(), RescaledCFG(), PowerLawCFG()])
def test_every_rule_at_omega_zero_is_conditional(setup, rule):
    _, field, x = setup
    ctx, ev = context(field, x, 0.8, 0.0)
    np.testing.assert_allclose(rule.guided_mean(ctx, rule.start(x.shape)), np.broadcast_to(ev.cond, x.shape),
                               rtol=1e-12, atol=1e-14)


MODEL = cp.Model(d=8, classes=30)


def simulate(method=None, **guidance):
    return cp.simulate(MODEL, cp.Guidance(**guidance), sampler=cp.Sampler("ode", method=method, steps=40),
                       particles=256, save=cp.SaveAt(times=[0.0], samples=True))


@pytest.mark.parametrize("name", ["adg", "apg", "rescaled", "powerlaw"])
def test_rules_at_omega_zero_sample_the_conditional_on_the_same_noise(name):
    """Same seed, omega = 0: every rule's samples equal plain conditional sampling's (ADG with the
    source's epsilon only up to its 1e-3 rotation)."""
    base = simulate(omega=0.0).samples
    rule = make_rule(name, offset=0.0) if name == "adg" else name
    np.testing.assert_allclose(simulate(omega=0.0, rule=rule).samples, base, rtol=1e-9, atol=1e-12)
    if name == "adg":
        assert np.max(np.abs(simulate(omega=0.0, rule="adg").samples - base)) < 1e-2


@pytest.mark.parametrize("name", list(RULES))
def test_the_two_weight_conventions_agree(name):
    kwargs = dict(method="ddim") if name == "cfgpp" else {}
    weight = ({},) * 2 if name == "cfgpp" else (dict(omega=0.7), dict(guidance_scale=1.7))
    a = simulate(rule=name, **weight[0], **kwargs).samples
    b = simulate(rule=name, **weight[1], **kwargs).samples
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("build, key", [
    (lambda: make_rule("cfg2"), "rule"),
    (lambda: make_rule("adg", beta=1.0), "beta"),
    (lambda: ADG(a_max=2.0), "a_max"),
    (lambda: ADG(offset=-1.0), "offset"),
    (lambda: APG(norm_cap=-1.0), "norm_cap"),
    (lambda: CFGPlusPlus(lam=1.5), "lam"),
    (lambda: RescaledCFG(phi=2.0), "phi"),
    (lambda: RescaledCFG(space="score"), "space"),
    (lambda: PowerLawCFG(power=-1.0), "power"),
    (lambda: simulate(rule="cfgpp"), "method"),
    (lambda: simulate(rule="cfgpp", omega=1.0, method="ddim"), "omega"),
    (lambda: cp.Guidance(rule="adg", sigma_lo=1.0), "sigma_lo"),
    (lambda: cp.Guidance(schedule="interval", sigma_hi=1.0, beta=0.5), "beta"),
])
def test_bad_rule_parameters_name_the_parameter(build, key):
    with pytest.raises(ValueError, match=key):
        build()


@pytest.mark.parametrize("dtype, omega", [(np.float64, 1.5), (np.float32, 1.5), (np.float32, np.float64(-0.5)),
                                          (np.float64, 3)])
def test_cfg_guided_mean_in_place_is_eq_10_written_out(dtype, omega):
    """The in-place CFG mean (physics.weights.guided_mean) is m_c + omega (m_c - m_u) evaluated as written: the same
    bits and dtype, a (d,) target mean broadcast over the rows, and the inputs left untouched."""
    rng = np.random.default_rng(4)
    m_c, m_u = rng.normal(size=D).astype(dtype), rng.normal(size=(5, D)).astype(dtype)
    kept = m_c.copy(), m_u.copy()
    out = CFG().guided_mean(GuidanceContext(None, 0.5, 0.4, omega, m_c, m_u, OU(), 1.0))
    expected = m_c + omega * (m_c - m_u)
    assert out.dtype == expected.dtype and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(m_c, kept[0])
    np.testing.assert_array_equal(m_u, kept[1])
    assert cp.physics.weights.guided_mean(0.5, 0.25, 2.0) == 0.5 + 2.0 * (0.5 - 0.25)
