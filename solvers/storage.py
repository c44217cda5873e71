"""HDF5 storage of simulation results: self-describing, written atomically.

Layout of a ``cfgphase simulate --out run.h5`` file (schema_version 1):

``/``               attrs: schema_version, package_version, git_revision, created (UTC ISO 8601),
                    library_versions (JSON), kind = "simulation", status, message, wall_time,
                    n_score_evals, and every input parameter (defaults included) as an attribute
``/grid``           (N+1,) forward times of the integration grid
``/trajectory``     ``time`` (n_save,), a dimension scale; per observable ``NAME`` and
                    ``NAME_stderr`` (n_save,) attached to it; ``NAME_groups`` (n_save, G) the
                    group means behind them
``/final``          attrs: every final statistic and its ``_stderr`` (NaN where not defined);
                    datasets ``mean`` and ``var`` (d,), per-coordinate moments of the final sample
``/samples``        (B, d) final particles, only when asked for

The file is written to a temporary name in the same directory and renamed into place, so a
reader never sees a half-written file and a failure leaves no file behind.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

SCHEMA_VERSION = 1
LIBRARIES = ("numpy", "numba", "scipy", "h5py", "mpmath", "matplotlib", "tqdm", "threadpoolctl")


def package_version():
    try:
        return metadata.version("cfgphase")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_revision():
    """Git revision of the source tree this package runs from, or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def provenance():
    """Attributes every file carries: schema, versions, revision, host and creation time."""
    versions = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "absent"
    return {
        "schema_version": SCHEMA_VERSION,
        "package_version": package_version(),
        "git_revision": git_revision(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "library_versions": json.dumps(versions),
    }


def _attr(value):
    """HDF5-storable form of a parameter: None becomes 'none'; everything else as is."""
    return "none" if value is None else value


def check_output_path(path, overwrite=False):
    """Raise ValueError (naming ``out``) unless ``path`` can be written."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"out: {path} exists (pass --overwrite to replace it)")
    if not path.parent.is_dir():
        raise ValueError(f"out: directory {path.parent} does not exist")
    if path.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"out: expected a .h5 or .hdf5 file name, got {path.name}")


@contextlib.contextmanager
def atomic_h5(path):
    """Open a new HDF5 file for writing that appears at ``path`` only once it is complete.

    The file is written under a temporary name in the same directory, then renamed over
    ``path`` (atomic on POSIX): a reader, or a process killed at any moment, sees either the
    previous file or the new one, never a torn one. On an exception the temporary file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to collaborators
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        with open(tmp, "rb") as fh:  # on disk before the rename, so a crash cannot leave an empty file
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path):
    """Delete temporary files that a writer of ``path`` killed mid-write left behind (atomic_h5)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_simulation(path, result):
    """Write a :class:`solvers.simulate.SimulationResult` to ``path`` atomically."""
    with atomic_h5(path) as f:
        f.attrs.update(provenance())
        f.attrs["kind"] = "simulation"
        for key, value in result.params.items():
            f.attrs[key] = _attr(value)
        f.attrs.update(status=result.status, message=result.message, wall_time=result.wall_time,
                       n_score_evals=result.n_score_evals)
        f.create_dataset("grid", data=result.grid).attrs["units"] = "forward time"
        traj = f.create_group("trajectory")
        time = traj.create_dataset("time", data=result.times)
        time.attrs["units"] = "forward time (t = 0 is data)"
        time.make_scale("time")
        for name, groups in result.trajectory.items():
            mean, stderr = result.observable(name)
            for suffix, data in (("", mean), ("_stderr", stderr)):
                ds = traj.create_dataset(name + suffix, data=data)
                ds.dims[0].attach_scale(time)
            traj.create_dataset(name + "_groups", data=groups)
        final = f.create_group("final")
        for key, value in result.final.items():
            final.attrs[key] = np.nan if value is None else value
        final.create_dataset("mean", data=result.final_mean)
        final.create_dataset("var", data=result.final_var)
        if result.samples is not None:
            f.create_dataset("samples", data=result.samples, compression="gzip")



def write_figure_data(path, data):
    """Write a :class:`solvers.figure_data.FigureData` to ``path`` atomically.

    Layout: attrs ``kind = "figure"``, ``figure_kind``, ``params`` (JSON) and the provenance of
    every file; one dataset per array (strings as UTF-8).
    """
    with atomic_h5(path) as f:
        f.attrs.update(provenance())
        f.attrs.update(kind="figure", figure_kind=data.kind, params=json.dumps(data.params, default=str))
        for name, values in data.arrays.items():
            values = np.asarray(values)
            if values.dtype.kind in "OUS":
                f.create_dataset(name, data=values.astype(str).astype(object), dtype=h5py.string_dtype())
            else:
                f.create_dataset(name, data=values)


def read_figure_data(path):
    """The :class:`solvers.figure_data.FigureData` stored in ``path``."""
    from solvers.figure_data import FigureData

    with h5py.File(path, "r") as f:
        if f.attrs.get("kind") != "figure":
            raise ValueError(f"file: {path} holds no figure data (kind {f.attrs.get('kind')!r})")
        arrays = {name: (f[name].asstr()[()] if h5py.check_string_dtype(f[name].dtype) else f[name][()])
                  for name in f}
        return FigureData(str(f.attrs["figure_kind"]), arrays, json.loads(f.attrs["params"]))
