"""The finite-d theory of a tree of classes (docs/theory.md section 17, eqs. 74-79): the law of the
leaves' Gram matrix, the reduction, the dispatch of cp.predict, and the comparison with simulation."""

import numpy as np
import pytest

import cfgphase as cp
from cfgphase.solvers.theory.tree import draw_tree_factors, explicit_leaves, tree_covariance, tree_prediction


def test_tree_covariance_is_the_shared_ancestry_and_the_drawn_gram_matches_the_model():
    """C_ij = sum of the variances of the levels whose ancestor i and j share (eq. 74); the Gram matrices
    drawn in the span (eq. 75) and those of Model.hierarchical's means have mean d C, and the same
    spread of a diagonal entry (2 d C_ii^2): 400 draws each, within 4 standard errors."""
    branching, v, d = (2, 3), (1.0, 0.25), 16
    cov = tree_covariance(branching, v, np.arange(6))
    assert cov[0, 0] == 1.25 and cov[0, 2] == 1.0 and cov[0, 3] == 0.0
    L = draw_tree_factors(cov, d, 400, np.random.default_rng(0))
    drawn = L @ L.transpose(0, 2, 1)
    means = [cp.Model.hierarchical(d=d, branching=branching, level_vars=v, seed=s).means for s in range(400)]
    model = np.array([m @ m.T for m in means])
    for gram in (drawn, model):
        se = gram.std(axis=0, ddof=1) / np.sqrt(400)
        assert np.all(np.abs(gram.mean(axis=0) - d * cov) < 4 * se + 1e-12)
        assert abs(gram[:, 0, 0].var() / (2 * d * cov[0, 0] ** 2) - 1) < 0.3


def test_explicit_leaves_keep_the_target_family_first_and_whole_families():
    leaves, targets = explicit_leaves((5, 4), 1, 6, d=10)  # target leaf 6: family 1; two families fit
    assert leaves.tolist() == [4, 5, 6, 7, 0, 1, 2, 3] and targets.tolist() == [2]
    leaves, targets = explicit_leaves((5, 4), 0, 3, d=4)  # super-class 3: its own four leaves
    assert leaves.tolist() == [12, 13, 14, 15] and targets.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="d"):
        explicit_leaves((5, 4), 1, 0, d=3)


def test_predict_dispatches_a_tree_and_refuses_what_it_does_not_cover():
    model = cp.Model.hierarchical(d=16, branching=(3, 4), level_vars=(1.0, 0.25), class_var=0.05, level=0)
    pred = cp.predict(model, 2.0, sampler="sde", d=16, particles=400)
    assert pred.inputs["method"] == "reduction" and pred.inputs["K"] == 3 and pred.distortion is None
    assert pred.mean_ratio_stderr > 0 and pred.t_condensation is not None
    for kwargs, name in ((dict(), "d"), (dict(d=16, target_norm=1.0), "target_norm"), (dict(d=3), "d")):
        with pytest.raises(ValueError, match=name):
            cp.predict(model, 2.0, **kwargs)
    with pytest.raises(ValueError, match="class_var"):
        tree_prediction(16, 1.0, branching=(3, 4), level_vars=(1.0, 0.25), class_var=[0.1] * 16)


def test_a_guided_leaf_of_a_small_tree_against_simulation():
    """Every leaf explicit (12 <= d = 16, the exact reduction, eq. 79): guidance omega = 2 on a leaf,
    SDE, 4 trees x 256 particles against the prediction averaged over 30 trees; |z| <= 2 with the
    between-tree standard error (measured z: see docs/theory.md eq. 79)."""
    tree = dict(branching=(3, 4), level_vars=(1.0, 0.25), class_var=0.05)
    pred = tree_prediction(16, 2.0, sampler="sde", particles=3000, seed=1, **tree)
    sampler = cp.Sampler(kind="sde", t_max=pred.inputs["t_max"], steps=100)
    pred = tree_prediction(16, 2.0, sampler=sampler, particles=3000, seed=1, **tree)
    runs = [cp.simulate(cp.Model.hierarchical(d=16, seed=s, **tree), 2.0, sampler=sampler, particles=256, seed=s).final
            for s in range(4)]
    for key in ("mean_ratio", "var_perp", "t_condensation"):
        sim = np.array([r[key] for r in runs])
        se = np.hypot(sim.std(ddof=1) / 2, getattr(pred, key + "_stderr"))
        assert abs(sim.mean() - getattr(pred, key)) <= 2 * se, (key, sim.mean(), getattr(pred, key), se)


