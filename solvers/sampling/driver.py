r"""The simulation driver: initial condition -> guided reverse dynamics -> measurements.

:func:`simulate` samples a model (cfgphase.physics.model) with a guidance (physics.guidance) and a
sampler (:class:`~cfgphase.solvers.sampling.sampler.Sampler`); :func:`integrate` does the same for
any score field (cfgphase.solvers.score.fields). Both return a
:class:`~cfgphase.solvers.sampling.results.Simulation` that knows every input, defaults included.

The disorder (the class means) belongs to the model and is drawn from the model's seed; the noise
belongs to the run and is drawn from the ``seed`` given here (cfgphase.solvers.sampling.brownian):
the initial particles, and for the SDE one Brownian path W(u) read in the clock
:math:`u_t = a_t^2/\Gamma_t` (docs/theory.md eq. 48), in which the exact transition of the
exponential step is an increment of W. Two runs with the same model and noise seed therefore see
the same initial particles and the same path, whatever their schedules, rules or step counts.
"""

from __future__ import annotations

import math
import sys
import time
from typing import NamedTuple

import numpy as np

from cfgphase.physics.guidance import as_guidance
from cfgphase.physics.mixture import default_memory_budget
from cfgphase.physics.schedules import bind_schedule
from cfgphase.physics.weights import weight_at
from cfgphase.solvers.sampling import observables as obs
from cfgphase.solvers.sampling.brownian import Noise, check_seed
from cfgphase.solvers.sampling.results import Simulation
from cfgphase.solvers.sampling.sampler import SaveAt, as_sampler
from cfgphase.solvers.sampling.steppers import Guide, get_stepper
from cfgphase.solvers.sampling.timegrid import check_grid, default_t_max, time_grid, with_breakpoints
from cfgphase.solvers.score.fields import field_for, means_mode
from cfgphase.solvers.score.blas import single_threaded_blas

#: Particles are split into this many groups for the jackknife (eq. 14).
GROUPS = 32
#: Largest number of particles: a typo guard (10^8 particles of d = 64 need 50 GB).
MAX_PARTICLES = 100_000_000
#: Arrays of particles x d float64 numbers a simulation holds at once (particles, scores, stepper stages,
#: noise, observables), for the memory check of :func:`check_particles`.
WORKING_ARRAYS = 16


def check_particles(particles, d, name="particles", budget=None):
    """Raise ValueError naming ``name`` unless ``particles`` is an integer in [2, MAX_PARTICLES]
    whose working arrays at dimension ``d`` (:data:`WORKING_ARRAYS`
    arrays of particles x d float64 numbers) fit in ``budget`` bytes (default: the memory budget of
    cfgphase.physics.mixture.default_memory_budget, half the physical memory)."""
    if isinstance(particles, bool) or not isinstance(particles, (int, np.integer)) or \
            not 2 <= particles <= MAX_PARTICLES:
        raise ValueError(f"{name} must be an integer in [2, {MAX_PARTICLES}], got {particles!r}")
    budget = default_memory_budget() if budget is None else budget
    need = int(particles) * int(d) * 8 * WORKING_ARRAYS
    if need > budget:
        raise ValueError(f"{name}: {particles} particles at d = {d} need about {need / 2**30:.3g} GiB of working "
                         f"arrays, more than the memory budget of {budget / 2**30:.1f} GiB")
    return int(particles)


