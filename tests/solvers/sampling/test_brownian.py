"""The run's noise: a Brownian path that is a function of (seed, time), and common random numbers.

Statistical tolerances: with n independent standard normals the sample mean has standard error
1/sqrt(n) and the sample variance sqrt(2/n); the checks allow 5 of them (a false alarm once in
about 3 million runs, with the seeds fixed).
"""

import numpy as np
import pytest

import cfgphase as cp
from cfgphase.solvers.sampling.brownian import BrownianPath

CLOCK = np.geomspace(1e-7, 4.0, 80)  # a sampler's clock spans many decades near the start


def _standardised_increments(path, us):
    w = np.array([path(u) for u in us])
    return np.diff(w, axis=0, prepend=0.0) / np.sqrt(np.diff(us, prepend=0.0))[:, None]


def test_increments_are_independent_standard_normals():
    z = _standardised_increments(BrownianPath(1, (20000,), 4.0), CLOCK)
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    lag = np.mean(z[1:] * z[:-1])  # neighbouring steps are uncorrelated
    assert abs(lag) < 5 / np.sqrt(z[1:].size)


def test_the_path_is_a_function_of_time_not_of_the_grid():
    full = BrownianPath(3, (64, 4), 4.0)
    values = {u: full(u) for u in CLOCK}
    coarse = BrownianPath(3, (64, 4), 4.0)  # every third node
    for u in CLOCK[::3]:
        np.testing.assert_array_equal(coarse(u), values[u])
    fine = BrownianPath(3, (64, 4), 4.0)  # the same nodes with one more between each pair
    for u in np.union1d(CLOCK, np.sqrt(CLOCK[1:] * CLOCK[:-1])):
        w = fine(u)
        if u in values:
            np.testing.assert_array_equal(w, values[u])
    other_seed = BrownianPath(4, (64, 4), 4.0)
    assert not np.array_equal(other_seed(CLOCK[40]), values[CLOCK[40]])


def test_two_queries_in_one_leaf_keep_the_exact_law():
    """Steps finer than the tree's resolution (tol = 2^-6 relative) are bridged exactly."""
    us = 1.0 + 1e-4 * np.arange(1, 60)  # relative steps of 1e-4: consecutive nodes share leaves
    z = _standardised_increments(BrownianPath(5, (20000,), 4.0), np.concatenate([[1.0], us]))[1:]
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)


def test_bad_path_arguments():
    with pytest.raises(ValueError, match="horizon"):
        BrownianPath(0, (2,), 0.0)
    with pytest.raises(ValueError, match="seed"):
        BrownianPath(-1, (2,), 1.0)
    with pytest.raises(ValueError, match="horizon"):
        BrownianPath(0, (2,), 1.0)(2.0)


@pytest.mark.parametrize("other", [dict(steps=80), dict(guidance=cp.Guidance(omega=1.0, schedule="interval",
                                                                                sigma_lo=0.1, sigma_hi=5.0))])
def test_shared_noise_makes_differences_between_runs_precise(other):
    """Common random numbers: the same model and noise seed with another step count (other grid
    nodes) or another schedule (extra nodes at its breakpoints) is driven by the same Brownian
    path, so the difference of the final mean ratio varies over seeds at least 10 times less than
    with independent noise (measured: about 3e4 times less)."""
    model, seeds = cp.Model(d=16, classes=64, seed=0), 8

    def mean_ratio(seed, steps=50, guidance=1.0):
        return cp.simulate(model, guidance, sampler="sde", steps=steps, particles=128, seed=seed,
                           save=cp.SaveAt(times=[0.0])).final["mean_ratio"]

    a = np.array([mean_ratio(s) for s in range(seeds)])
    b = np.array([mean_ratio(s, **other) for s in range(2 * seeds)])
    shared, independent = a - b[:seeds], a - b[seeds:]
    assert independent.var(ddof=1) > 10 * shared.var(ddof=1)


def test_rows_of_a_path_are_those_rows_of_the_full_path():
    """A shard of particles [a, b) of a sharded run sees the noise of the whole run (bit for bit)."""
    full = BrownianPath(7, (64, 3), 4.0)
    part = BrownianPath(7, (64, 3), 4.0, rows=(20, 45))
    for u0, u1 in zip(CLOCK[:-1], CLOCK[1:]):
        np.testing.assert_array_equal(part.normal(u0, u1), full.normal(u0, u1)[20:45])
    for rows in ((3, 3), (-1, 4), (0, 65)):
        with pytest.raises(ValueError, match="rows"):
            BrownianPath(7, (64, 3), 4.0, rows=rows)
