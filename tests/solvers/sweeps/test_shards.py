"""One simulation sharded over Dask workers gives the single-process numbers (solvers/sweeps/shards.py).

Tolerance: 1e-12 relative (absolute 1e-15 for values near 0) on every final statistic, every trajectory
group mean and the final per-coordinate moments. The shards see the same noise and the same means, and
every statistic is computed once from all particles, so what may differ is rounding only: the kernel
blocks its rows by the particles and threads of each process, and the trajectory's group sums are added
shard by shard. (At these sizes the runs measured bit for bit equal.)
"""

import numpy as np
import pytest

import cfgphase as cp
from cfgphase.solvers.sweeps.shards import dask_client

pytest.importorskip("distributed")
RUN = dict(particles=64, steps=10, seed=5)


@pytest.fixture(scope="module")
def client():
    with dask_client(workers=2) as c:
        yield c


def _sharded(client, model, guidance, **options):
    return cp.simulate(model, guidance, client=client, threads=1, **options)


def assert_same_numbers(single, sharded):
    assert sharded.status == single.status == 0
    assert sharded.final.keys() == single.final.keys()
    for key, value in single.final.items():
        if value is None:
            assert sharded.final[key] is None, key
        else:
            np.testing.assert_allclose(sharded.final[key], value, rtol=1e-12, atol=1e-15, err_msg=key)
    assert sharded.trajectory.keys() == single.trajectory.keys()
    for key, groups in single.trajectory.items():
        np.testing.assert_allclose(sharded.trajectory[key], groups, rtol=1e-12, atol=1e-15, err_msg=key)
    np.testing.assert_array_equal(sharded.times, single.times)
    np.testing.assert_array_equal(sharded.grid, single.grid)
    assert {k: v for k, v in sharded.params.items() if k not in ("threads", "shards")} == \
        {k: v for k, v in single.params.items() if k != "threads"}
    for name in ("final_mean", "final_var"):
        np.testing.assert_allclose(getattr(sharded, name), getattr(single, name), rtol=1e-12, atol=1e-15)
    assert sharded.params["shards"] == 2


@pytest.mark.parametrize("sampler", ["ode", "sde"])
@pytest.mark.parametrize("means", ["stored", "generated"])
def test_sharded_run_equals_single_process_run(client, sampler, means):
    model = cp.Model(d=8, classes=16, seed=3)
    single = cp.simulate(model, 1.0, sampler=sampler, means=means, threads=1, **RUN)
    assert_same_numbers(single, _sharded(client, model, 1.0, sampler=sampler, means=means, **RUN))


def test_a_model_built_from_arrays_is_scattered_and_gives_the_same_numbers(client):
    """Given means (and the copy statistics of a data model, which need every training point)."""
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((40, 8)), np.repeat(np.arange(4), 10)
    model = cp.Model.from_data(x, labels, width=0.05, target=1)
    save = cp.SaveAt(copy_ratio=0.5)
    single = cp.simulate(model, 1.0, sampler="sde", save=save, threads=1, **RUN)
    sharded = _sharded(client, model, 1.0, sampler="sde", save=save, **RUN)
    assert single.final["copy_fraction"] is not None
    assert_same_numbers(single, sharded)


def test_the_api_starts_a_local_cluster_for_the_call():
    model = cp.Model(d=8, classes=16, seed=3)
    single = cp.simulate(model, 2.0, sampler="sde", means="generated", **RUN)
    assert_same_numbers(single, cp.simulate(model, 2.0, sampler="sde", means="generated", workers=2, **RUN))


@pytest.mark.parametrize("options, name", [(dict(workers=0), "workers"), (dict(workers=1.5), "workers"),
                                           (dict(workers=2, scheduler="tcp://127.0.0.1:1"), "workers"),
                                           (dict(scheduler="tcp://127.0.0.1:1", client=object()), "scheduler"),
                                           (dict(workers=2, particles=1), "particles")])
def test_bad_input_names_the_parameter_before_any_cluster_starts(options, name):
    with pytest.raises(ValueError, match=name):
        cp.simulate(cp.Model(d=8, classes=4), 1.0, **options)
