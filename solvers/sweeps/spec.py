"""What a phase-diagram sweep computes: axes and options, validated, from TOML or command-line ranges.

A sweep is described by a plain dictionary (from a TOML file or from command-line ranges),
validated by :func:`parse_spec` into a :class:`SweepSpec` with every default filled in:

.. code-block:: toml

    schedule = "constant"             # or "linear" (w0, slope) or "switch" (omega, t_switch, after)
    [model]                           # mean_var = 1, class_var = 0.25, process = "ou"
    [theory]                          # one axis per key; a list or {start, stop, num}
    alpha = {start = 0.0, stop = 0.6, num = 101}
    omega = {start = 0.0, stop = 5.0, num = 101}
    sampler = ["ode"]
    [simulation]                      # optional: the coarse check
    alpha = [0.1, 0.15]
    omega = [0.0, 1.0, 2.0]
    d = [32, 64]
    seeds = 2                         # replicate seeds 0 .. seeds-1 (or seed = [...])
    particles = 512
    steps = 100                       # also t_max (7, or the end of the process's time range),
                                      # dtype ("float64"), threads (1)

Types are strict: an integer key (d, seeds, seed, particles, steps, threads, num) refuses 8.7 and
true, a number accepts integers but not booleans or strings, a string refuses numbers.
:func:`read_config` reads the TOML file; :func:`config_from_options` builds the same dictionary
from the options of ``cfgphase phase-diagram``.
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field

import numpy as np

SCHEDULE_AXES = {"constant": ("omega",), "linear": ("w0", "slope"), "switch": ("omega", "t_switch", "after")}
SCHEDULE_DEFAULTS = {"after": -1.0}
ALL_SCHEDULE_PARAMETERS = ("omega", "w0", "slope", "t_switch", "after")
MODEL_DEFAULTS = dict(mean_var=1.0, class_var=0.25, process="ou")
THEORY_OPTIONS = dict(t_max=None)
#: t_max None: SIMULATION_T_MAX, or the end of the process's time range if that comes first (flow: 1)
SIMULATION_OPTIONS = dict(particles=512, steps=100, t_max=None, dtype="float64", threads=1, seeds=None,
                          time_limit=3600.0)
SIMULATION_T_MAX = 7.0
#: Largest number of values on one axis and of points on one grid (theory or simulation): a typo guard.
MAX_POINTS = 1_000_000
#: Largest number of kernel threads per simulation: a typo guard.
MAX_THREADS = 1024


@dataclass
class SweepSpec:
    """A validated sweep: axes (lists of values) and every option, defaults included."""

    schedule: str
    model: dict
    theory_axes: dict  #: alpha, the schedule's parameters, sampler
    theory: dict
    sim_axes: dict = field(default_factory=dict)  #: alpha, schedule parameters, sampler, d, seed (empty: none)
    simulation: dict = field(default_factory=dict)

    @property
    def guidance_axes(self):
        return SCHEDULE_AXES[self.schedule]

    def to_json(self):
        # key order is kept: it is the order of the array dimensions
        return json.dumps(asdict(self))


_EXPECTED = {str: "a string", int: "an integer", float: "a number"}


def _typed(name, value, kind):
    """``value`` checked to have the TOML type ``kind`` (float, int or str); ValueError naming ``name``.

    An integer refuses 8.7 and true; a number accepts integers but refuses booleans and strings and
    must be finite; a string refuses numbers. NumPy scalars become Python ones; values are otherwise
    returned as given (an integer stays an integer in a number field, as the stored spec has it).
    """
    if isinstance(value, np.generic):
        value = value.item()
    if kind is str:
        ok = isinstance(value, str)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"{name}: expected {_EXPECTED[kind]}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return value


def _section(config, name):
    """The table ``name`` of the configuration (empty if absent); ValueError naming it if not a table."""
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a table of keys ([{name}] in TOML), got {value!r}")
    return dict(value)


def _axis(section, key, value, kind=float):
    """A list of values from a list, a scalar or {start, stop, num}; ValueError naming section.key."""
    name = f"{section}.{key}"
    if isinstance(value, dict):
        if set(value) != {"start", "stop", "num"}:
            raise ValueError(f"{name}: a range needs exactly start, stop and num, got {sorted(map(str, value))}")
        if kind is str:
            raise ValueError(f"{name}: expected a list of strings, got a range")
        num = _typed(f"{name}.num", value["num"], int)
        if not 1 <= num <= MAX_POINTS:
            raise ValueError(f"{name}: num must be an integer in [1, {MAX_POINTS}], got {num!r}")
        start, stop = (_typed(f"{name}.{end}", value[end], float) for end in ("start", "stop"))
        values = np.linspace(start, stop, num).tolist()
        if kind is int:
            if not all(v.is_integer() for v in values):
                raise ValueError(f"{name}: the range {start}:{stop}:{num} gives values that are not integers")
            values = [int(v) for v in values]
    else:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(values) > MAX_POINTS:
            raise ValueError(f"{name}: more than {MAX_POINTS} values")
        values = [kind(_typed(name, v, kind)) for v in values]
    if not values:
        raise ValueError(f"{name}: empty range")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: repeated values {values!r}")
    return values


def _options(section, given, defaults):
    unknown = set(given) - set(defaults)
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise ValueError(f"{section}.{key}: unknown key (known: {', '.join(sorted(defaults))})")
    return {**defaults, **given}


def _bounded_integer(name, value, low, high):
    value = _typed(name, value, int)
    if not low <= value <= high:
        raise ValueError(f"{name}: must be an integer in [{low}, {high}], got {value!r}")
    return value


def parse_spec(config):
    """Validate a sweep dictionary (the TOML layout above) into a :class:`SweepSpec`.

    Every check runs here, before any work: unknown keys, sections that are not tables, values of
    the wrong TOML type, empty or oversized ranges, schedule parameters that do not belong to the
    schedule or that the schedule refuses, values out of range (times beyond the process's time
    range, steps, particles, seeds, threads, dtype) and simulations whose class means (K = e^{alpha d})
    or particles would not fit in memory. Raises ValueError naming the offending key.
    """
    from cfgphase.physics.processes import PROCESSES, get_process

    if not isinstance(config, dict):
        raise ValueError(f"config: expected a table of sections (schedule, model, theory, simulation), "
                         f"got {type(config).__name__}")
    unknown = set(config) - {"schedule", "model", "theory", "simulation"}
    if unknown:
        raise ValueError(f"{sorted(map(str, unknown))[0]}: unknown key (known: schedule, model, theory, simulation)")
    schedule = _typed("schedule", config.get("schedule", "constant"), str)
    if schedule not in SCHEDULE_AXES:
        raise ValueError(f"schedule: must be one of {sorted(SCHEDULE_AXES)}, got {schedule!r}")
    model = _options("model", _section(config, "model"), MODEL_DEFAULTS)
    if _typed("model.process", model["process"], str) not in PROCESSES:
        raise ValueError(f"model.process: must be one of {sorted(PROCESSES)}, got {model['process']!r}")
    process = get_process(model["process"])
    for key in ("mean_var", "class_var"):
        model[key] = _typed(f"model.{key}", model[key], float)
        if not model[key] > 0:
            raise ValueError(f"model.{key}: must be a number > 0, got {model[key]!r}")
    theory_in = _section(config, "theory")
    if "alpha" not in theory_in:
        raise ValueError("theory.alpha: missing (the grid needs an alpha axis)")
    theory_axes, theory_given = _guidance_axes("theory", theory_in, schedule, required=True)
    theory = _options("theory", theory_given, THEORY_OPTIONS)
    if theory["t_max"] is not None:
        theory["t_max"] = _typed("theory.t_max", theory["t_max"], float)
        process.check_span(theory["t_max"], 0.0, "theory.t_max")
    _check_grid("theory", theory_axes, schedule, process)
    spec = SweepSpec(schedule, model, theory_axes, theory)
    if "simulation" in config:
        sim_in = _section(config, "simulation")
        for key in ("alpha", "sampler", *SCHEDULE_AXES[schedule]):
            sim_in.setdefault(key, theory_axes[key])
        if "d" not in sim_in:
            raise ValueError("simulation.d: missing (simulations need dimensions)")
        sim_axes, sim_given = _guidance_axes("simulation", sim_in, schedule, required=False)
        sim_axes["d"] = _axis("simulation", "d", sim_given.pop("d"), int)
        if any(v < 1 for v in sim_axes["d"]):
            raise ValueError(f"simulation.d: dimensions must be >= 1, got {sim_axes['d']}")
        if "seed" in sim_given and "seeds" in sim_given:
            raise ValueError("simulation.seeds: give seeds (a count) or seed (a list), not both")
        seeds = sim_given.pop("seed", None)
        simulation = _options("simulation", sim_given, SIMULATION_OPTIONS)
        if seeds is None:
            count = 1 if simulation["seeds"] is None else simulation["seeds"]
            seeds = list(range(_bounded_integer("simulation.seeds", count, 1, MAX_POINTS)))
        simulation["seeds"] = None
        sim_axes["seed"] = _axis("simulation", "seed", seeds, int)
        if any(v < 0 for v in sim_axes["seed"]):
            raise ValueError(f"simulation.seed: seeds must be integers >= 0, got {sim_axes['seed']}")
        _check_simulation(simulation, sim_axes, process)
        _check_grid("simulation", sim_axes, schedule, process)
        spec.sim_axes, spec.simulation = sim_axes, simulation
    return spec


def _check_simulation(simulation, sim_axes, process):
    """Validate the simulation options in place (t_max filled in), and that the class means and the
    particles of the largest simulation fit in memory."""
    from cfgphase.physics.mixture import number_of_classes
    from cfgphase.solvers.sampling.driver import check_particles
    from cfgphase.solvers.sampling.sampler import MAX_STEPS

    _bounded_integer("simulation.steps", simulation["steps"], 1, MAX_STEPS)
    _bounded_integer("simulation.threads", simulation["threads"], 1, MAX_THREADS)
    if _typed("simulation.dtype", simulation["dtype"], str) not in ("float64", "float32"):
        raise ValueError(f"simulation.dtype: must be 'float64' or 'float32', got {simulation['dtype']!r}")
    if simulation["t_max"] is None:
        simulation["t_max"] = min(SIMULATION_T_MAX, float(process.t_upper))
    simulation["t_max"] = _typed("simulation.t_max", simulation["t_max"], float)
    process.check_span(simulation["t_max"], 0.0, "simulation.t_max")
    simulation["time_limit"] = _typed("simulation.time_limit", simulation["time_limit"], float)
    if not (math.isfinite(simulation["time_limit"]) and simulation["time_limit"] > 0):
        raise ValueError(f"simulation.time_limit: seconds per point, a finite number > 0, got "
                         f"{simulation['time_limit']!r}")
    d_max = max(sim_axes["d"])
    check_particles(_typed("simulation.particles", simulation["particles"], int), d_max, "simulation.particles")
    alpha = max(sim_axes["alpha"])  # K = e^{alpha d} grows with alpha at every d
    for d in sim_axes["d"]:
        try:
            number_of_classes(d, alpha=alpha)
        except ValueError as err:
            raise ValueError(f"simulation.alpha: {err}") from None


def _check_grid(section, axes, schedule, process):
    """The grid's size, and every combination of the schedule's parameters as the schedule itself
    checks it (the weight floor -1, t_switch inside the process's time range, ...)."""
    from cfgphase.physics.schedules import bind_schedule, make_schedule

    size = math.prod(len(v) for v in axes.values())
    if size > MAX_POINTS:
        raise ValueError(f"{section}: the grid has {size} points, more than {MAX_POINTS}")
    names = SCHEDULE_AXES[schedule]
    for values in itertools.product(*(axes[k] for k in names)):
        point = dict(zip(names, values))
        try:
            bind_schedule(make_schedule(schedule, **point), process=process)
        except ValueError as err:
            key = next((k for k in names if k in str(err)), names[0])
            where = "" if len(names) == 1 else f" (at {', '.join(f'{k} = {v:g}' for k, v in point.items())})"
            raise ValueError(f"{section}.{key}: {err}{where}") from None


def _guidance_axes(section, given, schedule, required):
    """Split a section into axes (alpha, schedule parameters, sampler) and the remaining options."""
    given = dict(given)
    allowed = SCHEDULE_AXES[schedule]
    for key in ALL_SCHEDULE_PARAMETERS:
        if key in given and key not in allowed:
            raise ValueError(f"{section}.{key}: does not apply to the {schedule} schedule "
                             f"(its parameters: {', '.join(allowed)})")
    axes = {"alpha": _axis(section, "alpha", given.pop("alpha"))}
    if any(v < 0 for v in axes["alpha"]):
        raise ValueError(f"{section}.alpha: must be >= 0, got {axes['alpha']}")
    for key in allowed:
        if key not in given and key not in SCHEDULE_DEFAULTS:
            raise ValueError(f"{section}.{key}: missing (the {schedule} schedule needs it)")
        axes[key] = _axis(section, key, given.pop(key, SCHEDULE_DEFAULTS.get(key)))
    axes["sampler"] = _axis(section, "sampler", given.pop("sampler", ["ode"]), str)
    bad = [s for s in axes["sampler"] if s not in ("ode", "sde")]
    if bad:
        raise ValueError(f"{section}.sampler: must be 'ode' or 'sde', got {bad[0]!r}")
    return axes, given


#: Command-line grid options (``--key``) of ``cfgphase phase-diagram``, by section.
MODEL_OPTIONS = ("mean-var", "class-var", "process")
THEORY_AXES_OPTIONS = ("alpha", "omega", "w0", "slope", "t-switch", "after", "sampler")
SIMULATION_AXES_OPTIONS = ("sim-alpha", "sim-omega", "sim-d")
SIMULATION_SCALAR_OPTIONS = ("seeds", "particles", "steps")
GRID_OPTIONS = ("schedule", *THEORY_AXES_OPTIONS, *MODEL_OPTIONS, *SIMULATION_AXES_OPTIONS,
                *SIMULATION_SCALAR_OPTIONS)


def parse_range(text, name):
    """START:STOP:NUM or a comma list (numbers or words) from the option ``--name``."""
    def number(v):
        for kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                pass
        return v.strip()
    parts = text.split(":")
    if len(parts) == 3:
        try:
            return dict(start=float(parts[0]), stop=float(parts[1]), num=int(parts[2]))
        except ValueError:
            raise ValueError(f"--{name}: expected START:STOP:NUM, got {text!r}") from None
    return [number(v) for v in text.split(",") if v.strip()]


def config_from_options(given):
    """The sweep dictionary of the grid options ``given`` ({option name: text or number})."""
    unknown = set(given) - set(GRID_OPTIONS)
    if unknown:
        raise ValueError(f"--{sorted(unknown)[0]}: not a grid option")
    config = {"schedule": given.get("schedule", "constant"), "model": {}, "theory": {}}
    for key in MODEL_OPTIONS:
        if key in given:
            config["model"][key.replace("-", "_")] = given[key]
    for key in THEORY_AXES_OPTIONS:
        if key in given:
            config["theory"][key.replace("-", "_")] = parse_range(given[key], key)
    if "sim-d" in given:
        sim = config["simulation"] = {"d": parse_range(given["sim-d"], "sim-d")}
        for key in ("sim-alpha", "sim-omega"):
            if key in given:
                sim[key[4:]] = parse_range(given[key], key)
        for key in SIMULATION_SCALAR_OPTIONS:
            if key in given:
                sim[key] = given[key]
    elif any(k in given for k in ("sim-alpha", "sim-omega", *SIMULATION_SCALAR_OPTIONS)):
        raise ValueError("--sim-d: simulation options need the dimensions to simulate")
    return config


def read_config(path):
    """The sweep dictionary of a TOML file; ValueError naming --config if unreadable."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as err:
        raise ValueError(f"--config: cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config: {path} is not a text file (a TOML file is UTF-8 text)") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--config: {path} is not valid TOML: {err}") from None
