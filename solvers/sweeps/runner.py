"""Phase-diagram sweeps: mean-field theory on a grid, simulations on a coarse grid, one HDF5 file.

A sweep is a :class:`cfgphase.solvers.sweeps.spec.SweepSpec` (from a TOML file or command-line ranges).
The work is split into units: one theory unit per (schedule parameters, sampler), covering every
alpha with one bulk integration (cfgphase.solvers.theory.meanfield.guided_predictions), and one simulation unit
per (alpha, schedule parameters, sampler, d, seed). Workers (a local process pool or a Dask
cluster) compute units (units.py) and return their results; the one writer process appends each result to
a journal (one JSON line, fsync'ed) and rewrites the HDF5 file (state.py) atomically (temporary file, then
rename) at the end and, in between, at most every ``FLUSH_SECONDS`` and at most ``FLUSH_SHARE`` of the
time (a 101 x 121 x 2 grid takes about 1 s to write). A SIGKILL at any moment therefore leaves
the previous complete file and a journal holding every finished unit; ``resume`` replays it.
The schema is documented in data/README.md.
"""

from __future__ import annotations

import numbers
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cfgphase.solvers.sweeps.signals import Interrupted, Stop, stop_on_signals
from cfgphase.solvers.sweeps.spec import SweepSpec
from cfgphase.solvers.sweeps.state import (SweepState, append_journal, journal_path, read_state, replay_journal,
                                           spec_hash, write_file)
from cfgphase.solvers.sweeps.units import run_unit, units

#: Shortest interval between two rewrites of the file during a sweep (the journal holds every result).
FLUSH_SECONDS = 2.0
#: Largest share of the writer's time spent rewriting the file: the next rewrite waits at least this many
#: times as long as the last one took divided by the share (the main job's 30 rewrites of about 1.1 s
#: had taken 22 % of its 150 s).
FLUSH_SHARE = 0.1


def run_sweep(spec, path, resume=False, overwrite=False, workers=None, scheduler=None, progress=True):
    """Run (or resume) a sweep and write it to ``path``; returns a summary dict.

    ``workers``: local processes (default: usable cores / simulation threads); ``scheduler``: the
    address of a Dask distributed scheduler (then ``workers`` is ignored), reached before anything
    is written. One writer per file (cfgphase.solvers.io.hdf5.writer_lock). SIGINT and SIGTERM stop
    the sweep within seconds: running and queued points are abandoned (their worker processes
    killed), every finished point is saved, and :class:`Interrupted` is raised.
    """
    from cfgphase.solvers.io.hdf5 import check_output_path, writer_lock

    if not str(path):
        raise ValueError("out: empty file name")
    path = Path(path)
    if not (resume and path.exists()):
        if path.exists() and not overwrite:
            raise ValueError(f"out: {path} exists (pass --resume to continue it or --overwrite to replace it)")
        check_output_path(path, overwrite=True)
    check_workers(workers)
    if resume and path.exists():
        read_state(path, spec)  # a damaged file, or another grid: refused before anything is locked
    elif spec is None:
        raise ValueError("resume: no file to resume and no grid given")
    client = _connect(scheduler) if scheduler is not None else None
    try:
        with writer_lock(path):
            return _run_locked(spec, path, resume, workers, client, progress)
    finally:
        if client is not None:
            client.close()


def _run_locked(spec, path, resume, workers, client, progress):
    from cfgphase.solvers.io.hdf5 import remove_stale_temporaries

    now = _now()
    remove_stale_temporaries(path)
    if resume and path.exists():
        spec, state, started = read_state(path, spec)
        replayed = replay_journal(path, state, spec_hash(spec))
    else:
        journal_path(path).unlink(missing_ok=True)
        state, started, replayed = SweepState(spec), now, 0
    attrs = dict(started=started, updated=now, status="running")
    write_file(path, state, attrs)
    journal_path(path).unlink(missing_ok=True)  # everything replayed is now in the file
    all_units = units(spec)
    todo = [u for u in all_units if not state.is_done(u)]
    wall = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=len(all_units), initial=len(all_units) - len(todo), unit="unit", disable=not progress,
               desc="phase-diagram", mininterval=0.5)
    last, stopped, key = time.perf_counter(), None, spec_hash(spec)
    interval = FLUSH_SECONDS
    with open(journal_path(path), "a") as journal, bar, stop_on_signals() as stop:
        results = _execute(spec, todo, workers, client)
        try:
            for result in results:
                state.apply(result)
                append_journal(journal, dict(result, spec=key))
                bar.update()
                if time.perf_counter() - last > interval:
                    began = time.perf_counter()
                    write_file(path, state, dict(attrs, updated=_now()))
                    journal.truncate(0)
                    journal.seek(0)
                    last = time.perf_counter()
                    interval = max(FLUSH_SECONDS, (last - began) / FLUSH_SHARE)
        except (KeyboardInterrupt, Stop) as err:
            stopped = stop.signum or getattr(err, "signum", signal.SIGINT)
        finally:
            results.close()  # cancels what is queued and kills the workers of an abandoned pool
    done, failed = state.counts()
    wall = time.perf_counter() - wall
    status = "complete" if stopped is None else "interrupted"
    write_file(path, state, dict(attrs, updated=_now(), status=status, wall_time=wall))
    journal_path(path).unlink(missing_ok=True)
    if stopped is not None:
        name = signal.Signals(stopped).name
        raise Interrupted(stopped, f"{name}: stopped; {done} of {state.total()} points are saved in {path}; "
                                   f"continue with: cfgphase phase-diagram --out {path} --resume")
    return dict(path=Path(path), units=len(all_units), computed=len(todo), points_done=done, points_failed=failed,
                wall_time=wall, replayed=replayed)


