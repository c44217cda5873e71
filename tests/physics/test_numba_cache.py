"""cfgphase.physics.numba_cache: Numba's cache stamped with the sources a compiled function depends on."""

import os
import subprocess
import sys
import textwrap

from cfgphase.physics import numba_cache


def test_the_kernels_stamp_covers_the_files_compiled_into_it():
    """The streaming kernel's cached functions inline or link code of the fused chunk, the exponential, the SIMD
    intrinsics and the mean generator, and freeze the generator's constants (physics/disorder.py): a change in
    any of them must make the kernel's cache stale."""
    import cfgphase.solvers.score.kernel  # noqa: F401  (imported, as when its functions are decorated)

    files = {os.path.relpath(p, os.path.dirname(os.path.dirname(numba_cache.__file__)))
             for p in numba_cache.dependencies("cfgphase.solvers.score.kernel")}
    assert {os.path.join("physics", "disorder.py"), os.path.join("physics", "disorder_jit.py"),
            os.path.join("physics", "numba_cache.py"), os.path.join("solvers", "score", "kernel.py"),
            os.path.join("solvers", "score", "fused.py"), os.path.join("solvers", "score", "exponential.py"),
            os.path.join("solvers", "score", "simd.py")} <= files
    assert not any("sampling" in f or "theory" in f for f in files)  # only what it imports


def _package(root, decorator, value):
    """A package ``stamped`` under root: a.py's cached function calls b.py's, which returns ``value``."""
    package = root / "stamped"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    head = ("from cfgphase.physics.numba_cache import njit\n" if decorator == "stamped"
            else "import numba\nnjit = lambda **o: numba.njit(cache=True, **o)\n")
    (package / "b.py").write_text(head + f"@njit()\ndef f():\n    return {value}\n")
    (package / "a.py").write_text(head + textwrap.dedent("""\
        from .b import f  # a relative import: numba_cache resolves it


        @njit()
        def g():
            return f() + 10
        """))


def _run(root):
    """g() in a fresh interpreter, and whether it came from the cache."""
    code = "import stamped.a as a; v = a.g(); print(v, sum(a.g.stats.cache_hits.values()))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), *sys.path]))
    env.pop("NUMBA_CACHE_DIR", None)  # the in-tree cache, next to the sources
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    value, hits = out.stdout.split()
    return int(value), int(hits)


def test_a_change_in_a_called_functions_file_recompiles_its_caller(tmp_path):
    """Numba alone keeps running a cached caller with the old code of a callee in another file after that file
    changed (numba issue 1833, the control); with numba_cache.njit the caller compiles again, and the next run
    loads it from the cache."""
    for decorator, after in (("numba", 11), ("stamped", 12)):
        root = tmp_path / decorator
        root.mkdir()
        _package(root, decorator, 1)
        assert _run(root) == (11, 0)
        assert _run(root) == (11, 1)  # cached
        _package(root, decorator, 2)
        assert _run(root)[0] == after
    assert _run(tmp_path / "stamped") == (12, 1)
