"""Leading-order mean-field theory of guided sampling (eqs. 23-25): limits, consistency, simulation."""

import numpy as np
import pytest

from cfgphase.solvers.theory.condensation import alpha_at_free_entropy, alpha_max, collapse_time, others_free_entropy
from cfgphase.physics.gaussian import GaussianPair
from cfgphase.physics.processes import get_process
from cfgphase.solvers.theory.gaussian import integrate_moments
from cfgphase.solvers.theory.meanfield import (_conditional_transport, condensation_gap, distortion_boundary, effective_potential,
                               guided_prediction, prediction_grid, subexponential_distortion)
from cfgphase.solvers.theory.scaling import extrapolate
import cfgphase as cp


@pytest.mark.parametrize("sampler", ["ode", "sde"])
@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_without_guidance_it_reduces_to_collapse_and_the_conditional(alpha, sampler):
    """The ODE transports the unconditional start at t_max (a = 3e-6) unchanged: relative errors of
    order a_{t_max}/a_{t*} ~ 1e-5; the SDE forgets it."""
    pred = guided_prediction(alpha, omega=0.0, sampler=sampler)
    assert pred.t_condensation == pytest.approx(collapse_time(alpha).t_collapse, rel=1e-4)
    assert pred.mean_ratio == pytest.approx(1.0, abs=1e-4)
    assert pred.var_perp == pytest.approx(0.25, rel=1e-6)
    assert pred.var_par == pytest.approx(0.25, rel=1e-6)
    assert pred.distortion == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_guidance_condenses_earlier_pushes_the_mean_and_shrinks_the_variance(sampler):
    preds = [guided_prediction(0.2, omega=w, sampler=sampler) for w in (0.0, 1.0, 2.0)]
    t = [p.t_condensation for p in preds]
    assert t[0] < t[1] < t[2]  # t* moves earlier in the reverse process
    assert preds[0].mean_ratio < preds[1].mean_ratio < preds[2].mean_ratio
    assert preds[2].var_perp < preds[0].var_perp
    assert preds[0].distortion < preds[1].distortion < preds[2].distortion


@pytest.mark.parametrize("omega", [pytest.param(1.0, marks=pytest.mark.slow), 2.0])  # 15 s each: one in the default suite
def test_parallel_variance_from_the_spread_of_condensation_times_matches_simulation(omega):
    """var_par (eq. 27) against the probability-flow ODE at d = 32, 48, 64 (alpha = 0.1: K up to 602),
    4 draws of the means x 1024 particles per d, extrapolated in 1/d; 3 standard errors.
    Measured at omega = 2: 0.0974, ..., 0.0899 (d = 32, 64) against 0.0923; the bulk theory
    without eq. 27 would give var_perp's 0.23."""
    pred = guided_prediction(0.1, omega, t_max=7.0)
    ds, means, errors = [32, 48, 64], [], []
    for d in ds:
        values = [cp.simulate(cp.Model(d=d, alpha=0.1, seed=s), omega, particles=1024, steps=100, seed=s, t_max=7.0,
                              save=cp.SaveAt(times=[0.0])).final["var_par"] for s in range(4)]
        means.append(np.mean(values))
        errors.append(np.std(values, ddof=1) / 2)
    extrapolated, err = extrapolate(ds, means, errors)
    assert abs(extrapolated - pred.var_par) <= 3 * err
    assert pred.var_par < 0.6 * pred.var_perp


def test_the_sde_relaxes_distortion_that_the_ode_keeps():
    ode, sde = guided_prediction(0.2, 1.0, sampler="ode"), guided_prediction(0.2, 1.0, sampler="sde")
    assert sde.distortion < 0.1 * ode.distortion


def test_distortion_survives_the_large_d_limit_but_is_smaller_for_fewer_classes():
    """Exponential K keeps an O(1) distortion; alpha -> 0 (sub-exponential K) condenses later,
    where guidance acts for less time."""
    small, large = guided_prediction(0.02, 1.0), guided_prediction(0.3, 1.0)
    assert small.t_condensation > large.t_condensation
    assert small.distortion < large.distortion
    assert large.distortion > 0.01


@pytest.mark.parametrize("omega", [0.0, 1.0, 2.0])
def test_effective_potential_branches_cross_at_the_bulk_overlap_at_t_star(omega):
    pred = guided_prediction(0.2, omega)
    r = np.linspace(0.0, 2.0, 401)
    at_star = effective_potential(r, pred.t_condensation, 0.2, pred.v_perp_condensation)
    assert np.min(np.abs(at_star.crossings - pred.r_condensation)) < 1e-4
    np.testing.assert_allclose(at_star.potential, -np.maximum(at_star.target, at_star.others))


