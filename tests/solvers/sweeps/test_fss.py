"""The finite-size-scaling workflow (solvers/sweeps/fss.py): one point over d and draws in one HDF5 file,
resumed without recomputing, read with xarray and compared with the theory at each d."""

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import cfgphase as cp
from cfgphase.solvers.sweeps import fss

POINT = dict(alpha=0.2, omega=1.0, sampler="ode", d=[6, 8], draws=2, particles=64, steps=10)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    path = tmp_path_factory.mktemp("fss") / "fss.h5"
    return path, fss.finite_size_scaling(path, **POINT)


def test_a_run_writes_one_self_describing_file(written):
    path, result = written
    assert (result.runs, result.computed, result.failed) == (4, 4, 0)
    ds = cp.open_dataset(path)
    with xr.open_dataset(path, engine="h5netcdf") as raw:
        assert raw["mean_ratio"].dims == ("d", "draw")
    assert list(ds["d"].values) == [6, 8] and list(ds["draw"].values) == [0, 1]
    assert ds.attrs["kind"] == "finite_size_scaling" and ds.attrs["schema_version"] == 2
    assert list(ds["K"].values) == [cp.Model(d=6, alpha=0.2).K, cp.Model(d=8, alpha=0.2).K]
    assert np.all(ds["done"].values == 1)
    for stat in fss.STATS:
        assert ds[stat].attrs["units"] and ds[stat + "_stderr"].dims == ("d", "draw")
    # draw j is cp.simulate with model and noise seed j, and stores its rho = |mu_c|^2/d and t_max
    model = cp.Model(d=8, alpha=0.2, seed=1)
    run = cp.simulate(model, 1.0, sampler="ode", particles=64, steps=10, seed=1)
    one = ds.sel(d=8, draw=1)
    assert float(one["mean_ratio"]) == run.final["mean_ratio"]
    assert float(one["var_perp_stderr"]) == run.final["var_perp_stderr"]
    assert float(one["target_norm"]) == model.target_norm and float(one["t_max"]) == run.params["t_max"]


def test_resume_recomputes_nothing_and_refuses_other_options(written):
    path, _ = written
    before = cp.open_dataset(path)
    again = fss.finite_size_scaling(path, **POINT, resume=True)
    assert again.computed == 0
    after = cp.open_dataset(path)
    for name in before.data_vars:
        np.testing.assert_array_equal(after[name].values, before[name].values)
    with pytest.raises(ValueError, match="resume"):
        fss.finite_size_scaling(path, **dict(POINT, draws=3), resume=True)
    with pytest.raises(ValueError, match="exists"):
        fss.finite_size_scaling(path, **POINT)


def test_the_comparison_reads_the_file_and_gives_residual_over_stderr_per_d(written):
    path, _ = written
    table = fss.compare_with_theory(path, particles=300)
    assert list(table["d"].values) == [6, 8] and list(table["draws"].values) == [2, 2]
    ds = cp.open_dataset(path)
    # the d -> infinity residual of one d by hand: each draw against the prediction at its own rho and t_max
    preds = [cp.predict(cp.Model(d=8, alpha=0.2, seed=j), 1.0, target_norm=float(ds["target_norm"].sel(d=8, draw=j)),
                        sampler=cp.Sampler("ode", steps=10, t_max=float(ds["t_max"].sel(d=8, draw=j))))
             for j in range(2)]
    residuals = ds["var_perp"].sel(d=8).values - [p.var_perp for p in preds]
    assert float(table["var_perp_infinite_d_residual"].sel(d=8)) == pytest.approx(residuals.mean(), rel=1e-12)
    for stat in ("mean_ratio", "var_par", "var_perp"):
        for theory in ("finite_d", "infinite_d"):
            z = table[f"{stat}_{theory}_z"].values
            assert np.all(np.isfinite(z)), (stat, theory)
            np.testing.assert_allclose(z, table[f"{stat}_{theory}_residual"] / table[f"{stat}_{theory}_stderr"])
    # two draws of 64 particles at d = 6, 8: the finite-d var_perp is within 5 standard errors (measured 0.28, -0.35)
    assert np.all(np.abs(table["var_perp_finite_d_z"].values) < 5)


@pytest.mark.parametrize("options, name", [(dict(d=[]), "d"), (dict(d=[0, 8]), "d"), (dict(d=8), "d"),
                                           (dict(draws=0), "draws"), (dict(alpha=None), "alpha"),
                                           (dict(particles=1), "particles"), (dict(workers=0), "workers")])
def test_bad_input_names_the_parameter_and_writes_nothing(tmp_path, options, name):
    path = tmp_path / "bad.h5"
    with pytest.raises(ValueError, match=name):
        fss.finite_size_scaling(path, **dict(POINT, **options))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, name", [(["--d", "0", "8"], "d"), (["--d", "6", "--draws", "0"], "draws"),
                                        (["--d"], "--d")])
def test_the_command_line_refuses_bad_input_with_one_line_and_exit_2(tmp_path, argv, name):
    out = subprocess.run([sys.executable, "-m", "cfgphase", "fss", "--alpha", "0.2", *argv, "--out",
                          str(tmp_path / "f.h5")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and name in out.stderr
    assert list(tmp_path.iterdir()) == []