#: Every leaf explicit, the reduction is exact (eq. 79): its 2 cells of 48 outside 2 standard errors are
#: what a correct theory gives with 4 draws (about 5 % of cells, more with 3 degrees of freedom).
CHANCE = "exact reduction: a fluctuation of 4 draws"
#: Other families quenched (eq. 78), d = 32: 2 cells of 48 outside 2 standard errors, each alone at its
#: statistic and sign among the d; chance, or the other families' approximations A4-A6 (docs/theory.md 79).
OUTSIDE = "other families quenched: chance or approximations A4-A6 (docs/theory.md eq. 79)"
#: (tree, level, sampler, d, statistic) -> why the check is expected to fail; measured residual +- SE.
KNOWN_FAILURES = {
    ((3, 4), 1, "sde", 24, "mean_ratio"): CHANCE,  # +0.0029 +- 0.0014
    ((3, 4), 0, "sde", 24, "var_perp"): CHANCE,  # +0.0038 +- 0.0015
    ((16, 4), 0, "ode", 32, "t_condensation"): OUTSIDE,  # +0.0110 +- 0.0046
    ((16, 4), 0, "sde", 32, "var_perp"): OUTSIDE,  # +0.0053 +- 0.0025
}


def residuals(branching, level, sampler, d, draws=4, particles=512):
    """Simulation minus prediction, each draw of the tree conditioned on (eq. 79): per statistic the mean
    residual over draws and its standard error, the larger of the between-draw one and the one from each
    draw's own errors (jackknife of the simulation, Monte Carlo of the prediction)."""
    tree = dict(branching=branching, level_vars=(1.0, 0.25), class_var=0.05, level=level)
    keys = ("mean_ratio", "var_par", "var_perp", "t_condensation")
    res, err = {k: [] for k in keys}, {k: [] for k in keys}
    for seed in range(draws):
        model = cp.Model.hierarchical(d=d, seed=seed, **tree)
        pred = tree_prediction(d, 2.0, sampler=sampler, means=model.means, particles=1000, seed=100 + seed, **tree)
        sim = cp.simulate(model, 2.0, sampler=cp.Sampler(kind=sampler, t_max=pred.inputs["t_max"]),
                          particles=particles, seed=seed).final
        for k in keys:
            res[k].append(sim[k] - getattr(pred, k))
            err[k].append(np.hypot(sim[k + "_stderr"], getattr(pred, k + "_stderr")))
    out = {}
    for k in keys:
        r = np.array(res[k])
        out[k] = (r.mean(), max(r.std(ddof=1), np.sqrt(np.mean(np.square(err[k])))) / np.sqrt(draws))
    return out, pred.inputs["method"]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["ode", "sde"])
@pytest.mark.parametrize("branching, level", [((3, 4), 1), ((3, 4), 0), ((16, 4), 1), ((16, 4), 0)])
def test_guided_trees_match_simulation_at_each_d(branching, level, sampler):
    """Finite-size scaling over d = 16, 24, 32 (eq. 79): omega = 2 on a leaf (level 1) or on a super-class
    of four leaves (level 0), 4 trees per d, each compared with the prediction conditioned on it; every
    statistic within 2 standard errors, except the known failures (measured sizes in KNOWN_FAILURES)."""
    failures = []
    for d in (16, 24, 32):
        out, method = residuals(branching, level, sampler, d)
        assert method == ("reduction" if branching == (3, 4) else "reduction+quenched")
        for key, (mean, se) in out.items():
            known = (branching, level, sampler, d, key) in KNOWN_FAILURES
            if (abs(mean) > 2 * se) != known:
                failures.append((d, key, round(mean, 5), round(se, 5), "known" if known else "new"))
    assert not failures, failures