def test_distortion_boundary_reaches_the_threshold_and_falls_with_alpha():
    alphas = [0.05, 0.1, 0.2, 0.4]
    omegas = distortion_boundary(alphas, 0.05)
    for alpha, omega in zip(alphas, omegas):
        assert guided_prediction(alpha, omega).distortion == pytest.approx(0.05, abs=1e-6)
    assert np.all(np.diff(omegas) < 0)  # more classes: macroscopic distortion at weaker guidance
    assert np.isnan(distortion_boundary([0.1], 5.0, omega_max=1.0)[0])


def _simulated_distortion(d, K, sampler, seeds=4):
    runs = [cp.simulate(cp.Model(d=d, classes=K, seed=s), 1.0, sampler=sampler, particles=1024, steps=150, seed=s,
                        t_max=9.0, save=cp.SaveAt(times=[0.0])).final["distortion"] for s in range(seeds)]
    return np.mean(runs), np.std(runs, ddof=1) / np.sqrt(seeds)


def test_subexponential_distortion_decays_with_d_as_predicted():
    """K = 16 fixed, omega = 1, ODE: the theory at alpha_eff = log K / d plus the finite-d term
    along mu_c (eq. 28) against simulation at d = 32, 64, 128. Measured agreement 2-4 % per
    point (0.0333/0.0320, 0.0165/0.0158, 0.0082/0.0080); tolerance 3 standard errors + 6 %.
    Both fall as 1/d."""
    ds = [32, 64, 128]
    _, theory = subexponential_distortion(16, ds, omega=1.0, t_max=9.0)
    simulated = [_simulated_distortion(d, 16, "ode") for d in ds]
    for (mean, err), pred in zip(simulated, theory):
        assert abs(mean - pred) <= 3 * err + 0.06 * pred
    slope_theory = np.polyfit(np.log(ds), np.log(theory), 1)[0]
    slope_sim = np.polyfit(np.log(ds), np.log([m for m, _ in simulated]), 1)[0]
    assert slope_theory == pytest.approx(-1.0, abs=0.05)
    assert slope_sim == pytest.approx(slope_theory, abs=0.1)


@pytest.mark.slow
def test_subexponential_sde_distortion_decays_as_one_over_d_squared():
    """SDE, K = 16: both fall as 1/d^2, but the simulation is about twice the leading-order prediction at
    every d (the logistic switch of width O(1/log K) that the leading order replaces by a step;
    docs/theory.md section 12.4, where the exact K-dimensional reduction accounts for it). Only the decay
    law is asserted here. (Slow: 24 SDE runs up to d = 128; the ODE's decay is in the default suite.)"""
    ds = [32, 64, 128]
    _, theory = subexponential_distortion(16, ds, omega=1.0, sampler="sde", t_max=9.0)
    simulated = [_simulated_distortion(d, 16, "sde", seeds=8)[0] for d in ds]
    slope_theory = np.polyfit(np.log(ds), np.log(theory), 1)[0]
    slope_sim = np.polyfit(np.log(ds), np.log(simulated), 1)[0]
    assert slope_theory == pytest.approx(-2.0, abs=0.15)
    assert slope_sim == pytest.approx(slope_theory, abs=0.4)


@pytest.mark.parametrize("process", ["ou", "ve", "flow"])
@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_closed_form_conditional_transport_matches_integration(process, sampler):
    """Eq. (29) against the moment equations (16)/(17) at omega = 0, integrated from t = 0.4."""
    proc = get_process(process)
    pair = GaussianPair(mean_c=[1.0, 0.0], var_c=0.25, mean_u=0.0, var_u=1.25)
    mean, var = np.array([1.3, 0.2]), np.array([0.07, 0.4])
    got_mean, got_var, *_ = integrate_moments(pair, proc, 0.0, sampler, 0.4, 0.0, mean, var)
    for i, target in enumerate((1.0, 0.0)):
        m, v = _conditional_transport(proc, sampler, 0.25, 0.4, mean[i], var[i], target)
        assert m == pytest.approx(got_mean[i], rel=1e-8, abs=1e-10)
        assert v == pytest.approx(got_var[i], rel=1e-8)


