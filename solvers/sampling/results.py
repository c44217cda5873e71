"""The result of one simulation, with its inputs, and its conversion to xarray.

A :class:`Simulation` knows everything that produced it (model, guidance, sampler, seeds,
versions at write time), its counters and status, the trajectory observables as group means
(so that standard errors of any smooth function of them follow, eq. 14) and the final statistics.
``to_xarray()`` gives one data variable per statistic with labelled coordinates; files are
written from that dataset (cfgphase.solvers.io.hdf5). Statistic names and meanings:
cfgphase.physics.statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cfgphase.physics.statistics import describe
from cfgphase.solvers.sampling import observables as obs

#: Keys of the command line's ``--json`` record, in order (the statistics follow).
SUMMARY_KEYS = ("d", "K", "alpha", "omega", "guidance_scale", "mean_var", "class_var", "process", "sampler",
                "method", "schedule", "rule", "steps", "particles", "seed", "model_seed", "dtype", "means", "blas",
                "disorder", "components", "target", "target_label")


def attribute(value):
    """A value as a file attribute: None and non-finite numbers become NaN, never a string."""
    if value is None:
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return value


@dataclass
class Simulation:
    """Everything one simulation produced.

    ``trajectory[name]`` has shape (n_save, G): group means of observable ``name`` at ``times``;
    :meth:`observable` pools them into mean and standard error. ``final`` maps every final
    statistic (and its ``_stderr``) to a float, or None where it is not defined; a value that was
    computed but is not finite is reported as it is, and ``status``/``message`` say why.
    """

    params: dict  #: model, guidance and sampler records, the noise seed, particles, dtype
    grid: np.ndarray
    times: np.ndarray
    group_counts: np.ndarray
    trajectory: dict
    final: dict
    final_mean: np.ndarray
    final_var: np.ndarray
    #: Statistics per class (``coverage_per_class`` of a data model), each (C,) in the order of
    #: ``class_labels`` (C,); its ``_stderr`` companion may be None.
    per_class: dict = field(default_factory=dict)
    class_labels: np.ndarray | None = None
    samples: np.ndarray | None = None
    n_score_evals: int = 0
    wall_time: float = 0.0
    status: int = 0
    message: str = "ok"
    extra: dict = field(default_factory=dict)

    def observable(self, name):
        """(mean, stderr) over particles of trajectory observable ``name``, each (n_save,)."""
        return obs.pooled(self.trajectory[name], self.group_counts)

    @property
    def non_finite(self):
        """Names of the final statistics that were computed but are not finite (an infinite
        E[1/p(c|x)] when a sample sits deep in another class, a diverged run): distinct from the
        statistics that are not defined here (None)."""
        return [k for k, v in self.final.items() if v is not None and not math.isfinite(v)]

    def summary(self):
        """The flat JSON-ready record: inputs, then final statistics and their standard errors, the
        names of the non-finite ones (``non_finite``; JSON has no infinity, they print as null)."""
        out = {k: self.params.get(k) for k in SUMMARY_KEYS}
        out.update(self.final)
        for name, values in self.per_class.items():  # keyed by class label (a JSON key is a string)
            out[name] = None if values is None else {str(c): float(v) for c, v in zip(self.class_labels, values)}
        out.update(non_finite=self.non_finite, status=self.status, message=self.message, wall_time=self.wall_time,
                   n_score_evals=self.n_score_evals)
        return out

    def to_xarray(self):
        """An ``xarray.Dataset``: trajectory observables over ``time`` (with ``_stderr`` and the group
        means over ``group``), final statistics as scalars, the final per-coordinate moments over
        ``coordinate``, statistics per class over ``class`` (its labels), the kept samples over
        (``particle``, ``coordinate``), the grid over ``node``;
        every input in ``attrs``. Missing values are NaN."""
        import xarray as xr

        data = {}
        for name, groups in self.trajectory.items():
            mean, stderr = self.observable(name)
            for key, values, dims in ((name, mean, ("time",)), (name + "_stderr", stderr, ("time",)),
                                      (name + "_groups", groups, ("time", "group"))):
                meaning, units = describe(name)
                data[key] = xr.Variable(dims, values, {"long_name": meaning + (" (standard error)" if key.endswith(
                    "_stderr") else " (group means)" if key.endswith("_groups") else ""), "units": units})
        for key, value in self.final.items():
            meaning, units = describe(key)
            data[key] = xr.Variable((), np.nan if value is None else float(value),
                                    {"long_name": meaning, "units": units})
        data["final_mean"] = xr.Variable(("coordinate",), self.final_mean,
                                         {"long_name": "per-coordinate mean of the final sample", "units": "data units"})
        data["final_var"] = xr.Variable(("coordinate",), self.final_var,
                                        {"long_name": "per-coordinate variance of the final sample",
                                         "units": "data units^2"})
        for key, values in self.per_class.items():
            meaning, units = describe(key)
            data[key] = xr.Variable(("class",), np.full(self.class_labels.size, np.nan) if values is None else values,
                                    {"long_name": meaning, "units": units})
        data["grid"] = xr.Variable(("node",), self.grid, {"long_name": "integration grid", "units": "forward time"})
        if self.samples is not None:
            data["samples"] = xr.Variable(("particle", "coordinate"), self.samples,
                                          {"long_name": "final particles", "units": "data units"})
        coords = {"time": ("time", self.times, {"long_name": "forward time (t = 0 is data)", "units": "forward time"}),
                  "group": ("group", np.arange(self.group_counts.size),
                            {"long_name": "particle group (particle i is in group i mod G)"}),
                  "group_size": ("group", self.group_counts, {"long_name": "particles per group"})}
        if self.per_class:
            coords["class"] = ("class", self.class_labels, {"long_name": "class label"})
        attrs = {k: attribute(v) for k, v in self.params.items()}
        attrs.update(kind="simulation", status=self.status, message=self.message, wall_time=self.wall_time,
                     n_score_evals=self.n_score_evals, non_finite=",".join(self.non_finite))
        return xr.Dataset(data, coords=coords, attrs=attrs)
