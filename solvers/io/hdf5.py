"""HDF5 files: self-describing, written atomically, read back as labelled xarray datasets.

Every result type converts to an ``xarray.Dataset`` (``.to_xarray()``); :func:`save` writes it as
a netCDF4-flavoured HDF5 file (h5netcdf: every dimension an HDF5 dimension scale), with the
provenance every cfgphase file carries (schema_version, package version, git revision, library
versions, host, creation time), so that ``xarray.open_dataset(path, engine="h5netcdf")`` or
:func:`open_dataset` read it with labelled coordinates. Layouts: data/README.md.

Writes never corrupt a file. The HDF5 image is built in memory, then written with plain file I/O
under a temporary name in the same directory, flushed to disk and renamed over the target (atomic
on POSIX): a reader, a kill or a full disk leaves either the previous file or the new one, never a
torn one; a failed write (disk full, quota, file-size limit, permissions) raises
:class:`WriteError` naming the file and removes the temporary file. (Letting the HDF5 library write
to a failing disk crashed the process on its clean-up.) One writer per file: :func:`writer_lock`.
Figure data (cfgphase.solvers.figures) are stored with :func:`write_arrays`.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import io
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
             "threadpoolctl", "mkl")
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


class WriteError(OSError):
    """A file could not be written; the previous file, if any, is untouched and nothing is left."""


def write_bytes(path, data):
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory, flushed to
    disk, renamed over ``path``. Any failure raises :class:`WriteError` and removes the temporary."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to collaborators
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the rename: a crash cannot leave an empty file
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def writer_lock(path):
    """Hold the one-writer lock of ``path`` for the duration of the block.

    An OS lock (flock) on ``.NAME.lock`` beside the file, which records the owner's host and PID;
    the kernel releases it when the owner exits or is killed, so a lock is never stale. A second
    writer is refused at once with a ValueError naming the owner. (On network file systems flock
    is as reliable as the file system's own locking.)
    """
    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise WriteError(f"cannot create the lock {lock}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ValueError(f"out: {path} is being written by {owner}; wait for it or stop it") from None
        try:  # the lock file may have been removed by the previous owner between open and flock
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{platform.node()} pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        Path(lock).unlink(missing_ok=True)  # while still holding it
        os.close(fd)


def remove_stale_temporaries(path):
    """Delete temporary files that a writer of ``path`` killed mid-write left behind (call it while
    holding :func:`writer_lock`)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_dataset(path, dataset):
    """Write an ``xarray.Dataset`` to ``path`` atomically, with the provenance attributes."""
    ds = dataset.copy()
    ds.attrs = {**dataset.attrs, **provenance()}
    image = io.BytesIO()
    ds.to_netcdf(image, engine="h5netcdf")
    write_bytes(path, image.getbuffer())


def save(result, path, overwrite=False):
    """Write a result (anything with ``to_xarray()``: a simulation, a prediction) to an HDF5 file.

    Refuses to replace an existing file unless ``overwrite``; one writer at a time; atomic (see
    module). Returns the path.
    """
    check_output_path(path, overwrite)
    dataset = result.to_xarray()
    with writer_lock(path):
        remove_stale_temporaries(path)
        write_dataset(path, dataset)
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

    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.attrs.update(provenance())
        f.attrs.update(kind="figure", figure_kind=kind, params=json.dumps(params, default=str))
        for name, values in arrays.items():
            values = np.asarray(values)
            if values.dtype.kind in "OUS":
                f.create_dataset(name, data=values.astype(str).astype(object), dtype=h5py.string_dtype())
            else:
                f.create_dataset(name, data=values)
    with writer_lock(path):
        write_bytes(path, image.getbuffer())


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
