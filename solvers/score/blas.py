"""Threads and BLAS: the default thread count and a context that pins every loaded BLAS to one thread.

Light on purpose (NumPy and, when first used, threadpoolctl): the sampler and the dense kernel use it
without loading Numba or SciPy.
"""

from __future__ import annotations

import functools
import os
import sys


def usable_cores():
    """The number of cores this process may run on, read when called (the default thread count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: Modules that load a BLAS library of their own (SciPy's OpenBLAS is the one the streaming kernel calls).
_BLAS_MODULES = ("scipy.linalg.cython_blas", "torch")


@functools.cache
def _blas_controller(loaded):
    # built once per set of loaded BLAS-bearing modules (it inspects the loaded libraries, about 1 ms), so
    # that a library loaded after the first call (SciPy's, when the streaming kernel is imported) is seen;
    # it holds no threads, only library handles, which stay valid in a forked child. threadpoolctl is
    # imported here, not at import: importing it sets KMP_DUPLICATE_LIB_OK (its guard against two OpenMP
    # runtimes), the one environment variable a cfgphase call may add
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_threaded_blas():
    """A context in which every loaded BLAS library runs on one thread.

    The kernel parallelises over row blocks itself; a multithreaded BLAS call just before it
    (even a small matrix-vector product) leaves OpenBLAS threads spinning for ~0.1 s, which on 2
    cores slowed the next kernel call by up to 1.5x. Callers that mix their own BLAS calls with
    the kernel (fields, the simulator) wrap them in this context too.
    """
    loaded = tuple(name in sys.modules for name in _BLAS_MODULES)
    return _blas_controller(loaded).limit(limits=1, user_api="blas")
