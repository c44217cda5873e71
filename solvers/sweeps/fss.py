r"""Finite-size scaling: one (alpha, omega, sampler) point simulated over dimensions d and draws of the
means, in one HDF5 file, and its comparison with the theory at each d.

:func:`finite_size_scaling` runs draw j (model seed = noise seed = ``seed + j``) at every d, in this
process or sharded over Dask workers (cfgphase.solvers.sweeps.shards, one LocalCluster or scheduler
for the whole run), and rewrites the file atomically after every finished run (temporary file,
rename; cfgphase.solvers.io.hdf5), under the writer lock: a kill loses at most the run in progress and
``resume`` computes only the missing ones, refusing a file whose options differ (their SHA-256 is
stored). Layout (kind ``finite_size_scaling``; data/README.md): coordinates ``d`` and ``draw``; per
(d, draw) every statistic of :data:`STATS` and its ``_stderr``, ``target_norm`` (rho =
:math:`|\mu_c|^2/d` of the draw), ``t_max``, ``done``, ``error``, ``wall_time``; ``K`` per d; the options in
``attrs``. :func:`compare_with_theory` reads such a file and compares each draw with ``cp.predict`` at
its own K, rho and t_max, at dimension d (docs/theory.md section 12) and at d -> infinity.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: Statistics stored per run (each with a ``_stderr``).
STATS = ("mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "inv_prob", "t_condensation")
#: Statistics the theory predicts, compared by :func:`compare_with_theory`.
COMPARED = ("mean_ratio", "var_par", "var_perp", "t_condensation")
UNITS = dict(mean_ratio="1", var_par="data units^2", var_perp="data units^2", distortion="nats per dimension",
             accuracy="1", inv_prob="1", t_condensation="forward time", target_norm="data units^2",
             t_max="forward time", K="classes", wall_time="s", done="1", error="")


@dataclass(frozen=True)
class FiniteSizeSpec:
    """One (alpha or K, omega, sampler) point over ``d`` (dimensions) and ``draws`` draws of the means."""

    alpha: float | None
    classes: int | None
    omega: float
    sampler: str
    d: tuple
    draws: int
    seed: int = 0
    particles: int = 1024
    steps: int = 200
    mean_var: float = 1.0
    class_var: float = 0.25
    process: str = "ou"
    means: str = "auto"

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True)

    def model(self, d, draw):
        """The Model of draw ``draw`` at dimension ``d`` (its means from seed ``seed + draw``)."""
        from cfgphase.physics.model import Model

        return Model(d=int(d), alpha=self.alpha, classes=self.classes, mean_var=self.mean_var,
                     class_var=self.class_var, process=self.process, seed=self.seed + int(draw))


def finite_size_spec(*, alpha=None, classes=None, omega=1.0, sampler="ode", d=(16, 24, 32), draws=4, seed=0,
                     particles=1024, steps=200, mean_var=1.0, class_var=0.25, process="ou", means="auto"):
    """A checked :class:`FiniteSizeSpec`; ValueError naming the parameter (``d``: a non-empty list of
    integers >= 1; ``draws``: an integer >= 1; the rest as cfgphase.simulate checks them, at every d)."""
    from cfgphase.solvers.sampling import driver

    def integer(value, name, low):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        return int(value)

    if isinstance(d, (int, np.integer)) or not hasattr(d, "__len__") or len(d) == 0:
        raise ValueError(f"d must be a non-empty list of dimensions, got {d!r}")
    ds = tuple(sorted({integer(v, "d", 1) for v in d}))
    if (alpha is None) == (classes is None):
        raise ValueError("alpha: give alpha (K = round(exp(alpha d))) or classes (K), not both or neither")
    if isinstance(omega, bool) or not isinstance(omega, (int, float)) or not np.isfinite(omega):
        raise ValueError(f"omega must be a finite number, got {omega!r}")
    spec = FiniteSizeSpec(alpha=None if alpha is None else float(alpha),
                          classes=None if classes is None else integer(classes, "classes", 1), omega=float(omega),
                          sampler=sampler, d=ds, draws=integer(draws, "draws", 1), seed=integer(seed, "seed", 0),
                          particles=particles, steps=steps, mean_var=mean_var, class_var=class_var, process=process,
                          means=means)
    for dim in ds:  # every run checked before anything is written; no means are drawn
        driver.check_simulation(spec.model(dim, 0), omega, sampler=sampler, steps=steps, particles=particles,
                                seed=spec.seed, means=means)
    return spec


@dataclass
class FiniteSizeScaling:
    """A finished (or resumed) finite-size-scaling run: where it is and what was done."""

    path: Path
    runs: int
    computed: int
    failed: int
    wall_time: float

    def to_xarray(self):
        from cfgphase.solvers.io.hdf5 import open_dataset

        return open_dataset(self.path)

    def summary(self):
        return dict(path=str(self.path), runs=self.runs, computed=self.computed, failed=self.failed,
                    wall_time=self.wall_time)


def finite_size_scaling(out, *, alpha=None, classes=None, omega=1.0, sampler="ode", d=(16, 24, 32), draws=4,
                        seed=0, particles=1024, steps=200, mean_var=1.0, class_var=0.25, process="ou", means="auto",
                        workers=None, scheduler=None, resume=False, overwrite=False, progress=False):
    """Simulate draws ``0 .. draws - 1`` of the means at every dimension in ``d`` and write the HDF5 file
    ``out`` (module docstring); returns a :class:`FiniteSizeScaling`.

    The point: ``alpha`` (K = round(exp(alpha d))) or ``classes`` (K fixed), the excess weight ``omega``,
    the ``sampler`` ('ode' or 'sde') with ``steps`` steps of the default grid, ``particles`` per run,
    ``mean_var``, ``class_var``, ``process``, ``means`` as in cfgphase.simulate. Draw j uses model and
    noise seed ``seed + j``. ``workers`` (a Dask LocalCluster) or ``scheduler`` (an address) shard each
    run's particles over Dask workers (the same numbers). ``resume`` continues ``out`` (the options must
    be those stored); ``overwrite`` replaces it. Bad input: ValueError naming the parameter, nothing
    written. SIGINT and SIGTERM stop the run, keep every finished run in the file and raise
    :class:`cfgphase.solvers.sweeps.signals.Interrupted`.
    """
    from cfgphase.solvers.io.hdf5 import check_output_path, remove_stale_temporaries, writer_lock
    from cfgphase.solvers.sweeps.runner import check_workers

    spec = finite_size_spec(alpha=alpha, classes=classes, omega=omega, sampler=sampler, d=d, draws=draws, seed=seed,
                            particles=particles, steps=steps, mean_var=mean_var, class_var=class_var,
                            process=process, means=means)
    check_workers(workers)
    if workers is not None and scheduler is not None:
        raise ValueError("workers: give workers (a local cluster) or scheduler (an existing one), not both")
    path = Path(out)
    resuming = resume and path.exists()
    check_output_path(path, overwrite=overwrite or resuming)
    arrays = _read(path, spec) if resuming else _empty(spec)  # a damaged file or other options: refused here
    start = time.perf_counter()
    with writer_lock(path):
        remove_stale_temporaries(path)
        computed = _run(spec, path, arrays, workers, scheduler, progress)
    return FiniteSizeScaling(path, arrays["done"].size, computed, int(np.sum(arrays["error"] != "")),
                             time.perf_counter() - start)


def _run(spec, path, arrays, workers, scheduler, progress):
    import contextlib
    import signal

    from tqdm import tqdm

    from cfgphase.solvers.sweeps.signals import Interrupted, Stop, stop_on_signals
    from cfgphase.solvers.sweeps.shards import dask_client, kernel_threads, simulate

    todo = [(i, j) for i in range(len(spec.d)) for j in range(spec.draws) if not arrays["done"][i, j]]
    _write(path, spec, arrays)
    where = dask_client(workers, scheduler) if workers is not None or scheduler is not None else \
        contextlib.nullcontext()
    with where as client, tqdm(total=arrays["done"].size, initial=arrays["done"].size - len(todo), unit="run",
                               desc="fss", disable=not progress, mininterval=0.5) as bar, stop_on_signals() as stop:
        computed = 0
        try:
            for i, j in todo:
                model = spec.model(spec.d[i], j)
                begun = time.perf_counter()
                try:
                    result = simulate(model, spec.omega, client=client, sampler=spec.sampler, steps=spec.steps,
                                      particles=spec.particles, seed=spec.seed + j, means=spec.means,
                                      threads=kernel_threads(workers))
                    _store(arrays, i, j, model, result)
                except (MemoryError, OSError, ValueError) as err:  # a failed run is recorded, not fatal
                    arrays["error"][i, j] = f"{type(err).__name__}: {err}".splitlines()[0]
                arrays["wall_time"][i, j] = time.perf_counter() - begun
                arrays["done"][i, j] = 1
                _write(path, spec, arrays)
                computed += 1
                bar.update()
        except (KeyboardInterrupt, Stop, Interrupted) as err:
            signum = stop.signum or getattr(err, "signum", signal.SIGINT)
            raise Interrupted(signum, f"{signal.Signals(signum).name}: stopped; {int(arrays['done'].sum())} of "
                                      f"{arrays['done'].size} runs are saved in {path}; continue with the same "
                                      "options and --resume") from None
    return computed


def _empty(spec):
    shape = (len(spec.d), spec.draws)
    arrays = {name: np.full(shape, np.nan) for name in (*STATS, *(k + "_stderr" for k in STATS), "target_norm",
                                                           "t_max", "wall_time")}
    arrays.update(done=np.zeros(shape, np.int8), error=np.full(shape, "", dtype=object),
                  K=np.array([spec.model(d, 0).K for d in spec.d], dtype=np.int64))
    return arrays


def _store(arrays, i, j, model, result):
    """One run's numbers into the arrays (a run that failed: its message)."""
    for key in (*STATS, *(k + "_stderr" for k in STATS)):
        value = result.final.get(key)
        arrays[key][i, j] = np.nan if value is None else value
    arrays["target_norm"][i, j] = model.target_norm
    arrays["t_max"][i, j] = result.params["t_max"]
    arrays["error"][i, j] = "" if result.status == 0 else result.message


