"""The writer's side of a sweep: the arrays of every variable, the journal of finished units and
the HDF5 file (schema: data/README.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cfgphase.solvers.sweeps.spec import SweepSpec
from cfgphase.solvers.sweeps.units import SIM_STATS, THEORY_STATS

UNITS = {"alpha": "log(K)/d", "omega": "excess guidance weight", "w0": "excess guidance weight at t = 0",
         "slope": "per unit VE-equivalent time", "t_switch": "forward time", "after": "excess guidance weight",
         "d": "dimension", "seed": "seed", "sampler": "sampler", "mean_ratio": "1", "var_par": "data units^2",
         "var_perp": "data units^2", "distortion": "nats per dimension", "t_condensation": "forward time",
         "accuracy": "1", "inv_prob": "1", "entropy_at_condensation": "nats per dimension",
         "condensation_boundary": "log(K)/d", "alpha_max": "log(K)/d", "frozen_boundary": "excess guidance weight",
         "crossing": "1"}
#: Largest number of annealed/frozen crossings stored per alpha (frozen_boundary).
CROSSINGS = 4


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


def append_journal(handle, result):
    handle.write(json.dumps(result) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def replay_journal(path, state, key):
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
