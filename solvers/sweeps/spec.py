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
    steps = 100

:func:`read_config` reads the TOML file; :func:`config_from_options` builds the same dictionary
from the options of ``cfgphase phase-diagram``.
"""

from __future__ import annotations

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
SIMULATION_OPTIONS = dict(particles=512, steps=100, t_max=7.0, dtype="float64", threads=1, seeds=None)
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


def _axis(section, key, value, kind=float):
    """A list of values from a list, a scalar or {start, stop, num}; ValueError naming section.key."""
    name = f"{section}.{key}"
    if isinstance(value, dict):
        unknown = set(value) - {"start", "stop", "num"}
        if unknown or set(value) != {"start", "stop", "num"}:
            raise ValueError(f"{name}: a range needs exactly start, stop and num, got {sorted(value)}")
        num = value["num"]
        if not isinstance(num, int) or num < 1:
            raise ValueError(f"{name}: empty range (num = {num!r})")
        values = np.linspace(float(value["start"]), float(value["stop"]), num).tolist()
    else:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"{name}: empty range")
    try:
        values = [kind(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {kind.__name__} values, got {values!r}") from None
    if kind is float and not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name}: values must be finite, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: repeated values {values!r}")
    return values


def _options(section, given, defaults):
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"{section}.{sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(defaults))})")
    return {**defaults, **given}


def parse_spec(config):
    """Validate a sweep dictionary (the TOML layout above) into a :class:`SweepSpec`.

    Raises ValueError naming the offending key: unknown keys, empty ranges, schedule parameters
    that do not belong to the schedule, values out of range.
    """
    config = dict(config)
    unknown = set(config) - {"schedule", "model", "theory", "simulation"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown key (known: schedule, model, theory, simulation)")
    schedule = config.get("schedule", "constant")
    if schedule not in SCHEDULE_AXES:
        raise ValueError(f"schedule: must be one of {sorted(SCHEDULE_AXES)}, got {schedule!r}")
    model = _options("model", config.get("model", {}), MODEL_DEFAULTS)
    from cfgphase.physics.processes import PROCESSES

    if model["process"] not in PROCESSES:
        raise ValueError(f"model.process: must be one of {sorted(PROCESSES)}, got {model['process']!r}")
    for key in ("mean_var", "class_var"):
        if not (isinstance(model[key], (int, float)) and model[key] > 0):
            raise ValueError(f"model.{key}: must be a number > 0, got {model[key]!r}")
    theory_in = dict(config.get("theory", {}))
    if "alpha" not in theory_in:
        raise ValueError("theory.alpha: missing (the grid needs an alpha axis)")
    theory_axes, theory_given = _guidance_axes("theory", theory_in, schedule, required=True)
    theory = _options("theory", theory_given, THEORY_OPTIONS)
    spec = SweepSpec(schedule, model, theory_axes, theory)
    if "simulation" in config:
        sim_in = dict(config["simulation"])
        for key in ("alpha", "sampler", *SCHEDULE_AXES[schedule]):
            sim_in.setdefault(key, theory_axes[key])
        if "d" not in sim_in:
            raise ValueError("simulation.d: missing (simulations need dimensions)")
        sim_axes, sim_given = _guidance_axes("simulation", sim_in, schedule, required=False)
        sim_axes["d"] = _axis("simulation", "d", sim_given.pop("d"), int)
        if "seed" in sim_given and "seeds" in sim_given:
            raise ValueError("simulation.seeds: give seeds (a count) or seed (a list), not both")
        seeds = sim_given.pop("seed", None)
        simulation = _options("simulation", sim_given, SIMULATION_OPTIONS)
        if seeds is None:
            count = 1 if simulation["seeds"] is None else simulation["seeds"]
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"simulation.seeds: must be an integer >= 1, got {count!r}")
            seeds = list(range(count))
        simulation["seeds"] = None
        sim_axes["seed"] = _axis("simulation", "seed", seeds, int)
        for key in ("particles", "steps", "threads"):
            if not isinstance(simulation[key], int) or simulation[key] < 1:
                raise ValueError(f"simulation.{key}: must be an integer >= 1, got {simulation[key]!r}")
        if simulation["dtype"] not in ("float64", "float32"):
            raise ValueError(f"simulation.dtype: must be 'float64' or 'float32', got {simulation['dtype']!r}")
        if any(v < 1 for v in sim_axes["d"]):
            raise ValueError(f"simulation.d: dimensions must be >= 1, got {sim_axes['d']}")
        spec.sim_axes, spec.simulation = sim_axes, simulation
    return spec


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
        try:
            return float(v)
        except ValueError:
            return v
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
        sim = config["simulation"] = {"d": [int(v) for v in parse_range(given["sim-d"], "sim-d")]}
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
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--config: {path} is not valid TOML: {err}") from None
