"""The simulation driver: initial condition -> guided reverse dynamics -> measurements.

:func:`run` integrates any field (solvers.fields) and returns a :class:`SimulationResult`
holding the answer, every input that produced it (defaults included), counters and a status,
so that a result can be stored whole (solvers.storage). :func:`simulate` builds the Gaussian
mixture of DESIGN.md from its parameters and calls :func:`run`.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field as dataclass_field

import numpy as np
from tqdm import tqdm

from physics.guidance import excess_weight, weight_at
from physics.mixture import GaussianMixture
from physics.rules import make_rule
from physics.schedules import bind_schedule
from solvers import observables as obs
from solvers.brownian import BrownianSource
from solvers.fields import MixtureField
from solvers.kernel import single_threaded_blas
from solvers.steppers import Guide, get_stepper
from solvers.timegrid import check_grid, default_t_max, time_grid, with_breakpoints

GROUPS = 32


@dataclass
class SimulationResult:
    """Everything one simulation produced.

    ``trajectory[name]`` has shape (n_save, G): group means of observable ``name`` at
    ``times``; :meth:`observable` pools them into mean and standard error. ``final`` is the flat
    dict of final statistics (solvers.observables.final_statistics) plus ``t_condensation``.
    """

    params: dict
    grid: np.ndarray
    times: np.ndarray
    group_counts: np.ndarray
    trajectory: dict
    final: dict
    final_mean: np.ndarray
    final_var: np.ndarray
    samples: np.ndarray | None = None
    n_score_evals: int = 0
    wall_time: float = 0.0
    status: int = 0
    message: str = "ok"
    extra: dict = dataclass_field(default_factory=dict)

    def observable(self, name):
        """(mean, stderr) over particles of trajectory observable ``name``, each (n_save,)."""
        return obs.pooled(self.trajectory[name], self.group_counts)

    def summary(self):
        """The JSON-ready record of DESIGN.md: inputs, final statistics and their stderr."""
        p = self.params
        keys = ("d", "K", "alpha", "omega", "guidance_scale", "mean_var", "class_var", "process",
                "sampler", "method", "schedule", "rule", "steps", "particles", "seed")
        out = {k: p.get(k) for k in keys}
        out.update(self.final)
        out.update(status=self.status, message=self.message, wall_time=self.wall_time,
                   n_score_evals=self.n_score_evals)
        return out


def _save_indices(grid, save_times):
    if save_times is None:
        return np.arange(grid.size)
    save_times = np.atleast_1d(np.asarray(save_times, dtype=float))
    if not np.all(np.isfinite(save_times)):
        raise ValueError("save_times must be finite")
    return np.unique(np.abs(grid[None, :] - save_times[:, None]).argmin(axis=1))


def run(field, omega=None, guidance_scale=None, rule="cfg", sampler="ode", method=None, steps=200, t_max=None,
        t_min=0.0, grid="log", particles=1024, seed=0, init="unconditional", save_times=None,
        keep_samples=False, progress=False, params=None):
    """Integrate the guided reverse dynamics of ``field`` and measure (docs/theory.md eqs. 9-14).

    Parameters
    ----------
    field : MixtureField or GaussianField
    omega, guidance_scale : float or callable of t, optional
        Excess weight (``s_c + omega (s_c - s_u)``) or diffusers weight ``w = 1 + omega``;
        at most one. Default omega = 1. A schedule of physics.schedules is bound here to the
        process and to the sampler's grid (noise-level windows, step-indexed weights).
    rule : str or physics.rules.Rule
        How the conditional and unconditional predictions are combined (default 'cfg');
        a name takes the rule's default parameters (physics.rules.make_rule for others).
    sampler : {'ode', 'sde'}
        Probability-flow ODE or reverse SDE; ``method`` picks the stepper (solvers.steppers).
    steps, t_max, t_min, grid :
        Time grid: ``grid`` is 'log' (uniform in log(t + t_0), refined near t = 0; eq. 15),
        'uniform', or an explicit strictly monotone array of forward times (then steps, t_max
        and t_min are taken from it).
        Default ``t_max``: where the signal-to-noise ratio of the data falls to 1e-4. Nodes are
        added at the ``breakpoints`` of a schedule (physics.schedules), where omega jumps.
    particles : int >= 2
    seed : int
        Seed of the noise (solvers.brownian): equal seeds give common random numbers.
    init : {'unconditional', 'conditional'}
        Initial particles drawn exactly from the noised unconditional (or target) data at t_max.
    save_times : array_like, optional
        Forward times at which trajectory observables are recorded (snapped to grid nodes);
        default every node.
    keep_samples : bool
        Keep the final particles (B, d).
    progress : bool
        Progress bar on stderr (shown after 2 s).
    params : dict, optional
        Extra parameters to record in the result (the model's, for instance).

    Returns
    -------
    SimulationResult
    """
    rule = make_rule(rule)
    if not rule.uses_weight and (omega is not None or guidance_scale is not None):
        raise ValueError(f"omega: the {rule.name} rule takes its strength from its own parameters, not from a weight")
    omega = excess_weight(omega, guidance_scale) if rule.uses_weight else 0.0
    method, stepper = get_stepper(sampler, method)
    if rule.method is not None and method != rule.method:
        raise ValueError(f"method: the {rule.name} rule is defined for the {rule.method} method, got {method!r}")
    if int(particles) != particles or particles < 2:
        raise ValueError(f"particles must be an integer >= 2, got {particles!r}")
    particles = int(particles)
    process = field.process
    if isinstance(grid, str):
        if t_max is None:
            t_max = default_t_max(process, field.signal_var)
        times = time_grid(process, steps, t_max, t_min, kind=grid, class_var=field.reference_var)
        grid_name = grid
    else:
        times = check_grid(grid, process)
        grid_name = "explicit"
    omega = bind_schedule(omega, process=process)
    times = with_breakpoints(times, getattr(omega, "breakpoints", ()))
    omega = bind_schedule(omega, grid=times)
    steps, t_max, t_min = times.size - 1, float(times[0]), float(times[-1])
    if t_min == 0.0 and np.any(np.asarray(field.reference_var) == 0):
        raise ValueError("t_min must be > 0 when class_var is 0 (the score is singular at t = 0)")
    if method == "exponential" and float(process.a(times[1])) <= 0:
        raise ValueError("time grid: the exponential SDE step needs a_t > 0 after the first node")
    if method == "ddim" and float(process.var(t_max)) == 0:
        raise ValueError("t_max: DDIM needs noise at the start of every step")
    save_idx = _save_indices(times, save_times)
    brownian = BrownianSource(seed)
    weight_at(omega, t_max)  # fail fast on a schedule that returns nan, or one that is still unbound

    record = dict(params or {})
    record.update(
        omega=None if callable(omega) or not rule.uses_weight else omega,
        guidance_scale=None if callable(omega) or not rule.uses_weight else 1.0 + omega,
        schedule=repr(omega) if callable(omega) else "constant", rule=repr(rule),
        sampler=sampler, method=method, steps=steps, t_max=t_max, t_min=t_min, grid=grid_name,
        particles=particles, seed=int(seed), init=init, process=process.name, d=field.d,
    )

    groups = min(GROUPS, particles)
    labels, counts = obs.group_labels(particles, groups)
    names = None
    trajectory = {}
    saved_times = []
    start = time.perf_counter()
    guide = Guide(field, rule, omega, particles)
    x = field.sample_initial(t_max, particles, brownian.initial_rng(), init)
    ev = field.evaluate(x, t_max)
    n_evals, status, message = 1, 0, "ok"
    bar = tqdm(total=steps, disable=not progress, delay=2.0, file=sys.stderr, unit="step", desc="simulate")
    save_set = set(save_idx.tolist())
    # a diverging run (huge omega) is reported through status/message, not through warnings; BLAS
    # stays single-threaded: the kernel parallelises over row blocks itself, and idle OpenBLAS
    # threads spinning after a small multithreaded call would compete with it (solvers.kernel)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), single_threaded_blas():
        for i in range(steps + 1):
            t = float(times[i])
            t_next = float(times[i + 1]) if i < steps else None
            guided = guide(x, t, ev, t_next) if t_next is not None else None
            if i in save_set:
                state = obs.State(t, x, ev, guided, field)
                values = obs.trajectory_values(state)
                if names is None:
                    names = [n for n, v in values.items() if v is not None]
                    trajectory = {n: [] for n in names}
                for n in names:
                    trajectory[n].append(obs.group_means(values[n], labels, counts))
                saved_times.append(t)
            if t_next is None:
                break
            xi = brownian.increment(i, x.shape) if sampler == "sde" else None
            x, extra = stepper(field, guide, t, t_next, x, ev, guided, xi)
            if not np.all(np.isfinite(x)):
                status, message = 1, f"non-finite particles after the step to t = {t_next:.6g}"
                break
            ev = field.evaluate(x, t_next)
            n_evals += extra + 1
            bar.update()
        bar.close()

    trajectory = {n: np.array(v) for n, v in trajectory.items()}
    saved = np.array(saved_times)
    if status == 0:
        reference = field.sample_initial(t_min, particles, brownian.reference_rng(), "conditional")
        final = obs.final_statistics(field, x, ev, labels, counts, reference, field.evaluate(reference, t_min))
        final_mean, final_var = x.mean(0), x.var(0, ddof=1)
    else:
        final, final_mean, final_var = obs.undefined_statistics(), np.full(field.d, np.nan), np.full(field.d, np.nan)
    final["t_condensation"], final["t_condensation_stderr"] = _condensation(saved, trajectory, counts)
    return SimulationResult(
        params=record, grid=times, times=saved, group_counts=counts, trajectory=trajectory,
        final=final, final_mean=final_mean, final_var=final_var,
        samples=x.copy() if keep_samples else None, n_score_evals=n_evals,
        wall_time=time.perf_counter() - start, status=status, message=message,
    )


def _condensation(times, trajectory, counts):
    """Time at which the mean target posterior first reaches 1/2, with its jackknife error."""
    if "target_posterior" not in trajectory or times.size < 2:
        return None, None
    gm = trajectory["target_posterior"]
    mean, _ = obs.pooled(gm, counts)
    t_c = obs.crossing_time(times, mean)
    if t_c is None:
        return None, None
    B, G = counts.sum(), counts.size
    loo = [obs.crossing_time(times, (mean * B - gm[:, g] * counts[g]) / (B - counts[g])) for g in range(G)]
    if any(v is None for v in loo):
        return t_c, None
    loo = np.array(loo)
    return t_c, float(np.sqrt((G - 1) / G * np.sum((loo - loo.mean()) ** 2)))


def simulate(d=64, alpha=None, classes=None, mean_var=1.0, class_var=0.25, process="ou", target=0,
             means=None, weights=None, labels=None, modes=1, mode_weights=None, unconditional=None, seed=0,
             dtype="float64", chunk=None, threads=None, **kwargs):
    r"""Build the Gaussian mixture of DESIGN.md and :func:`run` guided sampling on it.

    Model: ``K`` classes :math:`\mathcal N(\mu_k, s^2 I)` in ``d`` dimensions; ``K = classes``
    or ``round(exp(alpha d))`` (default alpha = 0.12 when neither is given); means i.i.d.
    :math:`\mathcal N(0, \sigma_\mu^2 I)` (``mean_var``) from ``seed``, or given as ``means``
    (K, d) with optional component ``weights`` and class ``labels``; ``class_var`` is :math:`s^2`.
    ``modes`` > 1 makes every random class a mixture of that many components with within-class
    weights ``mode_weights`` (physics.mixture.GaussianMixture.random). ``unconditional``: None
    (the mixture of all classes), or a GaussianMixture used as an independent unconditional
    model, or a number v for :math:`\mathcal N(0, vI)` (Jin, Shi and Gu's setting with v = 1).
    ``process`` is 'ou', 've' or 'flow'. ``dtype`` is the precision of the kernel's GEMMs
    ('float64' or 'float32'); ``chunk`` and ``threads`` go to the kernel
    (solvers.kernel.posterior_moments). Other keyword arguments (weight, schedule, rule,
    sampler) go to :func:`run`.
    """
    if means is not None:
        if alpha is not None or classes is not None or modes != 1:
            raise ValueError("means: give either means (with weights, labels) or classes/alpha/modes, not both")
        model = GaussianMixture(means, class_var=class_var, weights=weights, labels=labels)
        d = model.d
    else:
        if labels is not None:
            raise ValueError("labels: give them with means")
        if alpha is None and classes is None:
            alpha = 0.12
        model = GaussianMixture.random(d, classes=classes, alpha=alpha, mean_var=mean_var, class_var=class_var,
                                       weights=weights, seed=seed, modes=modes, mode_weights=mode_weights)
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    uncond_label = "mixture"
    if unconditional is not None and not isinstance(unconditional, GaussianMixture):
        try:
            variance = float(unconditional)
        except (TypeError, ValueError):
            raise ValueError(f"unconditional: expected None, a GaussianMixture or a variance, got {unconditional!r}") \
                from None
        if not (math.isfinite(variance) and variance > 0):
            raise ValueError(f"unconditional: the variance must be a finite number > 0, got {unconditional!r}")
        uncond_label = f"N(0, {variance:g} I)"
        unconditional = GaussianMixture(np.zeros((1, model.d)), class_var=variance)
    elif unconditional is not None:
        uncond_label = "given"
    field = MixtureField(model, process=process, target=target, dtype=np.dtype(dtype), chunk=chunk, threads=threads,
                         unconditional=unconditional)
    params = dict(
        d=model.d, K=model.n_classes, components=model.K, alpha=alpha, classes=classes,
        mean_var=None if means is not None else float(mean_var), class_var=model.class_var,
        target=int(target), means="given" if means is not None else "random",
        weights="uniform" if weights is None else "given", modes=int(modes) if means is None else None,
        unconditional=uncond_label, dtype=dtype, chunk=chunk, model_seed=int(seed),
        target_norm=float(field.target_mean @ field.target_mean / model.d),
        alpha_effective=math.log(model.n_classes) / model.d,
    )
    return run(field, seed=seed, params=params, **kwargs)