def simulate(model, guidance=None, *, sampler="ode", steps=None, t_max=None, particles=1024, seed=0, save=None,
             dtype="float64", threads=None, progress=False, time_limit=None, means="auto"):
    r"""Guided sampling of ``model`` with exact scores; returns a :class:`Simulation`.

    Parameters
    ----------
    model : Model or GaussianModel
        What is sampled, with its disorder (the class means, drawn from ``model.seed``).
    guidance : Guidance, number or schedule, optional
        How the conditional and unconditional scores are combined (default ``Guidance()``, omega = 1;
        a number is the excess weight omega).
    sampler : {'ode', 'sde'} or Sampler
        The reverse dynamics, stepper and grid; ``steps`` and ``t_max`` override its fields.
    particles : int >= 2
    seed : int >= 0
        Seed of the noise (initial particles and Brownian path), independent of the model's seed.
    save : SaveAt, optional
        Times at which trajectory observables are recorded (default every grid node) and whether
        the final particles are kept.
    dtype : {'float64', 'float32'}
        Precision of the kernel's GEMMs and softmax pass (docs/theory.md eq. 31).
    threads : int, optional
        Kernel threads (default: the usable cores, read at call time).
    progress : bool
        A progress bar on stderr (shown after 2 s).
    time_limit : float, optional
        Seconds after which the run stops between two steps with ``status = 1`` and the reason
        (a sweep's per-point limit); default none.
    means : {'auto', 'stored', 'generated'}
        Whether a random model's class means are stored, or generated chunk by chunk inside the
        kernel from the model's seed (memory independent of K; docs/theory.md eq. 64). Both give the
        same numbers. 'auto' generates them when stored ones would exceed the model's memory budget;
        the result records which ran (``params['means']``).
    """
    guidance, sampler, mode = check_simulation(model, guidance, sampler=sampler, steps=steps, t_max=t_max,
                                               particles=particles, seed=seed, time_limit=time_limit, means=means)
    field = field_for(model, dtype=dtype, threads=threads, means=mode)
    return integrate(field, guidance, sampler, particles=particles, seed=seed, save=save, progress=progress,
                     params=simulation_record(model, field, dtype, threads), time_limit=time_limit,
                     class_labels=getattr(model, "data_labels", None))


def check_simulation(model, guidance=None, *, sampler="ode", steps=None, t_max=None, particles=1024, seed=0,
                     time_limit=None, means="auto"):
    """(Guidance, Sampler, means mode) of :func:`simulate`'s arguments, everything that can be checked
    checked before the class means are drawn (ValueError naming the parameter)."""
    guidance, sampler = as_guidance(guidance), as_sampler(sampler, steps=steps, t_max=t_max)
    mode = means_mode(model, means)
    _check_run(guidance, sampler, particles, seed, time_limit, model.d)
    return guidance, sampler, mode


def simulation_record(model, field, dtype, threads):
    """The inputs a simulation of ``model`` records beyond the run's own: the model's, the precision,
    the kernel threads, how the means reached the kernel and its GEMM library (None without the kernel)."""
    return dict(model.record(), dtype=str(np.dtype(dtype)), threads=threads,
                means=getattr(field, "means_mode", None), blas=getattr(field, "blas", None))


def _check_run(guidance, sampler, particles, seed, time_limit, d):
    """ValueError naming the parameter for what a run needs whatever its field."""
    rule = guidance.rule
    method, _ = get_stepper(sampler.kind, sampler.method)
    if rule.method is not None and method != rule.method:
        raise ValueError(f"method: the {rule.name} rule is defined for the {rule.method} method, got {method!r}")
    check_particles(particles, d)
    check_seed(seed)
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                   or not time_limit > 0):
        raise ValueError(f"time_limit must be a number of seconds > 0, got {time_limit!r}")


def integrate(field, guidance=None, sampler="ode", *, particles=1024, seed=0, save=None, progress=False,
              params=None, time_limit=None, class_labels=None):
    """Integrate the guided reverse dynamics of any ``field`` and measure (docs/theory.md eqs. 9-14).

    ``field`` is a score field (MixtureField, GaussianField, DegradedField, ...); the other
    arguments are those of :func:`simulate`; ``params`` are extra inputs to record (the model's);
    ``class_labels`` name the field's classes in the statistics per class (default 0, 1, ...).
    A schedule is bound here to the process and to the sampler's grid (noise-level windows,
    step-indexed weights), and grid nodes are added at its breakpoints. The work is
    :func:`plan_run`, then :func:`run_block` over all the particles, then :func:`assemble`; a
    sharded run (cfgphase.solvers.sweeps.shards) calls :func:`run_block` on ranges of particles.
    """
    start = time.perf_counter()
    run = plan_run(field, guidance, sampler, particles=particles, seed=seed, save=save, params=params,
                   time_limit=time_limit, class_labels=class_labels)
    bar = _progress_bar(progress, run.steps)
    block = run_block(field, run, 0, run.particles, on_step=None if bar is None else bar.update)
    if bar is not None:
        bar.close()
    return assemble(field, run, [block], start)


