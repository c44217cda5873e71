"""Learn to Guide on the exact mixture (cfgphase.solvers.design.learned, docs/theory.md eq. 46).

Setting: 8-dimensional mixture of 4 classes (class variance 0.25, means from seed 1), rectified
flow, 20 DDIM steps. Tolerances:

- Exact scores: the per-pair optimum is 0 in expectation; with 256 samples per pair the noise of
  the energy distance moves a single pair's optimum by at most a few tenths, and the model
  averages over pairs. Bound 0.1 on the learned weight everywhere, against about 1 when the
  conditional model is degraded (so the test separates the two cases by a factor 10).
- Mixing with the unconditional model at rate lambda is undone exactly by omega = lambda/(1-lambda)
  (eq. 46a): the learned median over the training pairs must be within 0.25 of it (the
  per-pair optima scatter by about 0.2 at 256 samples).
- Comparisons of energy distance: baselines tuned on seed 10, all evaluated on seeds 0-2; the
  learned schedule must be lower by more than 3 standard errors of the seed-to-seed difference.
"""

import numpy as np
import pytest

from cfgphase.physics.mixture import GaussianMixture
from cfgphase.physics.processes import get_process
from cfgphase.physics.schedules import bind_schedule, make_schedule
from cfgphase.solvers.score.fields import DegradedField, MixtureField
from cfgphase.solvers.design.learned import GuidanceModel, learn_guidance
from cfgphase.solvers.sampling.observables import energy_distance, energy_statistic
from cfgphase.solvers.design.optimal import PUBLISHED_WINDOW, tune_by_simulation
import cfgphase as cp
from cfgphase.solvers.sampling.timegrid import time_grid

FLOW = get_process("flow")
GRID = time_grid(FLOW, 20, 1.0 - 1e-3, 0.0, kind="uniform")


@pytest.fixture(scope="module")
def exact():
    return MixtureField(GaussianMixture.random(8, classes=4, class_var=0.25, seed=1), "flow", target=0)


def test_exact_scores_learn_no_guidance(exact):
    learned = learn_guidance(exact, pairs=8, samples=128)
    assert learned.final_loss <= learned.initial_loss
    t = np.linspace(0.1, 0.99, 12)
    weights = [learned.model(0, s, t_) for t_ in t for s in np.linspace(0.0, t_ - 0.05, 5)]
    weights += [learned.model(0, s, t_) for t_, s in zip(GRID[:-1], GRID[1:])]  # the sampler's own steps
    assert max(weights) <= 0.1


@pytest.mark.slow  # about a minute: 16 pairs x 256 samples of the energy loss over the optimiser
def test_mixing_with_the_unconditional_is_undone_by_the_exact_weight(exact):
    mix = 0.5
    learned = learn_guidance(DegradedField(exact, mix=mix), pairs=16, samples=256)
    assert abs(np.median(learned.weights()) - mix / (1 - mix)) < 0.25


@pytest.mark.slow  # about a minute: 16 pairs x 256 samples of the energy loss over the optimiser
def test_learned_guidance_beats_best_constant_and_interval_on_a_degraded_model(exact):
    field = DegradedField(exact, shrink=0.3, mix=0.3)
    learned = learn_guidance(field, pairs=16, samples=256)
    assert np.mean(learned.weights()) > 0.5
    families = {"constant": lambda A: A,
                "interval": lambda A: bind_schedule(make_schedule("interval", omega=A, sigma_lo=PUBLISHED_WINDOW[0],
                                                                  sigma_hi=PUBLISHED_WINDOW[1]), FLOW)}
    tuned = tune_by_simulation(field, families, GRID, (0.25, 0.5, 1.0, 1.5, 2.0, 3.0), method="ddim",
                               particles=1024, seeds=(10,))
    seeds = (0, 1, 2)
    schedules = {"learned": learned.model.schedule(0), **{n: s for n, (_, s) in tuned.items()}}
    sampler = cp.Sampler("ode", method="ddim", grid=GRID)
    ed = {n: np.array([cp.integrate(field, s, sampler, particles=1024, seed=k, save=cp.SaveAt(times=[0.0]))
                       .final["energy_distance"] for k in seeds]) for n, s in schedules.items()}
    for name in tuned:
        diff = ed[name] - ed["learned"]
        assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(len(seeds)), (name, ed)


