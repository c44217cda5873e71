"""Phase-diagram sweeps: schema, xarray round trip, kill and resume, Dask, bad specifications."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from cfgphase.solvers.cli import main
from cfgphase.solvers.theory.meanfield import guided_prediction
from cfgphase.solvers.sweeps.runner import run_sweep
from cfgphase.solvers.sweeps.state import journal_path, read_state
from cfgphase.solvers.sweeps.spec import parse_spec

SMALL = {
    "schedule": "constant",
    "theory": {"alpha": {"start": 0.05, "stop": 0.3, "num": 4}, "omega": [0.0, 1.0, 2.0], "sampler": ["ode", "sde"]},
    "simulation": {"alpha": [0.1], "omega": [0.0, 1.0], "sampler": ["ode"], "d": [12, 16], "seeds": 2,
                   "particles": 64, "steps": 20},
}
NUMERIC = ("theory_mean_ratio", "theory_var_par", "theory_var_perp", "theory_distortion", "theory_t_condensation",
           "sim_mean_ratio", "sim_var_par", "sim_var_perp", "sim_distortion", "sim_distortion_stderr", "sim_K")


def _numbers(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in NUMERIC}


def _assert_same_numbers(a, b):
    for name in NUMERIC:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "small.h5"
    summary = run_sweep(parse_spec(SMALL), path, workers=1, progress=False)
    return path, summary


def test_sweep_writes_theory_and_simulations_with_provenance(small_run):
    path, summary = small_run
    assert summary["points_failed"] == 0 and summary["points_done"] == 4 * 3 * 2 + 2 * 2 * 2
    assert not journal_path(path).exists()
    with h5py.File(path, "r") as f:
        for key in ("schema_version", "package_version", "git_revision", "library_versions", "host", "created",
                    "started", "updated", "sweep_spec", "model_class_var", "simulation_particles"):
            assert key in f.attrs, key
        assert f.attrs["status"] == "complete"
        assert json.loads(f.attrs["sweep_spec"])["model"] == {"mean_var": 1.0, "class_var": 0.25, "process": "ou"}
        assert f["theory_done"][()].all() and f["sim_done"][()].all()
        # the stored theory is the pointwise prediction
        alpha, omega = f["alpha"][2], f["omega"][1]
        pred = guided_prediction(alpha, omega, sampler="sde")
        assert f["theory_distortion"][2, 1, 1] == pytest.approx(pred.distortion, rel=1e-12)
        assert f["sim_K"][0, 0, 0, 1, 0] == round(np.exp(0.1 * 16))


def test_schema_round_trip(small_run):
    """read_state gives back the spec (defaults included) and every stored array."""
    path, _ = small_run
    spec, state, started = read_state(path)
    assert spec.to_json() == parse_spec(SMALL).to_json() and started
    with h5py.File(path, "r") as f:
        for name, (dims, data) in state.vars.items():
            stored = f[name].asstr()[()] if data.dtype == object else f[name][()]
            np.testing.assert_array_equal(stored, data.astype(str) if data.dtype == object else data, err_msg=name)
            assert [f[name].dims[i][0].name for i in range(len(dims))] == [f"/{d}" for d in dims], name
    with pytest.raises(ValueError, match="resume"):
        other = dict(SMALL, theory=dict(SMALL["theory"], omega=[0.0, 1.0]))
        read_state(path, parse_spec(other))


def test_xarray_opens_the_file_with_labelled_coordinates_and_units(small_run):
    import xarray as xr

    path, _ = small_run
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds.theory_distortion.dims == ("alpha", "omega", "sampler")
        assert ds.sim_mean_ratio.dims == ("sim_alpha", "sim_omega", "sim_sampler", "d", "seed")
        np.testing.assert_allclose(ds.alpha.values, np.linspace(0.05, 0.3, 4))
        assert list(ds.sampler.values) == ["ode", "sde"]
        assert list(ds.d.values) == [12, 16]
        assert ds.alpha.attrs["units"] == "log(K)/d"
        assert ds.theory_distortion.attrs["units"] == "nats per dimension"
        value = ds.theory_var_perp.sel(alpha=0.3, omega=2.0, sampler="ode").item()
    assert value == pytest.approx(guided_prediction(0.3, 2.0).var_perp, rel=1e-12)


def _cli(*args):
    return [sys.executable, "-m", "cfgphase", "phase-diagram", *args]


def _start_and_kill(args, path, lines):
    """Start a sweep subprocess and SIGKILL it once the journal holds ``lines`` finished units
    (0: as soon as the file exists, before or while the first unit runs)."""
    proc = subprocess.Popen(_cli(*args, "--out", str(path), "--workers", "1", "--quiet"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        journal = journal_path(path)
        if path.exists() and (lines == 0 or journal.exists() and journal.read_text().count("\n") >= lines):
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with h5py.File(path, "r") as f:  # readable, and not complete
        assert f.attrs["status"] == "running"


def test_kill_and_resume_gives_the_numbers_of_an_uninterrupted_run(tmp_path, small_run):
    """SIGKILL three times at different moments (at the start, after one unit, after three);
    each time the file stays readable; --resume finishes and matches the uninterrupted run
    exactly (same seeds, same kernel threads)."""
    config = tmp_path / "grid.toml"
    config.write_text(_toml(SMALL))
    path = tmp_path / "killed.h5"
    _start_and_kill(("--config", str(config)), path, 0)
    _start_and_kill(("--resume",), path, 1)
    _start_and_kill(("--resume",), path, 3)
    out = subprocess.run(_cli("--out", str(path), "--resume", "--workers", "1", "--quiet"), capture_output=True,
                         text=True, check=True)
    assert "0 failed" in out.stdout
    _assert_same_numbers(_numbers(path), _numbers(small_run[0]))
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "complete"
    assert not journal_path(path).exists()
    assert not list(tmp_path.glob("*.tmp")), "a killed write left its temporary file behind"


def test_local_pool_and_dask_cluster_give_the_same_numbers(tmp_path, small_run):
    import dask.distributed as distributed

    pooled = tmp_path / "pool.h5"
    run_sweep(parse_spec(SMALL), pooled, workers=2, progress=False)
    _assert_same_numbers(_numbers(pooled), _numbers(small_run[0]))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dasked = tmp_path / "dask.h5"
        run_sweep(parse_spec(SMALL), dasked, scheduler=cluster.scheduler_address, progress=False)
    _assert_same_numbers(_numbers(dasked), _numbers(pooled))


def test_failed_points_are_recorded_and_do_not_stop_the_sweep(tmp_path, monkeypatch):
    """A point whose simulation raises fails alone. (A point that cannot run by its inputs, such as
    K = e^{alpha d} beyond the memory budget, is refused with the grid, before any work:
    test_bad_specifications_name_the_key; so the failure is injected here.)"""
    import cfgphase.solvers.sampling.driver as driver

    simulate = driver.simulate

    def failing(model, *args, **kwargs):
        if model.alpha == 0.2:
            raise RuntimeError("injected failure")
        return simulate(model, *args, **kwargs)

    monkeypatch.setattr(driver, "simulate", failing)  # workers=1: the units run in this process
    spec = parse_spec({"theory": {"alpha": [0.1], "omega": [1.0]},
                       "simulation": {"alpha": [0.1, 0.2], "d": [8], "particles": 16, "steps": 5}})
    path = tmp_path / "fail.h5"
    summary = run_sweep(spec, path, workers=1, progress=False)
    assert summary["points_failed"] == 1
    with h5py.File(path, "r") as f:
        errors = f["sim_error"].asstr()[()].ravel()
        assert errors[0] == "" and "injected failure" in errors[1]
        assert np.isfinite(f["sim_mean_ratio"][0]).all() and f["sim_done"][()].all()


def _toml(config):
    lines = [f'schedule = "{config["schedule"]}"']
    for section in ("theory", "simulation"):
        lines.append(f"[{section}]")
        for key, value in config[section].items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value):
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


@pytest.mark.parametrize("config, key", [
    ({"theory": {"alpha": {"start": 0, "stop": 1, "num": 0}, "omega": [1.0]}}, "theory.alpha"),
    ({"theory": {"alpha": [], "omega": [1.0]}}, "theory.alpha"),
    ({"theory": {"alpha": [0.1], "omega": [1.0], "alhpa": [0.2]}}, "theory.alhpa"),
    ({"theory": {"alpha": [0.1], "omega": [1.0]}, "modle": {}}, "modle"),
    ({"theory": {"alpha": [0.1], "omega": [1.0], "w0": [-1.0]}}, "theory.w0"),
    ({"schedule": "linear", "theory": {"alpha": [0.1], "w0": [-1.0], "slope": [1.0], "omega": [1.0]}}, "theory.omega"),
    ({"theory": {"alpha": [0.1], "omega": [1.0]}, "simulation": {"d": [8], "particle": 4}}, "simulation.particle"),
    ({"theory": {"alpha": [0.1], "omega": [1.0]}, "simulation": {"omega": [1.0]}}, "simulation.d"),
    ({"theory": {"alpha": [0.1], "omega": [1.0], "sampler": ["em"]}}, "theory.sampler"),
    ({"schedule": "cosine", "theory": {"alpha": [0.1]}}, "schedule"),
    # checked with the grid, before any work (they used to fail point by point, or silently coerce)
    ({"theory": {"alpha": [0.1], "omega": [1.0]}, "simulation": {"alpha": [60.0], "d": [8]}}, "simulation.alpha"),
    ({"theory": {"alpha": [0.1], "omega": [1.0]}, "simulation": {"d": [8.7]}}, "simulation.d"),
    ({"theory": {"alpha": [0.1], "omega": [1.0]}, "simulation": {"d": [8], "particles": True}},
     "simulation.particles"),
    ({"theory": {"alpha": [0.1], "omega": [-2.0]}}, "theory.omega"),
    ({"theory": {"alpha": [0.1], "omega": [1.0]}, "simulation": {"d": [8], "t_max": -1.0}}, "simulation.t_max"),
    ({"theory": 5}, "theory"),
])
def test_bad_specifications_name_the_key(config, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        parse_spec(config)


def test_cli_bad_grid_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "pd.h5"
    assert main(["phase-diagram", "--alpha", "0:1:0", "--omega", "1", "--out", str(out)]) == 2
    assert "theory.alpha" in capsys.readouterr().err and not out.exists()
    config = tmp_path / "bad.toml"
    config.write_text('[theory]\nalpha = [0.1]\nomega = [1.0]\nunknown = 3\n')
    assert main(["phase-diagram", "--config", str(config), "--out", str(out)]) == 2
    assert "theory.unknown" in capsys.readouterr().err and not out.exists()
    out.write_bytes(b"precious")
    assert main(["phase-diagram", "--alpha", "0.1", "--omega", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "out" in err and "--overwrite" in err and out.read_bytes() == b"precious"
    assert len(err.strip().splitlines()) == 1
    assert main(["phase-diagram", "--config", str(config), "--alpha", "0.1", "--out", str(tmp_path / "x.h5")]) == 2
    assert "--config" in capsys.readouterr().err


def test_the_file_stores_the_phase_boundaries_with_labelled_coordinates(tmp_path):
    """alpha_max, condensation_boundary and frozen_boundary (docs/theory.md eq. 49) are variables of
    their own, read back by xarray with their coordinates, equal to the theory's values."""
    import xarray as xr

    from cfgphase.solvers.theory.condensation import alpha_max

    config = {"theory": {"alpha": {"start": 0.0, "stop": 1.4, "num": 15}, "omega": [-0.5, 0.0, 0.5, 1.0],
                         "sampler": ["ode", "sde"]}}
    path = tmp_path / "phases.h5"
    run_sweep(parse_spec(config), path, workers=1, progress=False)
    ds = xr.open_dataset(path, engine="h5netcdf")
    assert float(ds["alpha_max"]) == alpha_max(1.0, 0.25)
    assert ds["condensation_boundary"].dims == ("omega", "sampler")
    assert ds["frozen_boundary"].dims == ("alpha", "crossing", "sampler")
    for omega in (-0.5, 1.0):
        for sampler in ("ode", "sde"):
            stored = float(ds["condensation_boundary"].sel(omega=omega, sampler=sampler))
            assert stored == guided_prediction(0.1, omega, sampler=sampler).alpha_condensation
    # below the zero-guidance line the other classes are frozen at t*, above it annealed: one crossing
    # between omega = -0.5 and 0.5 at every alpha where both condense
    crossings = ds["frozen_boundary"].sel(sampler="ode", crossing=0).sel(alpha=slice(0.05, 0.2)).values
    assert np.all((crossings > -0.5) & (crossings < 0.5)), crossings
    entropy = ds["theory_entropy_at_condensation"].sel(sampler="ode").sel(alpha=0.1, method="nearest")
    assert float(entropy.sel(omega=-0.5)) < 0 < float(entropy.sel(omega=1.0))
