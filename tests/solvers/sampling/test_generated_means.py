"""Simulations whose class means are generated inside the kernel (docs/theory.md eq. 64): the numbers
of stored means, the automatic switch under the memory budget, and memory that does not grow with K."""

import math
import tracemalloc

import numpy as np
import pytest

import cfgphase as cp
from cfgphase.solvers.score.fields import means_mode

SMALL = dict(particles=64, steps=12, seed=5)


def _same(a, b):
    return a == b or (a is None and b is None) or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("sampler", ["ode", "sde"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_generated_and_stored_means_give_the_same_simulation(sampler, dtype):
    """Same seed, same numbers: every final statistic, trajectory and final moment, bit for bit."""
    runs = [cp.simulate(cp.Model(d=8, classes=500, seed=3), 2.0, sampler=sampler, dtype=dtype, means=means,
                        **SMALL) for means in ("stored", "generated")]
    stored, generated = runs
    assert (stored.params["means"], generated.params["means"]) == ("stored", "generated")
    assert all(_same(stored.final[k], generated.final[k]) for k in stored.final), stored.final
    np.testing.assert_array_equal(stored.final_mean, generated.final_mean)
    for name in stored.trajectory:
        np.testing.assert_array_equal(stored.trajectory[name], generated.trajectory[name])
    assert generated.summary()["means"] == "generated" and generated.to_xarray().attrs["means"] == "generated"


def test_auto_generates_the_means_that_exceed_the_memory_budget():
    big = cp.Model(d=8, classes=500, seed=3, memory=500 * 8 * 8 - 1)
    small = cp.Model(d=8, classes=500, seed=3, memory=500 * 8 * 8)
    assert (means_mode(big), means_mode(small)) == ("generated", "stored")
    res = cp.simulate(big, 1.0, **SMALL)
    assert res.params["means"] == "generated" and "mixture" not in big.__dict__
    assert res.final == cp.simulate(small, 1.0, **SMALL).final
    with pytest.raises(ValueError, match="do not fit"):
        cp.simulate(big, 1.0, means="stored", **SMALL)
    # means that cannot be generated are stored whatever the budget
    assert means_mode(cp.Model(d=8, classes=5, modes=2, memory=8)) == "stored"


@pytest.mark.parametrize("means, model, match", [
    ("fast", cp.Model(d=4, classes=5), "means must be one of"),
    (None, cp.Model(d=4, classes=5), "means must be one of"),
    ("generated", cp.Model(d=4, classes=5, weights=np.arange(1.0, 6.0)), "means"),
    ("generated", cp.Model(d=4, classes=5, modes=2), "means"),
    ("generated", cp.Model(means=np.eye(4)), "means"),
])
def test_bad_means_are_refused_naming_means(means, model, match):
    with pytest.raises(ValueError, match=match):
        cp.simulate(model, 1.0, means=means, **SMALL)


def test_generated_memory_does_not_grow_with_the_number_of_classes():
    """Traced peak of a generated run (the kernel's buffers, particles, observables) at K = 2 10^4,
    2 10^5, 2 10^6 (beyond the default chunk, 4096 classes here, and the 16384 of a block of the second
    moment's sum): flat in K, and a small fraction of the 64 MB that the largest K's stored means take.
    The second moment's sum (RandomMeans.sum_of_square_norms) gives each of its threads one buffer of
    SUM_BLOCK means; whether the two threads' buffers are alive at once depends on when each thread starts
    (at K = 2 10^4 each has one block of 0.1 ms), so one such buffer is allowed between the Ks."""
    from cfgphase.physics.disorder import SUM_BLOCK

    peaks = {}
    for K in (2 * 10**4, 2 * 10**5, 2 * 10**6):
        model = cp.Model(d=4, classes=K, seed=1)
        run = dict(particles=16, steps=3, seed=0, means="generated", threads=1)
        cp.simulate(model, 1.0, **run)  # compile outside the measurement
        tracemalloc.start()
        cp.simulate(cp.Model(d=4, classes=K, seed=1), 1.0, **run)
        peaks[K] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert max(peaks.values()) < 1.1 * min(peaks.values()) + SUM_BLOCK * 4 * 8 + 2**14, peaks
    assert peaks[2 * 10**6] < 0.05 * 2 * 10**6 * 4 * 8, peaks
