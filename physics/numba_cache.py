"""Numba's on-disk cache, made to see every cfgphase source that a compiled function depends on.

Numba keys a cached function by the source of its own file alone: a function compiled with code it calls in
another file (inlined or linked into its machine code), or with another module's constants frozen in, is loaded
unchanged after that other file has changed (a documented limitation, numba issue 1833). Editing
solvers/score/fused.py left the cached kernel._stream_rows running the previous fused chunk, and a ``git pull``
or an upgrade that changed one file of the kernel would have done the same.

:func:`njit` compiles as ``numba.njit(cache=True, ...)`` but stamps the cache index with the sources of the
function's module and of every module of the same package that it imports, transitively (read from their
``import`` statements, so that imported constants count too); a change in any of them makes the index stale, and
Numba compiles again and overwrites it. Only the stamp is Numba-internal (the cache object's index file); where
that is missing the decorator falls back to Numba's own cache.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import sys

import numba as nb


#: An import statement: ``from MODULE import NAMES`` (NAMES possibly in parentheses over several lines) or
#: ``import MODULES``
_IMPORT = re.compile(rb"^[ \t]*(?:from[ \t]+([.\w]+)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)|import[ \t]+([^\n]+))", re.M)


@functools.cache
def _file_facts(path, mtime_ns, size):
    """(SHA-256 digest of the file, its import statements as (module, names) pairs: ``from a.b import c, d``
    gives ("a.b", ("c", "d")), ``import a.b as e`` ("a.b", ())); a regular expression reads them (ast.parse
    took 7 ms for kernel.py, this 0.2 ms)."""
    with open(path, "rb") as f:
        source = f.read()
    imports = []
    for module, names, modules in _IMPORT.findall(source):
        if module:
            words = names.decode().strip("()").replace("\\", " ").split(",")
            imports.append((module.decode(), tuple(w.split()[0] for w in words if w.split())))
        else:
            imports.extend((m.split()[0], ()) for m in modules.decode().split("#")[0].split(",") if m.split())
    return hashlib.sha256(source).digest(), tuple(imports)


def _facts(path):
    st = os.stat(path)
    return _file_facts(path, st.st_mtime_ns, st.st_size)


def _origin(name):
    """The source file of module ``name`` (None for a namespace package or a module without one)."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None) if module is not None else None
    if path is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        path = spec.origin if spec is not None and spec.has_location else None
    return path


def dependencies(module_name):
    """The source files of module ``module_name`` and of every module of its top-level package that it
    imports, transitively (``from package.a import b`` counts package.a, and package.a.b when b is a
    submodule), sorted."""
    top = module_name.split(".")[0]
    seen, files, todo = set(), set(), [module_name]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _origin(name)
        if path is None or not path.endswith(".py") or not os.path.isfile(path):  # e.g. inside a zip file
            continue
        files.add(path)
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        for module, names in _facts(path)[1]:
            base = importlib.util.resolve_name(module, package) if module.startswith(".") else module
            for candidate in (base, *(f"{base}.{n}" for n in names)):
                if candidate.split(".")[0] == top and candidate not in seen and _origin(candidate) is not None:
                    todo.append(candidate)
    return sorted(files)


def sources_stamp(module_name):
    """One digest of the sources :func:`dependencies` lists, with their paths."""
    digest = hashlib.sha256()
    for path in dependencies(module_name):
        digest.update(path.encode())
        digest.update(_facts(path)[0])
    return digest.hexdigest()


def njit(**options):
    """``numba.njit(cache=True, **options)`` whose cache is stale once any cfgphase source the function
    depends on has changed (:func:`sources_stamp` added to the index's stamp)."""

    def decorate(func):
        dispatcher = nb.njit(cache=True, **options)(func)
        cache_file = getattr(dispatcher._cache, "_cache_file", None)
        if cache_file is not None and hasattr(cache_file, "_source_stamp"):
            cache_file._source_stamp = (cache_file._source_stamp, sources_stamp(func.__module__))
        return dispatcher

    return decorate