class Run(NamedTuple):
    """Everything about a run that is the same for every particle: :func:`plan_run` computes it from
    the field, guidance and sampler, so that every shard of a run recomputes the same plan."""

    guidance: object
    sampler: object
    method: str
    stepper: object
    omega: object  #: the weight, its schedule bound to the process and the grid
    times: np.ndarray  #: (steps + 1,) the grid, decreasing
    save_idx: np.ndarray  #: indices of the grid nodes where trajectory observables are recorded
    save: SaveAt
    particles: int
    noise: Noise
    time_limit: float | None
    record: dict  #: every input, for the result
    class_labels: object = None  #: (C,) names of the field's classes in the statistics per class, or None

    steps = property(lambda self: self.times.size - 1)
    groups = property(lambda self: min(GROUPS, self.particles))


def plan_run(field, guidance=None, sampler="ode", *, particles=1024, seed=0, save=None, params=None,
             time_limit=None, class_labels=None):
    """The :class:`Run` of :func:`integrate`'s arguments (ValueError naming a bad one)."""
    guidance = as_guidance(guidance)
    sampler = as_sampler(sampler)
    save = SaveAt() if save is None else save
    _check_run(guidance, sampler, particles, seed, time_limit, field.d)
    method, stepper = get_stepper(sampler.kind, sampler.method)
    particles = int(particles)
    noise = Noise(seed)
    process = field.process
    if isinstance(sampler.grid, str):
        t_max = default_t_max(process, field.signal_var) if sampler.t_max is None else sampler.t_max
        times = time_grid(process, sampler.steps, t_max, sampler.t_min, kind=sampler.grid,
                          class_var=field.reference_var)
    else:
        times = check_grid(sampler.grid, process)
    omega = bind_schedule(guidance.weight, process=process)
    times = with_breakpoints(times, getattr(omega, "breakpoints", ()))
    omega = bind_schedule(omega, grid=times)
    steps, t_max, t_min = times.size - 1, float(times[0]), float(times[-1])
    if t_min == 0.0 and np.any(np.asarray(field.reference_var) == 0):
        raise ValueError("t_min must be > 0 when class_var is 0 (the score is singular at t = 0)")
    if method == "exponential" and float(process.a(times[1])) <= 0:
        raise ValueError("time grid: the exponential SDE step needs a_t > 0 after the first node")
    if method == "ddim" and float(process.var(t_max)) == 0:
        raise ValueError("t_max: DDIM needs noise at the start of every step")
    save_idx = _save_indices(times, save.times)
    weight_at(omega, t_max)  # fail fast on a schedule that returns nan, or one that is still unbound

    record = dict(params or {})
    record.update(guidance.record())
    if callable(omega):
        record["schedule"] = repr(omega)  # bound: with its times
    record.update(sampler.record(), method=method, steps=steps, t_max=t_max, t_min=t_min,
                  grid=sampler.grid if isinstance(sampler.grid, str) else "explicit", particles=particles,
                  seed=noise.seed, process=process.name, d=field.d)
    return Run(guidance, sampler, method, stepper, omega, times, save_idx, save, particles, noise, time_limit,
               record, class_labels)


class Block(NamedTuple):
    """What particles ``start`` .. ``stop - 1`` of a run produced: everything :func:`assemble` needs
    to compute the run's statistics exactly as from all particles at once."""

    start: int
    stop: int
    x: np.ndarray  #: (stop - start, d) final particles
    saved_times: list  #: times at which the trajectory observables were recorded
    trajectory: dict  #: name -> (n_save, G) per-group sums of the observable over these particles
    status: int
    message: str
    n_evals: int
    final: object  #: Evaluation at (x, t_min) in float64, None after a failure
    reference: np.ndarray | None  #: (stop - start, d) exact samples of the target at t_min (these rows)
    final_reference: object  #: their Evaluation, None after a failure