def test_l2_loss_also_learns_positive_weights(exact):
    learned = learn_guidance(DegradedField(exact, mix=0.5), loss="l2", pairs=16, samples=256)
    assert 0.5 < np.median(learned.weights()) < 1.5


def test_degraded_field_reduces_to_the_exact_field(exact, rng=np.random.default_rng(0)):
    x = rng.standard_normal((50, 8))
    for t in (0.2, 0.7):
        a, b = exact.evaluate(x, t), DegradedField(exact).evaluate(x, t)
        np.testing.assert_array_equal(np.broadcast_to(a.cond, x.shape), np.broadcast_to(b.cond, x.shape))
        mixed = DegradedField(exact, mix=0.25).evaluate(x, t)
        np.testing.assert_allclose(mixed.cond, 0.75 * a.cond + 0.25 * a.uncond, rtol=0, atol=1e-14)


def test_energy_distance_is_unbiased_in_law_and_positive_for_a_shift(rng=np.random.default_rng(1)):
    """The U-statistic has mean 0 for equal laws: 60 replicates, within 3 standard errors."""
    same = np.array([energy_statistic(rng.standard_normal((100, 3)), rng.standard_normal((100, 3)), 1.75)
                     for _ in range(60)])
    assert abs(same.mean()) < 3 * same.std(ddof=1) / np.sqrt(same.size)
    shifted = np.array([energy_statistic(rng.standard_normal((100, 3)), rng.standard_normal((100, 3)) + 0.5, 1.75)
                        for _ in range(60)])
    assert shifted.mean() > 10 * shifted.std(ddof=1) / np.sqrt(shifted.size)
    x, y = rng.standard_normal((50, 3)), rng.standard_normal((40, 3))  # beta = 1: the observable's estimator
    labels = np.arange(50) % 5
    grouped = energy_distance(x, y, labels, np.bincount(labels))[0]
    assert energy_statistic(x, y) == pytest.approx(grouped, rel=1e-12, abs=1e-14)


def test_guidance_model_is_relu_of_hats():
    model = GuidanceModel(np.array([0.0, 0.5, 1.0]), {0: np.array([0.1, 1.0, 2.0, -1.0, 0.5])})
    assert model(0, 0.0, 0.0) == pytest.approx(0.1 + 1.0)
    assert model(0, 0.25, 0.5) == pytest.approx(0.1 + 2.0 + 0.5 * 0.25)
    assert model(0, 0.5, 0.75) == pytest.approx(0.1 + 0.5 * 2.0 - 0.5 * 1.0 + 0.5 * 0.25)
    assert model(0, 0.9, 1.0) == 0.0  # 0.1 - 1 + 0.05 < 0: the ReLU


@pytest.mark.parametrize("kwargs, name", [(dict(loss="kl"), "loss"), (dict(beta=2.0), "beta"),
                                          (dict(pairs=1), "pairs"), (dict(min_step=0.0), "min_step")])
def test_bad_parameters_name_themselves(exact, kwargs, name):
    with pytest.raises(ValueError, match=name):
        learn_guidance(exact, **kwargs)


@pytest.mark.parametrize("kwargs, name", [(dict(shrink=1.5), "shrink"), (dict(mix=-0.1), "mix"),
                                          (dict(inflate=0.0), "inflate")])
def test_bad_degradations_name_themselves(exact, kwargs, name):
    with pytest.raises(ValueError, match=name):
        DegradedField(exact, **kwargs)
