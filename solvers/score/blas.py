"""Threads and BLAS: the default thread count, a context that pins every loaded BLAS to one thread, and
the GEMM library the streaming kernel calls.

Light on purpose (NumPy and, when first used, threadpoolctl): the sampler and the dense kernel use it
without loading Numba or SciPy.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
from typing import NamedTuple


def usable_cores():
    """The number of cores this process may run on, read when called (the default thread count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: Modules that load a BLAS library of their own (SciPy's OpenBLAS is one the streaming kernel may call).
_BLAS_MODULES = ("scipy.linalg.cython_blas", "torch")

#: GEMM libraries the streaming kernel can call, by name (:func:`gemm_library`).
GEMM_LIBRARIES = ("openblas", "mkl")


class GemmLibrary(NamedTuple):
    """A BLAS library's Fortran ``sgemm`` and ``dgemm`` as addresses the kernel calls (column-major, all
    arguments by reference), with its name and version for the records."""

    name: str
    sgemm: int
    dgemm: int
    version: str
    path: str


@functools.cache
def _intel_cpu():
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("vendor_id") and "GenuineIntel" in line for line in f)
    except OSError:
        return False


@functools.cache
def _mkl_path():
    """Path of the Intel MKL runtime library of the ``mkl`` wheel, or None when it is not installed (looked up
    once per process: reading the package's file list takes about 0.3 ms)."""
    from importlib import metadata

    try:
        files = metadata.distribution("mkl").files or ()
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name.startswith("libmkl_rt.so"):
            path = os.path.realpath(file.locate())
            return path if os.path.exists(path) else None
    return None


@functools.cache
def _load_mkl(path):
    try:  # already loaded by someone else: its threading layer is theirs (single_threaded_blas limits it)
        handle = ctypes.CDLL(path, mode=os.RTLD_NOLOAD)
    except OSError:
        handle = ctypes.CDLL(path)
        # MKL_THREADING_SEQUENTIAL before any other MKL call: no OpenMP runtime, no threads (fork-safe); the
        # kernel's own threads are its parallelism
        handle.MKL_Set_Threading_Layer(1)
    buffer = ctypes.create_string_buffer(256)
    handle.mkl_get_version_string(buffer, len(buffer))
    sgemm, dgemm = (ctypes.cast(getattr(handle, name), ctypes.c_void_p).value for name in ("sgemm_", "dgemm_"))
    return GemmLibrary("mkl", sgemm, dgemm, buffer.value.decode().strip(), path)


@functools.cache
def _load_openblas():
    import scipy.linalg.cython_blas  # noqa: F401  (loaded before the BLAS controller looks)
    from numba.extending import get_cython_function_address
    from threadpoolctl import threadpool_info

    info = next((i for i in threadpool_info() if "scipy" in i["filepath"] and i["user_api"] == "blas"), {})
    address = functools.partial(get_cython_function_address, "scipy.linalg.cython_blas")
    return GemmLibrary("openblas", address("sgemm"), address("dgemm"), info.get("version") or "unknown",
                       info.get("filepath", ""))


def gemm_library(name=None):
    """The GEMM library of the streaming kernel (:class:`GemmLibrary`), loaded on first use.

    ``name`` is one of :data:`GEMM_LIBRARIES` or None (automatic): Intel MKL (the optional ``mkl`` wheel,
    ``pip install cfgphase[mkl]``) on an Intel CPU when it is installed, otherwise SciPy's OpenBLAS. MKL's
    GEMMs at the kernel's shapes (inner dimension d = 32-64) run at 91-105 % of its square-GEMM rate on an
    AVX-512 Intel CPU, OpenBLAS's at 69-88 % of its own (benchmarks/gemm_libraries.py); its speed on other
    CPUs is not measured here, so it is used there only when asked for. MKL is loaded with its
    sequential threading layer (no threads of its own) unless the process had loaded it already.
    The environment variable ``CFGPHASE_BLAS`` (read at each call) names the library when ``name`` is None,
    so that a whole run (simulations, sweeps, their workers) can be switched. ValueError naming ``blas`` (or
    ``CFGPHASE_BLAS``) for an unknown name or an MKL that is not installed.
    """
    if name is None and os.environ.get("CFGPHASE_BLAS"):
        name = os.environ["CFGPHASE_BLAS"]
        if name not in GEMM_LIBRARIES:
            raise ValueError(f"CFGPHASE_BLAS must be one of {', '.join(GEMM_LIBRARIES)}, got {name!r}")
    if name is None:
        path = _mkl_path() if _intel_cpu() else None
        return _load_mkl(path) if path else _load_openblas()
    if name == "openblas":
        return _load_openblas()
    if name == "mkl":
        path = _mkl_path()
        if path is None:
            raise ValueError("blas: 'mkl' needs the mkl package (pip install cfgphase[mkl])")
        return _load_mkl(path)
    raise ValueError(f"blas must be one of {', '.join(GEMM_LIBRARIES)} or None, got {name!r}")


@functools.cache
def _blas_libraries(loaded):
    """threadpoolctl's controllers of the loaded BLAS libraries (a tuple), for the set ``loaded`` of loaded
    BLAS-bearing modules (:func:`single_threaded_blas`)."""
    # built once per set of loaded BLAS-bearing modules (it inspects the loaded libraries, about 1 ms), so
    # that a library loaded after the first call (SciPy's, when the streaming kernel is imported) is seen;
    # it holds no threads, only library handles, which stay valid in a forked child. threadpoolctl is
    # imported here, not at import: importing it sets KMP_DUPLICATE_LIB_OK (its guard against two OpenMP
    # runtimes), the one environment variable a cfgphase call may add
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


#: ``loaded``: the set of loaded BLAS libraries (:func:`_blas_libraries`' key) that the innermost open
#: :func:`single_threaded_blas` context of this thread to call threadpoolctl has limited; restored on its exit
_limited = threading.local()


@functools.cache
def _held(pid):
    """(lock, {library path: [open contexts, its thread count before the first]}): the limits that the open
    :func:`single_threaded_blas` contexts of all threads hold, per process (a forked child starts afresh, with a
    lock no thread of its parent can hold)."""
    return threading.Lock(), {}


def _set_threads(library, n):
    """Set a library's thread count through its threadpoolctl controller, from whichever thread calls: threadpoolctl
    3.8 lets only the first thread that ever set an OpenBLAS limit set it again and silently ignores the others, so
    that a kernel called from a user thread (a Dask or notebook executor) ran each lane's GEMMs on all of OpenBLAS's
    threads, with other numbers than from the main thread. The limits here are counted under one lock."""
    getattr(library, "_real_set_num_threads", library.set_num_threads)(n)


@contextlib.contextmanager
def single_threaded_blas():
    """A context in which every loaded BLAS library runs on one thread.

    The kernel parallelises over row blocks itself; a multithreaded BLAS call just before it
    (even a small matrix-vector product) leaves OpenBLAS threads spinning for ~0.1 s, which on 2
    cores slowed the next kernel call by up to 1.5x. Callers that mix their own BLAS calls with
    the kernel (fields, the simulator) wrap them in this context too.

    Nested in a context of the same thread that has limited the same libraries, it does nothing: the
    sampler's loop, the field and the kernel each open one. A library loaded since the enclosing context
    opened (SciPy's OpenBLAS, MKL) is limited by a new one. The limits are process-wide and counted across
    threads: the first open context sets a library to one thread (where it was not one already), the last to
    close restores its count, so that contexts of several threads at once (a threaded Dask scheduler) neither
    miss the limit nor lift it under another's calls. Each library is read and set through threadpoolctl's
    controller of that library: threadpoolctl's own ``limit`` first gathers every library's full description
    (versions, architectures) and took 0.15 ms a context right after a kernel call, with its code out of cache
    (45 us in a loop).
    """
    loaded = (*(name in sys.modules for name in _BLAS_MODULES), _load_mkl.cache_info().currsize)
    outer = getattr(_limited, "loaded", None)
    if outer == loaded:
        yield
        return
    libraries = _blas_libraries(loaded)
    lock, held = _held(os.getpid())
    with lock:
        for library in libraries:
            entry = held.get(library.filepath)
            if entry is None:
                n = library.num_threads
                if n != 1:
                    _set_threads(library, 1)
                held[library.filepath] = [1, n]
            else:
                entry[0] += 1
    _limited.loaded = loaded
    try:
        yield
    finally:
        _limited.loaded = outer
        with lock:
            for library in libraries:
                entry = held[library.filepath]
                entry[0] -= 1
                if entry[0] == 0:
                    del held[library.filepath]
                    if entry[1] != 1:
                        _set_threads(library, entry[1])