def run_block(field, run, start, stop, on_step=None):
    """Integrate particles ``start`` .. ``stop - 1`` of ``run`` (a :class:`Run`) on ``field``.

    They see exactly the noise they see in the whole run: the initial draw, the Brownian path
    (restricted to their rows, cfgphase.solvers.sampling.brownian) and the exact reference samples
    are drawn for all particles and these rows kept. ``on_step()`` is called after every step.
    Returns a :class:`Block` (trajectory observables as per-group sums, so that blocks add up)."""
    noise, sampler, rule, times = run.noise, run.sampler, run.guidance.rule, run.times
    steps, t_max, t_min = run.steps, float(times[0]), float(times[-1])
    labels = obs.group_labels(run.particles, run.groups)[0][start:stop]
    names, trajectory, saved_times = None, {}, []
    clock_start = time.perf_counter()
    guide = Guide(field, rule, run.omega, stop - start)
    x = field.sample_initial(t_max, run.particles, noise.initial_rng(), sampler.init)
    x = x if (start, stop) == (0, run.particles) else np.ascontiguousarray(x[start:stop])
    clock, path = None, None
    if sampler.kind == "sde":
        clock, horizon = _brownian_clock(field.process, field.reference_var)
        path = noise.path((run.particles, field.d), horizon, rows=(start, stop))
    ev = field.evaluate(x, t_max)
    n_evals, status, message = 1, 0, "ok"
    save_set = set(run.save_idx.tolist())
    # a diverging run (huge omega) is reported through status/message, not through warnings; BLAS
    # stays single-threaded: the kernel parallelises over row blocks itself, and idle OpenBLAS
    # threads spinning after a small multithreaded call would compete with it (solvers.score.kernel)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), single_threaded_blas():
        for i in range(steps + 1):
            t = float(times[i])
            t_next = float(times[i + 1]) if i < steps else None
            guided = guide(x, t, ev, t_next) if t_next is not None else None
            if i in save_set:
                values = obs.trajectory_values(obs.State(t, x, ev, guided, field))
                if names is None:
                    names = [n for n, v in values.items() if v is not None]
                    trajectory = {n: [] for n in names}
                for n in names:
                    trajectory[n].append(obs.group_sums(values[n], labels, run.groups))
                saved_times.append(t)
            if t_next is None:
                break
            xi = path.normal(clock(t), clock(t_next)) if path is not None else None
            x, extra = run.stepper(field, guide, t, t_next, x, ev, guided, xi)
            if not np.all(np.isfinite(x)):
                status, message = 1, f"non-finite particles after the step to t = {t_next:.6g}"
                break
            ev = field.evaluate(x, t_next)
            n_evals += extra + 1
            if on_step is not None:
                on_step()
            if run.time_limit is not None and time.perf_counter() - clock_start > run.time_limit and i + 1 < steps:
                status, message = 1, f"time limit of {run.time_limit:g} s reached at t = {t_next:.6g}"
                break
        final = reference = final_reference = None
        if status == 0:
            # final statistics from a float64 evaluation: 1/p(c|x) - 1 and the quantiles of p(c|x)
            # near 1 are below float32's resolution of the logits (docs/theory.md eq. 31)
            exact = field.precise() if hasattr(field, "precise") else field
            final = ev if exact is field else exact.evaluate(x, t_min)
            reference = field.sample_initial(t_min, run.particles, noise.reference_rng(), "conditional")[start:stop]
            final_reference = exact.evaluate(reference, t_min)
    trajectory = {n: np.array(v).reshape(len(v), run.groups) for n, v in trajectory.items()}
    return Block(start, stop, x, saved_times, trajectory, status, message, n_evals, final, reference,
                 final_reference)


