"""What a worker computes: the units of a sweep (one theory unit per guidance and sampler, covering
every alpha with one bulk integration; one simulation unit per point of the simulation grid)."""

from __future__ import annotations

import math
import time
import traceback

import numpy as np

THEORY_STATS = ("mean_ratio", "var_par", "var_perp", "distortion", "t_condensation", "entropy_at_condensation")
SIM_STATS = ("mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "inv_prob", "t_condensation")


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
