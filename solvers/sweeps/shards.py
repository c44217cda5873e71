r"""One simulation beyond one machine: its particles sharded over Dask workers.

``simulate(..., workers=N)`` starts a Dask ``LocalCluster`` of N worker processes for the call;
``simulate(..., scheduler="tcp://HOST:8786")`` uses an existing Dask scheduler (``dask scheduler`` and
``dask worker``, or dask-jobqueue on a batch system). Shard i integrates particles
:math:`[a_i, a_{i+1})` (one shard per worker, cfgphase.solvers.sampling.driver.run_block) and
returns its final particles, their float64 evaluation, their rows of the exact reference sample and
the per-group sums of the trajectory observables; the client puts the shards back in particle
order and computes every statistic once (driver.assemble), as a run in one process does.

Why particles, not classes (docs/architecture.md): a particle's trajectory depends only on its own
noise and on the shared class means, so shards never talk to each other; sharding the K classes
would need a log-sum-exp merge of every score evaluation, two per step, across the network.

What travels: the model, not its means. A random model's means are a counter-based function of
(seed, class, coordinate) (cfgphase.physics.disorder), so a worker redraws them from the seed (stored)
or generates them in the kernel (generated); a model built from arrays (data, given means, a
hierarchy) is scattered to the workers once. The noise of particle i is the same in every shard
layout: the initial draw and the exact reference sample are drawn for all particles and the shard's
rows kept, and the Brownian path is restricted to those rows (cfgphase.solvers.sampling.brownian).
The numbers agree with the single-process run to rounding (tests/solvers/sweeps/test_shards.py):
the kernel blocks its rows by the particles and threads of each process, and the group sums of the
trajectory are added per shard.

Dask's worker processes exit when the process that started them dies (a pipe to the parent), so a
killed ``cfgphase simulate --workers N`` leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
import uuid

from cfgphase.solvers.sampling import driver

#: Seconds to wait for the first worker of a scheduler that has none yet.
WORKER_SECONDS = 30


def simulate(model, guidance=None, *, workers=None, scheduler=None, client=None, sampler="ode", steps=None,
             t_max=None, particles=1024, seed=0, save=None, dtype="float64", threads=None, progress=False,
             time_limit=None, means="auto"):
    """Guided sampling of ``model`` with exact scores, in this process or sharded over Dask workers.

    Every argument but ``workers``, ``scheduler`` and ``client`` is that of
    :func:`cfgphase.solvers.sampling.driver.simulate`, with the same meaning and the same numbers.
    At most one of these three says where the particles run, one shard per Dask worker:

    workers : int >= 1, optional
        A Dask ``LocalCluster`` of this many worker processes, started and closed for the call;
        ``threads`` (kernel threads per worker) defaults to the usable cores / workers.
    scheduler : str, optional
        The workers of the Dask scheduler at this address (``tcp://HOST:8786``); ``threads`` defaults
        to each worker's usable cores.
    client : dask.distributed.Client, optional
        The workers of a client the caller holds (e.g. of a dask-jobqueue cluster), left open.

    With none of them the run is :func:`~cfgphase.solvers.sampling.driver.simulate` in this process.
    ``progress`` shows one bar over the steps of every shard. SIGINT and SIGTERM cancel the shards
    and raise :class:`cfgphase.solvers.sweeps.signals.Interrupted`.
    """
    from cfgphase.solvers.sweeps.runner import check_workers

    options = dict(sampler=sampler, steps=steps, t_max=t_max, particles=particles, seed=seed, save=save,
                   dtype=dtype, threads=threads, progress=progress, time_limit=time_limit, means=means)
    where = [name for name, value in (("workers", workers), ("scheduler", scheduler), ("client", client))
             if value is not None]
    if not where:
        return driver.simulate(model, guidance, **options)
    if len(where) > 1:
        raise ValueError(f"{where[0]}: give one of workers (a local cluster), scheduler or client, got {where}")
    check_workers(workers)
    checked = driver.check_simulation(model, guidance, sampler=sampler, steps=steps, t_max=t_max,
                                      particles=particles, seed=seed, time_limit=time_limit, means=means)
    if client is not None:
        return _simulate_on(client, model, checked, **options)
    with dask_client(workers, scheduler) as client:
        return _simulate_on(client, model, checked, **dict(options, threads=kernel_threads(workers, threads)))


def kernel_threads(workers, threads=None):
    """Kernel threads per worker: ``threads`` if given; for a LocalCluster of ``workers`` processes
    the usable cores shared out between them; else None (each worker's usable cores)."""
    if threads is not None or workers is None:
        return threads
    from cfgphase.solvers.score.blas import usable_cores

    return max(1, usable_cores() // workers)


@contextlib.contextmanager
def dask_client(workers=None, scheduler=None):
    """A Dask client of a new ``LocalCluster`` with ``workers`` processes (one task at a time each,
    closed on exit) or of the scheduler at ``scheduler`` (ValueError naming it if unreachable)."""
    from cfgphase.solvers.sweeps.runner import _connect, check_workers

    check_workers(workers)
    if scheduler is not None:
        client = _connect(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    import logging

    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("workers: dask.distributed is not installed (pip install 'cfgphase[dask]')") from None
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster, set_as_default=False) as client:
        yield client


def _simulate_on(client, model, checked, *, sampler, steps, t_max, particles, seed, save, dtype, threads, progress,
                time_limit, means):
    """Run one simulation sharded over the workers of Dask ``client``: one shard per worker.

    ``checked`` is (guidance, sampler, means mode) from driver.check_simulation; the other arguments
    are those of :func:`simulate`. Returns the :class:`~cfgphase.solvers.sampling.results.Simulation`."""
    from cfgphase.physics.model import Model
    from cfgphase.solvers.score.fields import field_for
    from cfgphase.solvers.sweeps.signals import Interrupted, Stop, stop_on_signals

    start = time.perf_counter()
    guidance, sampler, mode = checked
    # the client's field serves the final statistics only (target mean, class variance, ...): it never
    # evaluates, so a random model's means are generated there rather than stored
    local = field_for(model, dtype=dtype, threads=threads,
                      means="generated" if isinstance(model, Model) and model.can_generate else "stored")
    addresses = sorted(_workers(client))
    shards = min(len(addresses), particles)
    record = driver.simulation_record(model, local, dtype, threads)
    record.update(means=mode if isinstance(model, Model) else None, shards=shards)
    run = driver.plan_run(local, guidance, sampler, particles=particles, seed=seed, save=save, params=record,
                          time_limit=time_limit, class_labels=getattr(model, "data_labels", None))
    cuts = [particles * i // shards for i in range(shards + 1)]
    topic = f"cfgphase-progress-{uuid.uuid4().hex}"
    bar = _bar(client, topic, run.steps * shards) if progress else None
    shipped = _shipped(model, client)
    options = dict(dtype=dtype, threads=threads, means=mode, particles=particles, seed=seed, save=save,
                   time_limit=time_limit)
    futures = [client.submit(_shard, shipped, guidance, sampler, options, cuts[i], cuts[i + 1],
                             topic if progress else None, pure=False, workers=[addresses[i]],
                             allow_other_workers=True) for i in range(shards)]
    try:
        with stop_on_signals() as stop:
            try:
                blocks = client.gather(futures)
            except (KeyboardInterrupt, Stop) as err:
                signum = stop.signum or getattr(err, "signum", signal.SIGINT)
                raise Interrupted(signum, f"{signal.Signals(signum).name}: stopped; the shards were cancelled "
                                          "and nothing was written") from None
    finally:
        client.cancel(futures)
        if bar is not None:
            client.unsubscribe_topic(topic)
            bar.close()
    return driver.assemble(local, run, blocks, start)


def _workers(client):
    """Addresses of the client's workers, waiting up to WORKER_SECONDS for the first one."""
    try:
        client.wait_for_workers(1, timeout=WORKER_SECONDS)
    except TimeoutError:
        raise ValueError(f"scheduler: no worker joined within {WORKER_SECONDS} s") from None
    return list(client.scheduler_info(n_workers=-1)["workers"])


def _shipped(model, client):
    """What the workers receive for ``model``: a random model as its parameters and seed (each worker
    redraws the means), anything built from arrays scattered to every worker once."""
    from cfgphase.physics.model import Model

    if isinstance(model, Model) and model.means is None:
        return dataclasses.replace(model)  # a fresh copy: no means drawn in this process travel with it
    return client.scatter(model, broadcast=True, hash=False)


def _shard(model, guidance, sampler, options, start, stop, topic):
    """In a worker: particles ``start`` .. ``stop - 1`` of the run (a driver.Block)."""
    from cfgphase.solvers.score.fields import field_for

    field = field_for(model, dtype=options["dtype"], threads=options["threads"], means=options["means"])
    run = driver.plan_run(field, guidance, sampler, particles=options["particles"], seed=options["seed"],
                          save=options["save"], time_limit=options["time_limit"])
    on_step = None
    if topic is not None:
        from dask.distributed import get_worker

        worker = get_worker()

        def on_step():
            worker.log_event(topic, 1)

    return driver.run_block(field, run, start, stop, on_step)


def _bar(client, topic, total):
    """One tqdm bar over the steps of every shard, advanced by the shards' events on ``topic``."""
    import sys

    from tqdm import tqdm

    bar = tqdm(total=total, delay=2.0, file=sys.stderr, unit="step", desc="simulate", mininterval=0.5)
    client.subscribe_topic(topic, lambda event: bar.update(event[1]))
    return bar