@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_grid_condensation_times_solve_the_gap_equation_on_an_independent_integration(sampler):
    """Each grid t* (one dense bulk solve per omega) is checked against a fresh integration of the
    bulk down to t* and slightly above it: the gap (eq. 24) vanishes at t* (to 1e-8) and is
    negative just before (the first crossing). Two workers give the same numbers as one."""
    alphas, omegas = [0.05, 0.2, 0.6, 1.0], [0.0, 1.0, 3.0]
    grid = prediction_grid(alphas, omegas, sampler=sampler)
    np.testing.assert_array_equal(prediction_grid(alphas, omegas, sampler=sampler, workers=2)["var_par"],
                                  grid["var_par"])
    proc = get_process("ou")
    pair = GaussianPair(mean_c=[1.0, 0.0], var_c=0.25, mean_u=0.0, var_u=1.25)
    t_max = float(proc.time_at_snr(1e-10 / pair.signal_var))
    start = pair.noised_moments(t_max, proc, conditional=False)
    checked = 0
    for i, alpha in enumerate(alphas):
        for j, omega in enumerate(omegas):
            t_star = grid["t_condensation"][i, j]
            if np.isnan(t_star):
                continue
            for t, check in ((t_star, lambda g: abs(g) < 1e-8), (t_star * 1.001, lambda g: g < 0)):
                m, v, *_ = integrate_moments(pair, proc, omega, sampler, t_max, t, *start)
                assert check(condensation_gap(t, m[0], v[1], alpha, proc, 1.0, 0.25))
            checked += 1
    assert checked >= 9


def test_bad_input():
    with pytest.raises(ValueError, match="alpha"):
        guided_prediction(-1.0, 1.0)
    with pytest.raises(ValueError, match="omega"):
        guided_prediction(0.1, float("nan"))
    with pytest.raises(ValueError, match="sampler"):
        guided_prediction(0.1, 1.0, sampler="em")


#: The finite-size acceptance (issue 20): live simulations against the finite-d theory (docs/theory.md
#: section 12). The gap that remains, measured live (the stored campaign, docs/finite_size.md, has 4 other draws per d):
PROBABILITY_FLOW_AT_K_122 = (
    "measured with 96 draws (seeds 100-115, 200-231, 300-347): alpha = 0.1, omega = 1, ODE, d = 48 (K = 122): "
    "mean_ratio -0.0004 +- 0.0002 (-2.1 SE, 0.04 %), var_par +1.2, var_perp +0.8, t_condensation +0.0 SE. The first "
    "48 draws had t_condensation -2.4, var_par +2.8 and mean_ratio -2.6 SE; 48 more, seeded before their results, "
    "-0.3, -1.1 and +1.9 (t_condensation): that gap was chance (docs/theory.md 12.7), and one statistic of four at "
    "-2.1 SE is what a correct theory gives in 15 % of such cells (the sign-flip null)")