def assemble(field, run, blocks, start_time):
    """The :class:`Simulation` of ``run`` from ``blocks`` that cover its particles (in any order).

    Trajectory group means are the blocks' group sums added over blocks (one block: the sums of the
    whole run), then divided by the group sizes; the final statistics are computed once, from the
    particles of every block put back in order, exactly as from a run in one piece. A failed block
    makes the run fail with its message (the first in particle order); ``start_time`` is the
    ``time.perf_counter()`` at which the run began (for ``wall_time``)."""
    blocks = sorted(blocks, key=lambda b: b.start)
    if [b.start for b in blocks] != [0] + [b.stop for b in blocks[:-1]] or blocks[-1].stop != run.particles:
        raise ValueError(f"blocks: they must cover particles 0 .. {run.particles - 1} once, got "
                         f"{[(b.start, b.stop) for b in blocks]}")
    labels, counts = obs.group_labels(run.particles, run.groups)
    failed = [b for b in blocks if b.status != 0]
    status, message = (failed[0].status, failed[0].message) if failed else (0, "ok")
    n_save = min(len(b.saved_times) for b in blocks)
    names = [n for n in blocks[0].trajectory] if n_save else []
    trajectory = {n: sum(b.trajectory[n][:n_save] for b in blocks) / counts for n in names}
    saved = np.array(blocks[0].saved_times[:n_save])
    x = blocks[0].x if len(blocks) == 1 else np.concatenate([b.x for b in blocks])
    per_class = {}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), single_threaded_blas():
        if status == 0:
            final = obs.final_statistics(field, x, _joined([b.final for b in blocks]), labels, counts,
                                         _joined([b.reference for b in blocks]),
                                         _joined([b.final_reference for b in blocks]), copy_ratio=run.save.copy_ratio,
                                         per_class=per_class)
            final_mean, final_var = x.mean(0), x.var(0, ddof=1)
        else:
            final, final_mean = obs.undefined_statistics(), np.full(field.d, np.nan)
            final_var = np.full(field.d, np.nan)
        final["t_condensation"], final["t_condensation_stderr"] = _condensation(saved, trajectory, counts)
    overflow = sorted(k for k, v in final.items() if v is not None and not math.isfinite(v)
                      and not k.startswith("inv_prob"))  # only E[1/p] may be infinite in a sound run
    if status == 0 and overflow:
        status, message = 1, (f"non-finite {', '.join(overflow)}: the particles diverged "
                              f"(largest |x| {float(np.max(np.abs(x))):.3g})")
    return Simulation(params=dict(run.record), grid=run.times, times=saved, group_counts=counts,
                      trajectory=trajectory, final=final, final_mean=final_mean, final_var=final_var,
                      per_class=per_class,
                      class_labels=_class_labels(field, run.class_labels) if per_class else None,
                      samples=x.copy() if run.save.samples else None, n_score_evals=max(b.n_evals for b in blocks),
                      wall_time=time.perf_counter() - start_time, status=status, message=message)


def _class_labels(field, given):
    """(C,) labels of the field's classes: ``given``, else their numbers."""
    return np.asarray(given if given is not None else np.arange(field.model.n_classes), dtype=np.int64)


def _joined(parts):
    """Per-particle arrays (or Evaluations of them) of consecutive blocks as one; a (d,) field that
    every particle shares (a one-mode class's conditional estimate) is kept once."""
    if len(parts) == 1 or parts[0] is None:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return type(parts[0])(*(None if v[0] is None else v[0] if name == "cond" and np.ndim(v[0]) == 1
                            else np.concatenate(v) for name, v in zip(parts[0]._fields, zip(*parts))))


def _brownian_clock(process, reference_var):
    r"""The clock :math:`u_t = a_t^2/(a_t^2\nu + \sigma_t^2)` of the Brownian path and its horizon
    :math:`1/\nu` (eq. 48; :math:`\nu` the largest reference variance, 1 for point classes).

    It increases as sampling proceeds, and the exact transition of the exponential step from t to
    t' < t has noise :math:`(\Gamma_{t'}/a_{t'})(W(u_{t'}) - W(u_t))`, so the path's increments are
    exactly the step's noise for any grid."""
    nu = float(np.max(reference_var))
    nu = nu if nu > 0 else 1.0

    def clock(t):
        a2 = float(process.a(t)) ** 2
        return min(a2 / (a2 * nu + float(process.var(t))), 1.0 / nu)

    return clock, 1.0 / nu


def _progress_bar(progress, steps):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, delay=2.0, file=sys.stderr, unit="step", desc="simulate")


def _save_indices(grid, save_times):
    if save_times is None:
        return np.arange(grid.size)
    save_times = np.asarray(save_times, dtype=float)
    return np.unique(np.abs(grid[None, :] - save_times[:, None]).argmin(axis=1))


def _condensation(times, trajectory, counts):
    """Time at which the mean target posterior first reaches 1/2, with its jackknife error."""
    if "target_posterior" not in trajectory or times.size < 2:
        return None, None
    return obs.condensation_time(times, trajectory["target_posterior"], counts)