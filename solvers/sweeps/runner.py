"""Phase-diagram sweeps: mean-field theory on a grid, simulations on a coarse grid, one HDF5 file.

A sweep is a :class:`cfgphase.solvers.sweeps.spec.SweepSpec` (from a TOML file or command-line ranges).
The work is split into units: one theory unit per (schedule parameters, sampler), covering every
alpha with one bulk integration (cfgphase.solvers.theory.meanfield.guided_predictions), and one simulation unit
per (alpha, schedule parameters, sampler, d, seed). Workers (a local process pool or a Dask
cluster) compute units and return their results; the one writer process appends each result to
a journal (one JSON line, fsync'ed) and rewrites the HDF5 file atomically (temporary file, then
rename) at most every ``FLUSH_SECONDS`` and at the end. A SIGKILL at any moment therefore leaves
the previous complete file and a journal holding every finished unit; ``resume`` replays it.
The schema is documented in data/README.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfgphase.solvers.sweeps.spec import SweepSpec

class Interrupted(Exception):
    """A sweep stopped by SIGINT or SIGTERM after saving every finished point (``signum``)."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum


THEORY_STATS = ("mean_ratio", "var_par", "var_perp", "distortion", "t_condensation", "entropy_at_condensation")
SIM_STATS = ("mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "inv_prob", "t_condensation")
UNITS = {"alpha": "log(K)/d", "omega": "excess guidance weight", "w0": "excess guidance weight at t = 0",
         "slope": "per unit VE-equivalent time", "t_switch": "forward time", "after": "excess guidance weight",
         "d": "dimension", "seed": "seed", "sampler": "sampler", "mean_ratio": "1", "var_par": "data units^2",
         "var_perp": "data units^2", "distortion": "nats per dimension", "t_condensation": "forward time",
         "accuracy": "1", "inv_prob": "1", "entropy_at_condensation": "nats per dimension",
         "condensation_boundary": "log(K)/d", "alpha_max": "log(K)/d", "frozen_boundary": "excess guidance weight",
         "crossing": "1"}
#: Largest number of annealed/frozen crossings stored per alpha (frozen_boundary).
CROSSINGS = 4
FLUSH_SECONDS = 2.0


# --- units of work ------------------------------------------------------------------------------


def units(spec):
    """Every unit of work as (kind, index tuple): theory units index the axes after alpha;
    simulation units index every simulation axis."""
    theory_shape = [len(v) for k, v in spec.theory_axes.items() if k != "alpha"]
    out = [("theory", idx) for idx in np.ndindex(*theory_shape)]
    if spec.sim_axes:
        out += [("simulation", idx) for idx in np.ndindex(*[len(v) for v in spec.sim_axes.values()])]
    return [(kind, tuple(int(i) for i in idx)) for kind, idx in out]


def _schedule(spec, values):
    from cfgphase.physics.schedules import LinearSchedule, SwitchSchedule

    if spec.schedule == "constant":
        return values["omega"]
    if spec.schedule == "linear":
        return LinearSchedule(values["w0"], values["slope"])
    return SwitchSchedule(values["omega"], values["t_switch"], values["after"])


def run_unit(spec, unit):
    """Compute one unit in a worker; returns a JSON-ready dict (never raises)."""
    kind, idx = unit
    start = time.perf_counter()
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            values = _theory_unit(spec, idx) if kind == "theory" else _simulation_unit(spec, idx)
        error = ""
        # None is "not defined here" (no condensation, dense classes) and is stored as NaN;
        # a computed value that is not finite is a failure
        bad = [k for k, v in values.items() if any(x is not None and not math.isfinite(x) for x in _flat(v))]
        if bad:
            error = f"non-finite {', '.join(sorted(bad))}"
        values = {k: [math.nan if x is None else x for x in v] if isinstance(v, list) else
                  (math.nan if v is None else v) for k, v in values.items()}
    except Exception as err:  # a failed point is recorded, not fatal
        values, error = {}, f"{type(err).__name__}: {err}".splitlines()[0] or traceback.format_exc(limit=1)
    return dict(kind=kind, index=list(idx), values=values, wall_time=time.perf_counter() - start, error=error)


def _flat(value):
    return value if isinstance(value, list) else [value]


def _theory_unit(spec, idx):
    from cfgphase.solvers.theory.meanfield import guided_predictions

    names = [k for k in spec.theory_axes if k != "alpha"]
    point = {k: spec.theory_axes[k][i] for k, i in zip(names, idx)}
    preds = guided_predictions(spec.theory_axes["alpha"], _schedule(spec, point), process=spec.model["process"],
                               sampler=point["sampler"], mean_var=spec.model["mean_var"],
                               class_var=spec.model["class_var"], t_max=spec.theory["t_max"])
    out = {}
    for key in THEORY_STATS:
        out[key] = [None if getattr(p, key) is None else float(getattr(p, key)) for p in preds]
    if not all(p.success for p in preds):
        raise RuntimeError(preds[0].message)
    out["condensation_boundary"] = preds[0].alpha_condensation  # one value per guidance (eq. 49)
    return out


def _simulation_unit(spec, idx):
    from cfgphase.physics.model import Model
    from cfgphase.solvers.sampling.driver import simulate

    point = {k: v[i] for (k, v), i in zip(spec.sim_axes.items(), idx)}
    sim = spec.simulation
    # replicate r: the means of seed r and the noise of seed r
    model = Model(d=point["d"], alpha=point["alpha"], mean_var=spec.model["mean_var"],
                  class_var=spec.model["class_var"], process=spec.model["process"], seed=point["seed"])
    result = simulate(model, _schedule(spec, point), sampler=point["sampler"], steps=sim["steps"], t_max=sim["t_max"],
                      particles=sim["particles"], seed=point["seed"], dtype=sim["dtype"], threads=sim["threads"],
                      time_limit=sim["time_limit"])
    if result.status != 0:
        raise RuntimeError(result.message)
    out = {"K": result.params["K"]}
    for key in SIM_STATS:
        for name in (key, key + "_stderr"):
            value = result.final.get(name)
            out[name] = None if value is None else float(value)
    return out


# --- the writer's state, the journal and the HDF5 file ------------------------------------------


class SweepState:
    """Arrays of every variable of the file, filled as units complete (in the writer process)."""

    def __init__(self, spec):
        self.spec = spec
        self.theory_dims = tuple(spec.theory_axes)
        shape = tuple(len(v) for v in spec.theory_axes.values())
        self.vars = {f"theory_{k}": (self.theory_dims, np.full(shape, np.nan)) for k in THEORY_STATS}
        self.vars["theory_done"] = (self.theory_dims, np.zeros(shape, np.int8))
        self.vars["theory_wall_time"] = (self.theory_dims, np.full(shape, np.nan))
        self.vars["theory_error"] = (self.theory_dims, np.full(shape, "", dtype=object))
        # one alpha per guidance and sampler: the theory dimensions without alpha
        self.vars["condensation_boundary"] = (self.theory_dims[1:], np.full(shape[1:], np.nan))
        self.sim_dims = tuple(k if k in ("d", "seed") else f"sim_{k}" for k in spec.sim_axes)
        if spec.sim_axes:
            shape = tuple(len(v) for v in spec.sim_axes.values())
            for key in ("K", *SIM_STATS, *(k + "_stderr" for k in SIM_STATS)):
                self.vars[f"sim_{key}"] = (self.sim_dims, np.full(shape, np.nan))
            self.vars["sim_done"] = (self.sim_dims, np.zeros(shape, np.int8))
            self.vars["sim_wall_time"] = (self.sim_dims, np.full(shape, np.nan))
            self.vars["sim_error"] = (self.sim_dims, np.full(shape, "", dtype=object))

    def _where(self, kind, index):
        return (slice(None), *index) if kind == "theory" else tuple(index)

    def is_done(self, unit):
        kind, index = unit
        prefix = "theory" if kind == "theory" else "sim"
        return bool(np.all(self.vars[f"{prefix}_done"][1][self._where(kind, index)]))

    def apply(self, result):
        kind, where = result["kind"], self._where(result["kind"], result["index"])
        prefix = "theory" if kind == "theory" else "sim"
        for key, value in result["values"].items():
            if key == "condensation_boundary":
                self.vars[key][1][tuple(result["index"])] = value
                continue
            self.vars[f"{prefix}_{key}"][1][where] = value
        self.vars[f"{prefix}_done"][1][where] = 1
        per_point = result["wall_time"] / (len(self.spec.theory_axes["alpha"]) if kind == "theory" else 1)
        self.vars[f"{prefix}_wall_time"][1][where] = per_point
        self.vars[f"{prefix}_error"][1][where] = result["error"]

    def total(self):
        """Number of points of the sweep (theory and simulation)."""
        return sum(data.size for name, (_, data) in self.vars.items() if name.endswith("_done"))

    def counts(self):
        done = failed = 0
        for prefix in ("theory", "sim"):
            if f"{prefix}_done" in self.vars:
                done += int(self.vars[f"{prefix}_done"][1].sum())
                failed += int(np.sum(self.vars[f"{prefix}_error"][1] != ""))
        return done, failed

    def coordinates(self):
        out = {k: self.spec.theory_axes[k] for k in self.theory_dims}
        for dim, values in zip(self.sim_dims, self.spec.sim_axes.values()):
            out[dim] = values
        return out


def journal_path(path):
    return Path(str(path) + ".journal")


def _append_journal(handle, result):
    handle.write(json.dumps(result) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def _replay_journal(path, state, key):
    """Apply every complete line of the journal written for the spec whose hash is ``key`` (a line
    torn by a kill, or a line of another grid, is ignored)."""
    jp = journal_path(path)
    if not jp.exists():
        return 0
    count = 0
    for line in jp.read_text(errors="replace").splitlines():
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(result, dict) or result.get("spec") != key:
            continue
        state.apply(result)
        count += 1
    return count


def to_dataset(state, attrs):
    """The sweep as an ``xarray.Dataset``: every axis a labelled coordinate with units, every
    variable over its axes, the spec and progress in ``attrs`` (schema: data/README.md)."""
    import xarray as xr

    from cfgphase.solvers.sampling.results import attribute

    spec = state.spec
    coords = {dim: (dim, np.array(values, dtype=object if isinstance(values[0], str) else float if dim != "d"
                                  and dim != "seed" else int), {"units": UNITS[dim.removeprefix("sim_")]})
              for dim, values in state.coordinates().items()}
    data = {}
    for name, (dims, values) in state.vars.items():
        stat = name if name in UNITS else name.split("_", 1)[1].removesuffix("_stderr")
        units = UNITS.get(stat, "1" if stat in ("done", "K") else "s" if stat == "wall_time" else "")
        data[name] = (dims, values, {"units": units})
    from cfgphase.solvers.theory.condensation import alpha_max

    data["alpha_max"] = ((), alpha_max(spec.model["mean_var"], spec.model["class_var"]),
                         {"units": UNITS["alpha_max"], "long_name": "dense classes beyond: no condensation without "
                                                                   "guidance (eq. 22)"})
    data["condensation_boundary"][2].update(long_name="largest alpha at which the particles condense (eq. 49)")
    if spec.schedule == "constant":
        crossings = frozen_crossings(state.vars["theory_entropy_at_condensation"][1], spec.theory_axes["omega"])
        data["frozen_boundary"] = (("alpha", "crossing", "sampler"), crossings,
                                   {"units": UNITS["frozen_boundary"], "long_name": "weights where the other classes "
                                    "pass between annealed and frozen at t* (eq. 20), per alpha"})
        coords["crossing"] = ("crossing", np.arange(CROSSINGS), {"units": "1"})
    info = dict(kind="phase_diagram", sweep_spec=spec.to_json(), spec_hash=spec_hash(spec), schedule=spec.schedule)
    for section, values in (("model", spec.model), ("theory", spec.theory), ("simulation", spec.simulation)):
        info.update({f"{section}_{key}": attribute(value) for key, value in values.items()})
    done, failed = state.counts()
    info.update({k: attribute(v) for k, v in attrs.items()}, points_done=done, points_failed=failed)
    return xr.Dataset(data, coords=coords, attrs=info)


def frozen_crossings(entropy, omegas):
    """The weights at which the entropy of the other classes at t* changes sign, per alpha and sampler:
    linear interpolation between neighbouring grid points that both condense (eq. 20). ``entropy``
    has dimensions (alpha, omega, sampler); returns (alpha, CROSSINGS, sampler), NaN-padded."""
    omegas = np.asarray(omegas, dtype=float)
    out = np.full((entropy.shape[0], CROSSINGS, entropy.shape[2]), np.nan)
    for i in range(entropy.shape[0]):
        for k in range(entropy.shape[2]):
            s = entropy[i, :, k]
            sign = np.flatnonzero(np.isfinite(s[:-1]) & np.isfinite(s[1:]) & ((s[:-1] < 0) != (s[1:] < 0)))
            for n, j in enumerate(sign[:CROSSINGS]):
                out[i, n, k] = omegas[j] - s[j] * (omegas[j + 1] - omegas[j]) / (s[j + 1] - s[j])
    return out


def spec_hash(spec):
    """A content hash of a sweep's grid and every option (SHA-256 of its canonical JSON)."""
    import hashlib

    return hashlib.sha256(spec.to_json().encode()).hexdigest()


def write_file(path, state, attrs):
    """Write the whole sweep to ``path`` atomically (cfgphase.solvers.io.hdf5.write_dataset)."""
    from cfgphase.solvers.io.hdf5 import write_dataset

    write_dataset(path, to_dataset(state, attrs))


def read_state(path, spec=None):
    """The spec stored in ``path`` (checked against ``spec`` if given) and its state."""
    from cfgphase.solvers.io.hdf5 import check_file, open_dataset

    check_file(path, {"phase_diagram"})
    ds = open_dataset(path)
    try:
        stored = SweepSpec(**json.loads(ds.attrs["sweep_spec"]))
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"file: {path} is a damaged phase-diagram file (its sweep_spec: {err})") from None
    if spec is not None and stored.to_json() != spec.to_json():
        raise ValueError(f"resume: the grid and options differ from those stored in {path}")
    state = SweepState(stored)
    try:
        for name, (_, data) in state.vars.items():
            values = ds[name].values
            data[...] = values.astype(str) if data.dtype == object else values
    except (KeyError, ValueError) as err:
        raise ValueError(f"file: {path} is a damaged phase-diagram file ({err})") from None
    return stored, state, ds.attrs.get("started", "")


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
    if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
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
        replayed = _replay_journal(path, state, spec_hash(spec))
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
    with open(journal_path(path), "a") as journal, bar, _stop_on_signals() as stop:
        results = _execute(spec, todo, workers, client)
        try:
            for result in results:
                state.apply(result)
                _append_journal(journal, dict(result, spec=key))
                bar.update()
                if time.perf_counter() - last > FLUSH_SECONDS:
                    write_file(path, state, dict(attrs, updated=_now()))
                    journal.truncate(0)
                    journal.seek(0)
                    last = time.perf_counter()
        except (KeyboardInterrupt, _Stop) as err:
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


class _Stop(BaseException):
    """Raised in the writer's main thread by SIGTERM (SIGINT raises KeyboardInterrupt)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT and SIGTERM interrupt the block (main thread only; elsewhere signals are left alone)."""
    record = types.SimpleNamespace(signum=None)
    if threading.current_thread() is not threading.main_thread():
        yield record
        return

    def handler(signum, frame):
        record.signum = signum
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield record
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _now():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


#: Seconds to wait for a Dask scheduler before the sweep is refused.
CONNECT_SECONDS = 10


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
    from cfgphase.solvers.score.kernel import usable_cores

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
