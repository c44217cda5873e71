"""Speciation time, clone agreement and the collapse time of points (docs/theory.md eqs. 65-67, 70)
against the published formulas, Monte Carlo of the exact posterior and cloned reverse-SDE trajectories."""

import math

import numpy as np
import pytest

import cfgphase as cp
from cfgphase.solvers.score.fields import field_for
from cfgphase.solvers.theory.regimes import (clone_agreement, empirical_collapse_time, level_collapse_times,
                                              level_speciation_times, speciation_time, two_class_clone_agreement)
from cfgphase.solvers.theory.scaling import extrapolate


def two_classes(d, class_var=0.25, seed=0):
    direction = np.random.default_rng(seed).standard_normal(d)
    mu = direction / np.linalg.norm(direction) * math.sqrt(d)
    return cp.Model(means=np.stack([mu, -mu]), class_var=class_var)


def test_speciation_time_is_the_published_half_log_eigenvalue_at_large_eigenvalue():
    """OU, points (s = 0): t_S = (1/2) log(1 + Lambda) exactly (eq. 65), so it differs from Biroli et
    al.'s (1/2) log Lambda by (1/2) log(1 + 1/Lambda) < 1/(2 Lambda); VE: t_S = Lambda - 2 s^2."""
    for lam in (4.0, 64.0, 1024.0):
        t_s = speciation_time(lam)
        assert t_s == pytest.approx(0.5 * math.log1p(lam), rel=1e-14)
        assert 0 < t_s - 0.5 * math.log(lam) < 0.5 / lam
    assert speciation_time(10.0, class_var=0.25, process="ve") == pytest.approx(9.5, rel=1e-14)


@pytest.mark.parametrize("kwargs, name", [(dict(eigenvalue=-1.0), "eigenvalue"), (dict(eigenvalue="x"), "eigenvalue"),
                                          (dict(eigenvalue=0.4, class_var=0.25), "eigenvalue"),
                                          (dict(eigenvalue=4.0, class_var=-1.0), "class_var")])
def test_speciation_time_refuses_bad_input_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        speciation_time(**kwargs)


def test_closed_form_agrees_with_the_monte_carlo_of_the_exact_posterior():
    """Eq. (67) against eq. (66) on 20000 exact draws of x_t per time: within 4 standard errors
    (the quadrature error, 80 nodes, is below 1e-10); falls from 1 to 1/2 around t_S, where the
    signal-to-noise ratio along mu is 1."""
    model = two_classes(64)
    t_s = speciation_time(64.25, class_var=0.25)
    times = t_s + np.array([-1.0, -0.3, 0.0, 0.3, 1.0])
    phi, err = clone_agreement(model, times, samples=20000, seed=3)
    exact = two_class_clone_agreement(64.0, times, class_var=0.25)
    assert np.all(np.abs(phi - exact) < 4 * err), (phi, exact, err)
    assert exact[0] > 0.95 and exact[-1] < 0.6 and np.all(np.diff(exact) < 0)


def test_the_curves_of_all_dimensions_collapse_at_the_speciation_time():
    """phi depends on t only through zeta_t = a_t |mu| / sqrt(Gamma_t), which is 1 at t_S (eq. 67):
    the value at t_S is the same for every |mu|^2."""
    values = [two_class_clone_agreement(m2, [speciation_time(m2 + 0.25, class_var=0.25)], class_var=0.25)[0]
              for m2 in (4.0, 64.0, 4096.0)]
    assert np.ptp(values) < 1e-12, values


class _From:
    """A field that starts every particle at given positions: the split point of the clones."""

    def __init__(self, field, x):
        self._field, self._x = field, x

    def __getattr__(self, name):
        return getattr(self._field, name)

    def sample_initial(self, t, n, rng, init="unconditional"):
        return self._x.copy()