def _dataset(spec, arrays):
    import xarray as xr

    from cfgphase.physics.statistics import describe

    data = {}
    for name, values in arrays.items():
        dims = ("d",) if name == "K" else ("d", "draw")
        stat = name.removesuffix("_stderr")
        attrs = {"units": UNITS[stat]}
        if stat in STATS:
            attrs["long_name"] = describe(stat)[0] + (" (standard error)" if name.endswith("_stderr") else "")
        data[name] = (dims, values, attrs)
    data["target_norm"][2]["long_name"] = "rho = |mu_c|^2/d of the draw"
    coords = {"d": ("d", np.array(spec.d, dtype=np.int64), {"units": "dimension"}),
              "draw": ("draw", np.arange(spec.draws), {"long_name": f"draw j: model and noise seed {spec.seed} + j"})}
    options = {k: (np.nan if v is None else list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec).items()}
    attrs = dict(kind="finite_size_scaling", spec=spec.to_json(), spec_hash=_hash(spec), runs_done=int(
        arrays["done"].sum()), runs_failed=int(np.sum(arrays["error"] != "")), **options)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _hash(spec):
    return hashlib.sha256(spec.to_json().encode()).hexdigest()


def _write(path, spec, arrays):
    from cfgphase.solvers.io.hdf5 import write_dataset

    write_dataset(path, _dataset(spec, arrays))