def _case(alpha, omega, sampler, dims, draws=4, known_failure=None):
    """One case of the acceptance test below: ``draws`` draws of the means per d (model seeds 0 to
    draws - 1, or the given tuple of seeds); ``known_failure``, the measured gap, marks it as a strict
    known failure."""
    marks = () if known_failure is None else pytest.mark.xfail(strict=True, reason=known_failure)
    return pytest.param(alpha, omega, sampler, dims, draws, marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("alpha, omega, sampler, dims, draws", [
    # alpha 0.4, omega 1, SDE, d 16: t_condensation -0.0177 +- 0.0082 (-2.2 SE) with 4 draws once the SDE's explicit
    # classes are renewed at every weight (docs/theory.md eq. 106; -0.9 SE before); with 16 draws every statistic
    # is within 2 SE, S too since eq. 107 (0.00017 measured, 0.00013 predicted; -2.0 SE with eq. 105 alone)
    _case(0.4, 1.0, "sde", (16,), draws=16), _case(0.4, 1.0, "ode", (16,)),
    _case(0.2, 1.0, "sde", (16,)),
    # d 32: the shared mean S at -2.7 SE with 4 draws (-0.000027 +- 0.000010, where S itself is 0.00001), 0.0 SE with 16;
    # with 16 draws t_condensation was +0.0083 +- 0.0036 (+2.3 SE) with the frozen environment (+4.4 SE with 64), the
    # SDE's A7, and is +0.0011 +- 0.0034 (+0.3 SE) with eq. 106
    _case(0.2, 1.0, "sde", (32,), draws=16),
    # alpha 0.4, omega 3, SDE, d 16: var_perp +0.0033 +- 0.0014 (+2.4 SE) with the old draws of the means,
    # within 2 SE with the counter-based ones and in the stored campaign (+0.0000 +- 0.0018): chance with 4
    # draws. The SDE's var_perp residual is positive in all 21 positive-guidance cells with d >= 24 (each
    # within 2 SE): a possible 0.4 % gap, mostly gone with eq. 106 (campaign mean z +0.79 -> +0.26; section 12.7)
    _case(0.4, 3.0, "sde", (16,)),
    _case(0.1, 1.0, "ode", (64,)),
    # 16 draws where 4 left a cell outside 2 SE (docs/theory.md section 12.7): within 2 SE with 16, the case
    # passes; outside, it is a strict known failure with its 16-draw size
    # alpha 0.4, omega -0.5, SDE, d 16: the mean_ratio, var_par and posterior gap (+2.7, +3.1, +5.1 SE) was the
    # entrants' backward step (docs/theory.md eq. 98); S was overstated, 0.00058 predicted against 0.00035 +- 0.00007
    # measured (-3.1 SE), until the explicit classes' cells were weighted by their classes and S took the cross terms
    # along the particles' directions (eq. 112): 0.00038 predicted (-0.4 SE), every statistic within 1.1 SE
    _case(0.4, -0.5, "sde", (16,), draws=16),
    # the probability flow under negative guidance, through Heun's two stages (docs/theory.md eqs. 100-102);
    # alpha 0.2, d 32: var_perp -0.0061 +- 0.0025 (-2.4 SE) with 4 draws, -0.0007 +- 0.0014 (-0.5 SE) with 16
    _case(0.4, -0.5, "ode", (16,)),
    # 16 draws each; S about half with eq. 105 (+5.2, +2.9 SE), within 0.8 SE with the back-reaction of eq. 107.
    # d 16 with eq. 112: S +0.00135 +- 0.00057 (+2.4 SE) with seeds 0-15 (0.00577 measured, 0.00442 predicted), where
    # the exact runs of eq. 108 at rho = 1 measure 0.00452 +- 0.00024; 32 more draws (seeds 16-47, fixed before their
    # results) give +0.1 SE, so the case runs on the 48 (docs/theory.md eq. 112)
    _case(0.2, -0.5, "ode", (16,), draws=48),
    _case(0.2, -0.5, "ode", (32,), draws=16),
    # K = 25, d = 16: var_perp -0.0057 +- 0.0015 (omega = 3) and -0.0015 +- 0.0009 (omega = 1) without the draw's shared
    # mean; with it (eq. 105) +0.0010 +- 0.0013 and +0.0001 +- 0.0009, S within 0.2 and 0.4 SE of the measured one
    _case(0.2, 3.0, "ode", (16,), draws=16),
    _case(0.2, 1.0, "ode", (16,), draws=16),
    # K = 122, d = 48: the stored campaign's t_condensation +2.0 SE with 4 draws; re-measured on the 96 draws of
    # docs/finite_size.md's replication (the same seeds, the same runs, bit for bit; about 30 minutes)
    _case(0.1, 1.0, "ode", (48,), draws=tuple(range(100, 116)) + tuple(range(200, 232)) + tuple(range(300, 348)),
          known_failure=PROBABILITY_FLOW_AT_K_122),
])
def test_finite_d_predictions_match_simulation_at_each_d(alpha, omega, sampler, dims, draws):
    """Finite-size acceptance without a fitted allowance: at each d, ``draws`` draws of the means (model
    seeds 0 to draws - 1; 4, or 16 where 4 left the cell outside 2 SE) x 1024
    particles (200 steps, default t_max), each draw against the finite-d prediction at its own K,
    rho = |mu_c|^2/d and t_max (docs/theory.md eqs. 50-63). The mean residual over draws must lie
    within 2 standard errors for mean_ratio, var_par, var_perp and t_condensation, and, where the
    population predicts it (K > d), for the draw's shared mean S that the prediction's var_perp leaves
    out, measured in each simulation from its mean orthogonal to mu_c (eqs. 104-105). t* exists only
    where the mean target posterior reaches 1/2: where the simulation or the prediction does not
    condense in some draw (negative guidance leaves the final posterior near 1/2, and a draw may
    cross it on one side only), the cell compares instead the final mean target posterior, which
    decides it (the simulation's trajectory at its last node, t = 0). The standard error is the
    larger of the between-draw spread and the simulations' jackknife errors, over the draws, with the
    predictions' Monte-Carlo errors in quadrature (as docs/finite_size.md). Each cell is a
    95 % criterion for a normal error (with 4 draws the error is itself uncertain: a t_3 variable
    exceeds 2 in about 14 % of cases, a t_15 in 6 %), so a correct theory can fail a cell by chance; the
    seeds are fixed, and a cell that 4 draws leave outside is re-measured with 16 (seeds 0-15, chosen
    before the results): within 2 SE it passes with 16, outside it is a known failure with its 16-draw
    size. The live runs draw their means with the counter-based generator (docs/theory.md eq. 64), which
    gives other means than the stored campaign's generator for the same seed (target_norm 1.115 live
    against 0.760 stored at alpha = 0.1, d = 32, seed 0), so they are draws independent of
    docs/finite_size.md's."""
    failures = []
    for d in dims:
        cells = {key: [] for key in ("mean_ratio", "var_par", "var_perp", "t_condensation", "target_posterior")}
        shared = []  # the draw's shared mean S of eq. (104), measured against eq. (105) where predicted
        for seed in (range(draws) if isinstance(draws, int) else draws):
            model = cp.Model(d=d, alpha=alpha, seed=seed)
            sim = cp.simulate(model, omega, sampler=sampler, particles=1024, seed=seed)
            pred = cp.predict(model, omega, sampler=cp.Sampler(kind=sampler, t_max=sim.params["t_max"]), d=d,
                              target_norm=model.target_norm, seed=1000 + seed)
            assert sim.times[-1] == 0.0
            final = dict(sim.final)
            mean, error = sim.observable("target_posterior")
            final["target_posterior"], final["target_posterior_stderr"] = mean[-1], error[-1]
            for key, cell in cells.items():
                cell.append((final[key], final[key + "_stderr"], getattr(pred, key), getattr(pred, key + "_stderr")))
            u = model.target_mean / np.linalg.norm(model.target_mean)
            perp = sim.final_mean - (sim.final_mean @ u) * u
            shared.append(((perp @ perp - (d - 1) * final["var_perp"] / 1024) / (d - 1), 0.0, pred.shared_mean,
                           pred.shared_mean_stderr))
        defined = all(value is not None for cell in cells["t_condensation"] for value in cell)
        del cells["target_posterior" if defined else "t_condensation"]
        if shared[0][2] is None:  # the reduction (K <= d) has S inside its var_perp (eq. 63)
            print(f"d={d} shared_mean: {np.mean([row[0] for row in shared]):+.4f} measured, inside the reduction")
        else:
            cells["shared_mean"] = shared
        for key, cell in cells.items():
            sim, se, pred, mc = np.array(cell, dtype=float).T
            res = sim - pred
            var = max(np.var(res, ddof=1), np.mean(se ** 2)) / res.size + np.mean(mc ** 2) / res.size
            digits = 5 if key == "shared_mean" else 4
            line = (f"d={d} {key}: {res.mean():+.{digits}f} +- {np.sqrt(var):.{digits}f} ({res.mean() / np.sqrt(var):+.1f} "
                    f"SE); simulation {sim.mean():.{digits}f}, theory {pred.mean():.{digits}f}")
            print(line)  # the table of docs/theory.md section 12.7 (pytest -rA shows it)
            if not abs(res.mean()) < 2 * np.sqrt(var):
                failures.append(line)
    assert not failures, failures


def test_target_norm_moves_the_condensation_time_as_the_finite_d_scatter_does():
    """t* depends on rho = |mu_c|^2/d through the target's log-weight and q (eq. 44): at d = 64 one
    draw of the means has rho = 1 +- 0.18, which moves t* by about +-0.09 (alpha = 0.1, omega = 1),
    the size of the draw-to-draw scatter of the simulated t*. Conditioning on rho predicts each
    draw: of the draws with model seeds 0-9, the largest and the smallest rho (1.21 and 0.68 with the
    counter-based means) give simulated t* that differ by more than 0.08, and the conditioned theory
    reproduces the difference to 20 %."""
    norms = {seed: cp.Model(d=64, alpha=0.1, seed=seed).target_norm for seed in range(10)}
    rhos, sims = [], []
    for seed in (max(norms, key=norms.get), min(norms, key=norms.get)):
        model = cp.Model(d=64, alpha=0.1, seed=seed)
        rhos.append(model.target_norm)
        sims.append(cp.simulate(model, 1.0, particles=1024, steps=100, seed=seed, t_max=7.0).final["t_condensation"])
    theory = [guided_prediction(0.1, 1.0, t_max=7.0, target_norm=r).t_condensation for r in rhos]
    assert rhos[0] > rhos[1] + 0.15
    assert sims[0] - sims[1] > 0.08
    assert theory[0] - theory[1] == pytest.approx(sims[0] - sims[1], rel=0.2)


def test_predict_reads_the_model_and_guidance_and_names_statistics_as_a_simulation():
    """cp.predict on the objects a simulation takes: the alpha-level theory, the same keys as a
    simulation's summary, and the bulk trajectory of m and q that joins the conditional transport
    at t* continuously."""
    model, guidance = cp.Model(d=32, alpha=0.2, mean_var=1.5, class_var=0.3, process="ve"), cp.Guidance(omega=1.5)
    pred = cp.predict(model, guidance, sampler="sde")
    direct = guided_prediction(0.2, 1.5, process="ve", sampler="sde", mean_var=1.5, class_var=0.3)
    for key in ("mean_ratio", "var_par", "var_perp", "distortion", "t_condensation"):
        assert getattr(pred, key) == getattr(direct, key)
    summary, sim = pred.summary(), cp.simulate(cp.Model(d=8, classes=4), 1.0, particles=16, steps=4).summary()
    assert {"mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "inv_prob", "t_condensation"} <= \
        set(summary) & set(sim)
    ts = pred.t_condensation
    m, q = pred.trajectory([ts * (1 + 1e-9), ts * (1 - 1e-9), 0.0])
    assert m[0] == pytest.approx(m[1], rel=1e-6) and q[0] == pytest.approx(q[1], rel=1e-6)
    assert m[2] == pytest.approx(1.5 * pred.mean_ratio, rel=1e-9)  # rho r at t = 0, rho = mean_var
    ds = pred.to_xarray()
    assert float(ds["var_perp"]) == pred.var_perp and ds["m"].dims == ("time",) and ds.attrs["sampler"] == "sde"
    with pytest.raises(ValueError, match="rule"):
        cp.predict(model, cp.Guidance(omega=1.0, rule="adg"))
    with pytest.raises(ValueError, match="model"):
        cp.predict(cp.Model(means=np.eye(3)), 1.0)


@pytest.mark.parametrize("sampler", ["ode", "sde"])
@pytest.mark.parametrize("omega", [-0.5, 0.0, 1.0, 4.0])
def test_the_condensation_boundary_separates_condensing_from_dense_alphas(sampler, omega):
    """alpha_c(omega) = max_t alpha_0(t) (eq. 49): just below it t* exists, just above it it does
    not (1e-4 on either side, far above the root's float64 resolution)."""
    alpha_c = guided_prediction(0.1, omega, sampler=sampler).alpha_condensation
    below, above = (guided_prediction(alpha_c + delta, omega, sampler=sampler) for delta in (-1e-4, 1e-4))
    assert below.t_condensation is not None and above.t_condensation is None
    assert above.mean_ratio == pytest.approx(guided_prediction(alpha_c + 0.3, omega, sampler=sampler).mean_ratio,
                                             rel=1e-12)  # dense: the guided bulk's final law, whatever alpha


def test_without_guidance_the_condensation_boundary_is_alpha_max():
    """At omega = 0 the condensation boundary is eq. (22)'s alpha_max; the theory's start at SNR 1e-10
    leaves r(0) = 1 - 4.5e-6, which moves it by 4e-6: tolerance 1e-5. Guidance moves it out,
    negative guidance in, and the unconditional score (omega = -1) never condenses on the target."""
    assert guided_prediction(0.3, 0.0).alpha_condensation == pytest.approx(alpha_max(1.0, 0.25), abs=1e-5)
    boundary = [guided_prediction(0.3, w).alpha_condensation for w in (-1.0, -0.5, 0.0, 1.0, 5.0)]
    assert boundary[0] < 1e-12 and np.all(np.diff(boundary) > 0) and boundary[-1] > 1.2


def test_alpha_at_free_entropy_inverts_the_free_entropy():
    """eq. (49) inverts eq. (20) on both branches, to 1e-10."""
    for alpha in (0.05, 0.3, 0.9):
        for q in (0.5, 1.2, 3.0):
            for t in (0.1, 0.6, 2.0):
                others = others_free_entropy(alpha, q, t)
                back, annealed = alpha_at_free_entropy(others.phi, q, t)
                assert back == pytest.approx(alpha, rel=1e-10) and annealed == (others.phase == "annealed")