@pytest.mark.parametrize("d", [16, 64])
def test_cloned_reverse_sde_trajectories_agree_as_predicted(d):
    """Two clones per particle: x_t drawn exactly from the noised mixture, each continued to t = 0 by
    the unguided reverse SDE (100 steps) with its own Brownian path; a clone's class is the sign of
    its overlap with mu. The fraction of agreeing pairs (1024 pairs: binomial standard error at
    most 0.016) matches eq. (67) within 3 standard errors at t_S - 0.5, t_S, t_S + 0.5."""
    model = two_classes(d)
    field = field_for(model)
    mu = model.means[0]
    t_s = speciation_time(d + 0.25, class_var=0.25)
    rng = np.random.default_rng(11)
    pairs = 1024
    for t in (t_s - 0.5, t_s, t_s + 0.5):
        x = model.mixture.sample_noised(t, field.process, pairs, rng)[0]
        ends = []
        for seed in (1, 2):
            res = cp.integrate(_From(field, x), cp.Guidance(omega=-1.0), cp.Sampler(kind="sde", steps=100, t_max=t),
                               particles=pairs, seed=seed, save=cp.SaveAt(times=[0.0], samples=True))
            ends.append(np.sign(res.samples @ mu))
        agree = np.mean(ends[0] == ends[1])
        exact = two_class_clone_agreement(float(d), [t], class_var=0.25)[0]
        se = math.sqrt(exact * (1 - exact) / pairs)
        assert abs(agree - exact) < 3 * se + 1e-12, (d, t, agree, exact, se)


def test_empirical_collapse_time_is_the_random_energy_model_time_for_an_isotropic_spectrum():
    """Isotropic points: eq. (70) equals Biroli et al.'s t_C = (1/2) log(1 + sigma^2/(n^{2/d} - 1)) and the
    s -> 0 limit of cfgphase's collapse time (eq. 21, an independent code path) at alpha = log n / d."""
    from cfgphase.solvers.theory.condensation import collapse_time

    for d, n, var in ((64, 183, 0.7), (16, 1000, 1.0), (100, 2, 2.5)):
        t = empirical_collapse_time(np.full(d, var), n)
        assert t == pytest.approx(0.5 * math.log1p(var / math.expm1(2 * math.log(n) / d)), rel=1e-10)
        alpha = math.log(n) / d
        assert t == pytest.approx(collapse_time(alpha, mean_var=var, class_var=1e-12).t_collapse, rel=1e-6)


def test_a_spread_spectrum_collapses_earlier_in_sampling_than_its_isotropic_average():
    """Concavity of log(1 + lambda snr): at equal trace a spread spectrum carries less information at
    every snr, so it needs a larger snr, i.e. a smaller t (OU), to distinguish n points."""
    spread = np.linspace(0.0, 2.0, 64)
    assert empirical_collapse_time(spread, 183) < empirical_collapse_time(np.full(64, spread.mean()), 183)


@pytest.mark.parametrize("args, name", [((np.zeros(4), 10), "eigenvalues"), (([1.0, -1.0], 10), "eigenvalues"),
                                        (([1.0], 1), "points"), (([1.0], 2.5), "points")])
def test_empirical_collapse_time_refuses_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        empirical_collapse_time(*args)


def test_hierarchical_model_draws_a_tree_and_guides_the_chosen_level():
    model = cp.Model.hierarchical(d=16, branching=(2, 3), level_vars=(1.0, 0.25), level=0, target=1, seed=2)
    leaves = model.mixture.means
    assert leaves.shape == (6, 16) and model.K == 2 and np.array_equal(model.mixture.labels, [0, 0, 0, 1, 1, 1])
    # siblings scatter around their parent with v_1: their spread is far below the parents' separation
    within = np.mean([np.var(leaves[model.ancestors(0) == a], axis=0, ddof=1).mean() for a in (0, 1)])
    assert 0.1 < within < 0.5
    record = model.record()
    assert record["disorder"] == "hierarchical" and record["branching"] == [2, 3] and record["level"] == 0
    leaf_level = cp.Model.hierarchical(d=16, branching=(2, 3), level_vars=(1.0, 0.25), target=4, seed=2)
    assert leaf_level.K == 6 and leaf_level.mixture.labels is None
    np.testing.assert_array_equal(leaf_level.mixture.means, leaves)  # the same tree for the same seed
    for kwargs, name in ((dict(branching=(2, 1)), "branching"), (dict(level_vars=(1.0,)), "level_vars"),
                         (dict(level=2), "level"), (dict(level_vars=(1.0, -1.0)), "level_vars")):
        with pytest.raises(ValueError, match=name):
            cp.Model.hierarchical(**{**dict(d=16, branching=(2, 3), level_vars=(1.0, 0.25)), **kwargs})