def _now():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


#: Seconds to wait for a Dask scheduler before the sweep is refused.
CONNECT_SECONDS = 10


def check_workers(workers):
    """ValueError naming ``workers`` unless it is None or an integer >= 1."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


def _connect(address):
    """A Dask client of the scheduler at ``address``; ValueError naming ``scheduler`` if unreachable."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise ValueError("scheduler: dask.distributed is not installed (pip install 'dask[distributed]')") from None
    try:
        return Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"scheduler: cannot reach {address!r} within {CONNECT_SECONDS} s ({reason})") from None


def _execute(spec, todo, workers, client):
    """Yield unit results as they complete: in process, on a local process pool, or on Dask.

    Closing the generator early (an interrupt) cancels what is queued; local worker processes are
    killed, so that nothing keeps computing after the writer has stopped.
    """
    if not todo:
        return
    if client is not None:
        from dask.distributed import as_completed

        futures = client.map(run_unit, [spec] * len(todo), todo, pure=False)
        try:
            for future in as_completed(futures, loop=client.loop):  # this client, not a global default
                yield future.result()
        finally:
            client.cancel(futures)
        return
    from cfgphase.solvers.score.blas import usable_cores

    threads = spec.simulation.get("threads", 1) if spec.sim_axes else 1
    workers = max(1, usable_cores() // threads) if workers is None else int(workers)
    if workers == 1 or len(todo) == 1:
        for unit in todo:
            yield run_unit(spec, unit)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_setup,
                               initargs=(os.getpid(),))
    finished = False
    try:
        futures = [pool.submit(run_unit, spec, unit) for unit in todo]
        for future in as_completed(futures):
            yield future.result()
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # abandoned: kill the workers instead of letting them finish work nobody will save
            processes = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()
            for process in processes:
                process.join(5)


def _worker_setup(parent):
    """Pool initializer. BLAS and OpenMP on one thread (workers x threads stays within the cores; set
    in the worker, the parent's environment is left alone); SIGINT ignored (the writer stops the
    pool and kills its workers); and the worker dies with the writer even when the writer is killed
    by SIGKILL (Linux: the parent-death signal; elsewhere a watchdog thread on the parent's PID)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _parent_death_signal(signal.SIGKILL):
        def watchdog():
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watchdog, daemon=True, name="cfgphase-watchdog").start()
    if os.getppid() != parent:  # the writer died while this worker started
        os._exit(1)


def _parent_death_signal(signum):
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux prctl)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(1, int(signum), 0, 0, 0) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


@dataclass
class PhaseDiagram:
    """A finished (or resumed) sweep: where it is and what was done; ``to_xarray()`` reads the file."""

    path: Path
    units: int
    computed: int
    points_done: int
    points_failed: int
    wall_time: float
    replayed: int = 0

    def to_xarray(self):
        from cfgphase.solvers.io.hdf5 import open_dataset

        return open_dataset(self.path)

    def summary(self):
        return dict(path=str(self.path), units=self.units, computed=self.computed, points_done=self.points_done,
                    points_failed=self.points_failed, wall_time=self.wall_time, replayed=self.replayed)


def phase_diagram(config=None, out=None, *, resume=False, overwrite=False, workers=None, scheduler=None,
                  progress=False):
    """Compute (or resume) a phase diagram and write it to the HDF5 file ``out``.

    ``config``: a TOML file, a dictionary in the TOML layout (cfgphase.solvers.sweeps.spec) or a
    SweepSpec; None to resume ``out`` as stored. ``workers``: local processes (default: the usable
    cores); ``scheduler``: a Dask distributed scheduler address. Returns a :class:`PhaseDiagram`.
    """
    from cfgphase.solvers.sweeps.spec import parse_spec, read_config

    if out is None:
        raise ValueError("out: the phase diagram needs an output file")
    if isinstance(config, (str, Path)):
        spec = parse_spec(read_config(config))
    elif isinstance(config, dict):
        spec = parse_spec(config)
    elif isinstance(config, SweepSpec) or config is None:
        spec = config
    else:
        raise ValueError(f"config must be a TOML path, a dict or a SweepSpec, got {type(config).__name__}")
    if spec is None and not resume:
        raise ValueError("config: give a grid, or resume an existing file")
    return PhaseDiagram(**run_sweep(spec, out, resume=resume, overwrite=overwrite, workers=workers,
                                    scheduler=scheduler, progress=progress))