def read_spec(path):
    """(FiniteSizeSpec, dataset) of a file written by :func:`finite_size_scaling` (ValueError naming
    ``file`` if it is not one, or is damaged)."""
    from cfgphase.solvers.io.hdf5 import check_file, open_dataset

    check_file(path, {"finite_size_scaling"})
    ds = open_dataset(path)
    try:
        stored = json.loads(ds.attrs["spec"])
        return FiniteSizeSpec(**dict(stored, d=tuple(stored["d"]))), ds
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"file: {path} is a damaged finite-size-scaling file ({err})") from None


def _read(path, spec):
    stored, ds = read_spec(path)
    if stored != spec:
        raise ValueError(f"resume: the options differ from those stored in {path}")
    arrays = _empty(spec)
    try:
        for name, values in arrays.items():
            values[...] = ds[name].values.astype(str) if values.dtype == object else ds[name].values
    except (KeyError, ValueError) as err:
        raise ValueError(f"file: {path} is a damaged finite-size-scaling file ({err})") from None
    return arrays


def compare_with_theory(path, *, finite_d=True, particles=None, seed=1000):
    """Residual (simulation minus theory) per d of a :func:`finite_size_scaling` file, as an
    ``xarray.Dataset`` over ``d``.

    Every finished draw is compared with ``cp.predict`` at its own K, target norm rho and t_max: at
    dimension d (``finite_d``; a Monte-Carlo prediction over ``particles`` with seed ``seed + draw``,
    docs/theory.md section 12) and at d -> infinity. Per statistic of :data:`COMPARED` and theory
    (``finite_d``, ``infinite_d``): ``{stat}_{theory}_residual``, its ``_stderr``
    (cfgphase.solvers.theory.scaling.draw_average: the larger of the between-draw and the within-draw
    variance, plus the prediction's Monte-Carlo error) and ``_z`` = residual / stderr; ``draws``: the
    draws that entered. NaN where a statistic is not defined (no condensation).
    """
    import xarray as xr

    from cfgphase.solvers.sampling.sampler import Sampler
    from cfgphase.solvers.theory.meanfield import predict
    from cfgphase.solvers.theory.scaling import draw_average

    spec, ds = read_spec(path)
    theories = ("finite_d", "infinite_d") if finite_d else ("infinite_d",)
    out = {(k, t, part): np.full(len(spec.d), np.nan) for k in COMPARED for t in theories
           for part in ("residual", "stderr", "z")}
    used = np.zeros(len(spec.d), np.int64)
    for i, d in enumerate(spec.d):
        draws = [j for j in range(spec.draws) if ds["done"].values[i, j] and ds["error"].values[i, j] == ""]
        used[i] = len(draws)
        if not draws:
            continue
        rows = {t: {k: [] for k in COMPARED} for t in theories}
        for j in draws:
            model = spec.model(d, j)
            sampler = Sampler(kind=spec.sampler, steps=spec.steps, t_max=float(ds["t_max"].values[i, j]))
            rho = float(ds["target_norm"].values[i, j])
            preds = {"infinite_d": predict(model, spec.omega, sampler=sampler, target_norm=rho)}
            if finite_d:
                preds["finite_d"] = predict(model, spec.omega, sampler=sampler, target_norm=rho, d=int(d),
                                            particles=particles, seed=seed + j)
            for t, pred in preds.items():
                for k in COMPARED:
                    value, error = getattr(pred, k), getattr(pred, k + "_stderr", None)
                    rows[t][k].append((float(ds[k].values[i, j]), float(ds[k + "_stderr"].values[i, j]),
                                       np.nan if value is None else value, 0.0 if error is None else error))
        for t in theories:
            for k in COMPARED:
                sim, se, theory, mc = (np.array(col, float) for col in zip(*rows[t][k]))
                if np.any(np.isnan(sim)) or np.any(np.isnan(se)) or np.any(np.isnan(theory)):
                    continue
                res, err = draw_average(sim - theory, se, mc if t == "finite_d" else None)
                out[k, t, "residual"][i], out[k, t, "stderr"][i] = res, err
                out[k, t, "z"][i] = res / err if err > 0 else np.nan
    data = {f"{k}_{t}_{part}": ("d", values, {"units": "1" if part == "z" else UNITS[k]})
            for (k, t, part), values in out.items()}
    data["draws"] = ("d", used, {"long_name": "draws compared"})
    return xr.Dataset(data, coords={"d": ("d", np.array(spec.d, dtype=np.int64), {"units": "dimension"})},
                      attrs=dict(kind="finite_size_comparison", source=str(path), **{
                          k: v for k, v in ds.attrs.items() if k in ("alpha", "classes", "omega", "sampler")}))