def test_super_classes_speciate_before_their_sub_classes_and_each_level_follows_the_two_class_law():
    """Two super-classes (v_0 = 1) of two sub-classes (v_1 = 0.25), s^2 = 0.05, d = 64, 8 trees: t_S of the
    super level exceeds that of the sub level in every tree (eq. 71), and the clone agreement within the
    target's super-class (a two-leaf mixture: two symmetric Gaussian classes) at its t_S is eq. (67)'s
    universal 0.7752, pooled over the trees within 3 standard errors (Monte Carlo, 20000 draws each)."""
    at_ts = two_class_clone_agreement(1.0, [speciation_time(1.0 + 1e-12)])[0]  # zeta = 1 with s = 0
    deviations, errors = [], []
    for seed in range(8):
        model = cp.Model.hierarchical(d=64, branching=(2, 2), level_vars=(1.0, 0.25), class_var=0.05, level=0,
                                      seed=seed)
        t_super, t_sub = level_speciation_times(model)
        assert t_super > t_sub + 0.3, (seed, t_super, t_sub)
        branch = cp.Model(means=model.mixture.means[model.ancestors(0) == model.target], class_var=0.05)
        phi, err = clone_agreement(branch, [t_sub], samples=20000, seed=seed)
        deviations.append(phi[0] - at_ts)
        errors.append(err[0])
    assert abs(np.mean(deviations)) < 3 * np.sqrt(np.sum(np.square(errors))) / len(errors), (deviations, errors)


def test_level_collapse_times_reduce_to_the_collapse_time_of_each_level():
    """A one-level tree is eq. (21); the top level of two sees its descendants as width v_1 + s^2; a level
    beyond its alpha_max never condenses (NaN); bad input named."""
    from cfgphase.solvers.theory.condensation import collapse_time

    assert level_collapse_times([0.2], [1.0], class_var=0.1)[0] == collapse_time(0.2, mean_var=1.0,
                                                                                   class_var=0.1).t_collapse
    top, sub = level_collapse_times([0.15, 0.15], [1.0, 0.25], class_var=0.05)
    assert top == collapse_time(0.15, mean_var=1.0, class_var=0.3).t_collapse
    assert sub == collapse_time(0.15, mean_var=0.25, class_var=0.05).t_collapse and top > sub
    assert np.isnan(level_collapse_times([0.15, 2.0], [1.0, 0.25], class_var=0.05)[1])
    with pytest.raises(ValueError, match="level_vars"):
        level_collapse_times([0.1, 0.1], [1.0])


@pytest.mark.slow  # about 4 minutes: the top level's class posterior is dense over 14884 leaves at d = 32
def test_the_levels_of_a_tree_condense_in_order_at_their_predicted_times():
    """alpha_0 = alpha_1 = 0.15 (K_0 = K_1 = e^{0.15 d}), v = (1, 1/4), s^2 = 0.05, unguided conditional
    sampling (omega = 0) of a super-class (level 0) and of a leaf (level 1), reverse SDE, 150 steps,
    t_max = 7, 512 particles, 6 trees per d = 16, 24, 32: the simulated condensation time of each level
    minus eq. (73), extrapolated linearly in 1/d, is zero within 3 standard errors (between trees), and
    the super-class condenses first (larger t) at every d."""
    d_list, alphas, v, s2 = (16, 24, 32), (0.15, 0.15), (1.0, 0.25), 0.05
    predicted = level_collapse_times(alphas, v, class_var=s2)
    means, errors = {0: [], 1: []}, {0: [], 1: []}
    for d in d_list:
        branching = tuple(int(round(math.exp(a * d))) for a in alphas)
        times = {0: [], 1: []}
        for seed in range(6):
            for level in (0, 1):
                model = cp.Model.hierarchical(d=d, branching=branching, level_vars=v, class_var=s2, level=level,
                                              seed=seed)
                final = cp.simulate(model, 0.0, sampler="sde", particles=512, steps=150, t_max=7.0, seed=seed).final
                times[level].append(final["t_condensation"] - predicted[level])
        assert np.mean(times[0]) + predicted[0] > np.mean(times[1]) + predicted[1]
        for level in (0, 1):
            means[level].append(np.mean(times[level]))
            errors[level].append(np.std(times[level], ddof=1) / math.sqrt(len(times[level])))
    for level in (0, 1):
        value, err = extrapolate(d_list, means[level], errors[level])
        assert abs(value) <= 3 * err, (level, means[level], errors[level], value, err)
