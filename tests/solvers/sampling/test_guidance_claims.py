"""The qualitative claims of the guidance literature, in simulation with fixed seeds.

Each comparison is between runs on common random numbers (same seed); differences are required
to exceed 3 standard errors of the difference, sqrt(se_a^2 + se_b^2) (grouped jackknife, eq. 14),
which is conservative for positively correlated runs. Setups and their measured margins are in
docs/theory.md section 10.
"""

import math

import numpy as np
import pytest

import cfgphase as cp


def separated(a, b, key, sign=1):
    """a[key] - b[key] has the given sign by more than 3 standard errors of the difference."""
    diff = a[key] - b[key]
    se = math.hypot(a[key + "_stderr"], b[key + "_stderr"])
    return sign * diff > 3 * se, (diff, se)


@pytest.fixture(scope="module")
def stagewise():
    """Jin, Shi & Gu's setting: a two-mode conditional (weights 0.3 / 0.7) in 2-D, the unconditional
    an independent N(0, I), rectified flow sampled on a uniform grid; equal mean weight w = 2."""
    means = np.zeros((2, 2))
    means[:, 0] = (-1.5, 1.5)
    model = cp.Model(means=means, weights=[0.3, 0.7], labels=[0, 0], class_var=0.1, unconditional=1.0,
                     process="flow")
    return {name: cp.simulate(model, cp.Guidance(guidance_scale=2.0, schedule=name),
                              sampler=cp.Sampler("ode", grid="uniform", steps=200), particles=4096,
                              save=cp.SaveAt(times=[0.0]), seed=11).final
            for name in ("step-up", "step-down")}


def test_early_strong_guidance_suppresses_the_weak_mode_more(stagewise):
    """(i) at equal mean weight, step-down (early high) leaves less of the 0.3 mode than step-up."""
    ok, (diff, se) = separated(stagewise["step-down"], stagewise["step-up"], "mode_weight_0", sign=-1)
    assert ok, (diff, se)
    assert stagewise["step-up"]["mode_weight_0_target"] == pytest.approx(0.3)


def test_late_strong_guidance_shrinks_the_within_mode_variance_more(stagewise):
    """(ii) step-up (late high) contracts each mode more than step-down."""
    ok, (diff, se) = separated(stagewise["step-up"], stagewise["step-down"], "within_mode_var", sign=-1)
    assert ok, (diff, se)


def test_adg_bounds_the_denoised_norm_where_cfg_lets_it_grow():
    """(iii) d = 256, unit class covariance: CFG's mean |x0-hat| over the trajectory grows with w;
    ADG's stays within sqrt(2) |D_c| at every recorded time (an identity of the rule, checked on
    the sampler's own evaluations)."""
    model, common = cp.Model(d=256, classes=10, class_var=1.0, seed=2), dict(particles=256, steps=60, seed=2)
    norms = []
    for w in (2.0, 4.0, 8.0):
        mean, _ = cp.simulate(model, cp.Guidance(guidance_scale=w), **common).observable("denoised_norm")
        norms.append(np.nanmean(mean))
        adg = cp.simulate(model, cp.Guidance(guidance_scale=w, rule="adg"), **common)
        ratio = adg.trajectory["denoised_norm_ratio"][:-1]  # group means; the last node starts no step
        assert np.all(ratio <= math.sqrt(2)), np.max(ratio)
    assert norms[0] < norms[1] < norms[2], norms


def test_guidance_lowers_the_mean_inverse_posterior_but_not_every_quantile():
    """(iv) 1-D, target N(0, 1) (weight 0.2) between a close class at -1.5 and a far one at +4
    (0.4 each): E[1/p(c|X)] falls as omega grows, yet the 90 % quantile of p(c|X) falls below the
    exact conditional's. Guidance pushes the mean away from the unconditional mean, to the left,
    past the region where the target is best classified and into the neighbour at -1.5."""
    model = cp.Model(means=[[0.0], [-1.5], [4.0]], weights=[0.2, 0.4, 0.4], class_var=1.0, target=0)
    runs = [cp.simulate(model, omega, steps=100, particles=20000, save=cp.SaveAt(times=[0.0]), seed=5).final
            for omega in (0.0, 0.5, 1.0, 2.0)]
    for weak, strong in zip(runs, runs[1:]):
        ok, margin = separated(strong, weak, "inv_prob", sign=-1)
        assert ok, margin
    strong = runs[-1]
    assert strong["p_target_q90_shift"] < -3 * strong["p_target_q90_shift_stderr"], (
        strong["p_target_q90_shift"], strong["p_target_q90_shift_stderr"])
    assert abs(runs[0]["p_target_q90_shift"]) < 3 * runs[0]["p_target_q90_shift_stderr"]  # exact sampling: no shift


def test_constant_guidance_drops_a_mode_that_limited_interval_guidance_keeps():
    """(v) 1-D: the target has modes at -3 and +1 (equal weights), another class sits at +2. w = 6
    at every noise level sends (almost) every sample to the -3 mode; the same w only where the
    noise level sigma_t/a_t <= 1 keeps both modes and still classifies every sample correctly."""
    model = cp.Model(means=[[-3.0], [1.0], [2.0]], weights=[0.25, 0.25, 0.5], labels=[0, 0, 1], class_var=0.25,
                     process="ve")
    common = dict(steps=200, particles=8000, save=cp.SaveAt(times=[0.0]), seed=1)
    everywhere = cp.simulate(model, cp.Guidance(guidance_scale=6.0), **common).final
    interval = cp.simulate(model, cp.Guidance(guidance_scale=6.0, schedule="interval", sigma_hi=1.0), **common).final
    assert everywhere["mode_weight_1"] < 0.02
    assert abs(interval["mode_weight_1"] - 0.5) < 0.05
    assert interval["accuracy"] > 0.99
