"""The installed package: one entry point, a namespaced install, no import-time side effects."""

import subprocess
import sys

import pytest


def _python(code, cwd):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_documented_entry_point_works_from_outside_the_repository(tmp_path):
    out = _python("import cfgphase as cp\n"
                  "model = cp.Model(d=8, classes=4, seed=1)\n"
                  "res = cp.simulate(model, cp.Guidance(omega=1.0), sampler='ode', particles=64, steps=10, seed=0)\n"
                  "ds = res.to_xarray()\n"
                  "print(ds)\n"
                  "print('mean_ratio', float(ds['mean_ratio']), ds['m'].dims)\n"
                  "print(cp.predict(cp.Model(d=16, alpha=0.2), cp.Guidance(guidance_scale=2.0)).mean_ratio)\n", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "<xarray.Dataset>" in out.stdout and "mean_ratio 1." in out.stdout and "('time',)" in out.stdout


@pytest.mark.parametrize("name", ["physics", "solvers"])
def test_nothing_generic_is_installed(tmp_path, name):
    out = _python(f"import {name}", tmp_path)
    assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr


def test_importing_every_module_has_no_side_effects(tmp_path):
    """No threads, no environment changes, no matplotlib backend chosen at import. (A first kernel
    call imports threadpoolctl, which sets KMP_DUPLICATE_LIB_OK if unset: its guard against two
    OpenMP runtimes; cfgphase itself never writes the environment.)"""
    code = (
        "import os, threading, pkgutil, importlib, sys\n"
        "env = dict(os.environ); threads = threading.active_count()\n"
        "import cfgphase\n"
        "names = ['cfgphase.physics', 'cfgphase.solvers']\n"
        "for pkg in list(names):\n"
        "    module = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(module.__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "for name in cfgphase.__all__:\n"
        "    getattr(cfgphase, name)\n"
        "assert dict(os.environ) == env, 'environment changed'\n"
        "assert threading.active_count() == threads, 'threads started'\n"
        "import matplotlib\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "print('ok')\n"
    )
    out = _python(code, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_drawing_a_figure_leaves_the_matplotlib_backend_alone(tmp_path):
    code = (
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "import cfgphase as cp\n"
        "fig = cp.plot(cp.simulate(cp.Model(d=8, classes=4), 1.0, particles=32, steps=5))\n"
        "fig.savefig('t.png')\n"
        "import sys\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    out = _python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "False"] and (tmp_path / "t.png").exists()
