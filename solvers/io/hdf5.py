"""HDF5 files: self-describing, written atomically, read back as labelled xarray datasets.

Every result type converts to an ``xarray.Dataset`` (``.to_xarray()``); :func:`save` writes it as
a netCDF4-flavoured HDF5 file (h5netcdf: every dimension an HDF5 dimension scale), with the
provenance every cfgphase file carries (schema_version, package version, git revision, library
versions, host, creation time), so that ``xarray.open_dataset(path, engine="h5netcdf")`` or
:func:`open_dataset` read it with labelled coordinates. Layouts: data/README.md.

Writes never corrupt a file: a file is written under a temporary name in the same directory,
flushed to disk and renamed over the target (atomic on POSIX), so a reader, a kill or a full disk
leaves either the previous file or the new one, never a torn one, and a failure removes the
temporary file. Figure data (cfgphase.solvers.figures) are stored with :func:`write_arrays`.
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

import numpy as np

SCHEMA_VERSION = 2
LIBRARIES = ("numpy", "numba", "scipy", "h5py", "h5netcdf", "xarray", "mpmath", "matplotlib", "tqdm",
             "threadpoolctl")
SUFFIXES = (".h5", ".hdf5", ".nc")


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


def check_output_path(path, overwrite=False, name="out"):
    """Raise ValueError (naming ``name``) unless ``path`` can be written."""
    if not str(path):
        raise ValueError(f"{name}: empty file name")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a directory")
    if path.exists() and not overwrite:
        raise ValueError(f"{name}: {path} exists (pass --overwrite to replace it)")
    if not path.parent.is_dir():
        raise ValueError(f"{name}: directory {path.parent} does not exist")
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{name}: expected a {', '.join(SUFFIXES)} file name, got {path.name}")


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path in ``path``'s directory that is renamed to ``path`` once the block succeeds.

    The file written there is flushed to disk before the rename; on any exception (a full disk, a
    kill delivered as an exception) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to collaborators
        yield Path(tmp)
        with open(tmp, "rb") as fh:  # on disk before the rename, so a crash cannot leave an empty file
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_h5(path):
    """An ``h5py.File`` open for writing that appears at ``path`` only once it is complete."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f


def remove_stale_temporaries(path):
    """Delete temporary files that a writer of ``path`` killed mid-write left behind (atomic_path)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_dataset(path, dataset):
    """Write an ``xarray.Dataset`` to ``path`` atomically, with the provenance attributes."""
    ds = dataset.copy()
    ds.attrs = {**dataset.attrs, **provenance()}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def save(result, path, overwrite=False):
    """Write a result (anything with ``to_xarray()``: a simulation, a prediction) to an HDF5 file.

    Refuses to replace an existing file unless ``overwrite``; writes atomically (see module).
    """
    check_output_path(path, overwrite)
    write_dataset(path, result.to_xarray())
    return Path(path)


def check_file(path, kinds=None):
    """The ``kind`` attribute of a cfgphase HDF5 file; ValueError naming ``file`` if it is missing,
    unreadable, not HDF5, not written by cfgphase, or of another kind than ``kinds``."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"file: {path} does not exist or is not a file")
    try:
        with h5py.File(path, "r") as f:
            kind = f.attrs.get("kind")
    except OSError as err:
        raise ValueError(f"file: {path} is not a readable HDF5 file ({err})") from None
    if isinstance(kind, bytes):
        kind = kind.decode()
    if not isinstance(kind, str):
        raise ValueError(f"file: {path} was not written by cfgphase (no 'kind' attribute)")
    if kinds is not None and kind not in kinds:
        raise ValueError(f"file: {path} holds {kind!r} data, expected one of {sorted(kinds)}")
    return kind


def open_dataset(path):
    """A cfgphase HDF5 file as an ``xarray.Dataset`` with labelled coordinates, loaded into memory."""
    import xarray as xr

    check_file(path)
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"file: {path} cannot be read as a dataset ({err})") from None


def write_arrays(path, kind, arrays, params):
    """Named arrays with a kind and parameters (JSON), atomically: the storage of figure data.

    Layout: attrs ``kind = "figure"``, ``figure_kind``, ``params`` (JSON) and the provenance of
    every file; one dataset per array (strings as UTF-8).
    """
    import h5py

    with atomic_h5(path) as f:
        f.attrs.update(provenance())
        f.attrs.update(kind="figure", figure_kind=kind, params=json.dumps(params, default=str))
        for name, values in arrays.items():
            values = np.asarray(values)
            if values.dtype.kind in "OUS":
                f.create_dataset(name, data=values.astype(str).astype(object), dtype=h5py.string_dtype())
            else:
                f.create_dataset(name, data=values)


def read_arrays(path):
    """(figure kind, arrays, params) of a file written by :func:`write_arrays`."""
    import h5py

    check_file(path, {"figure"})
    try:
        with h5py.File(path, "r") as f:
            arrays = {name: (f[name].asstr()[()] if h5py.check_string_dtype(f[name].dtype) else f[name][()])
                      for name in f}
            return str(f.attrs["figure_kind"]), arrays, json.loads(f.attrs["params"])
    except (KeyError, OSError, json.JSONDecodeError) as err:
        raise ValueError(f"file: {path} is a damaged figure-data file ({err})") from None
