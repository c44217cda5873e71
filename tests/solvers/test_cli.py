"""The command line contract (README, "Command line"; docs/architecture.md) for ``cfgphase simulate``."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from cfgphase.solvers.cli import main

SMALL = ["simulate", "--d", "8", "--classes", "12", "--steps", "20", "--particles", "64", "--quiet"]
CONTRACT_KEYS = ["d", "K", "alpha", "omega", "mean_var", "class_var", "process", "sampler", "schedule",
                 "mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "inv_prob", "t_condensation"]


def run_cli(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_every_contract_key_with_stderr_companions(capsys):
    code, out, _ = run_cli(capsys, *SMALL, "--json", "--omega", "0.5")
    assert code == 0
    record = json.loads(out)
    for key in CONTRACT_KEYS:
        assert key in record, key
    for key in ("mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "inv_prob", "t_condensation"):
        assert key + "_stderr" in record
    assert record["omega"] == 0.5 and record["guidance_scale"] == 1.5 and record["K"] == 12


def test_guidance_scale_flag_is_w_equals_one_plus_omega(capsys):
    _, by_omega, _ = run_cli(capsys, *SMALL, "--json", "--omega", "0.5")
    _, by_scale, _ = run_cli(capsys, *SMALL, "--json", "--guidance-scale", "1.5")
    drop = ("wall_time",)
    a, b = json.loads(by_omega), json.loads(by_scale)
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_readable_summary(capsys):
    code, out, _ = run_cli(capsys, *SMALL)
    assert code == 0 and "mean_ratio" in out and "var_perp" in out and "conditional" in out


def test_out_writes_a_self_describing_hdf5_file(capsys, tmp_path):
    path = tmp_path / "run.h5"
    code, _, _ = run_cli(capsys, *SMALL, "--out", str(path), "--samples", "--sampler", "sde")
    assert code == 0
    with h5py.File(path) as f:
        for key in ("schema_version", "package_version", "git_revision", "created", "library_versions",
                    "d", "K", "omega", "class_var", "mean_var", "process", "sampler", "method", "steps",
                    "t_max", "grid", "particles", "seed", "model_seed", "init", "kind"):
            assert key in f.attrs, key
        assert f.attrs["sampler"] == "sde" and f.attrs["d"] == 8 and f.attrs["kind"] == "simulation"
        assert np.isnan(f.attrs["alpha"])  # not defined here: NaN, never a string
        assert f["m"].dims[0][0] == f["time"]  # a dimension scale
        assert f["m"].shape == f["time"].shape == (21,)
        assert np.all(np.diff(f["time"][()]) < 0)
        assert f["samples"].shape == (64, 8)
        assert f["mean_ratio"].shape == () and f["final_mean"].shape == (8,)
    ds = xr.open_dataset(path, engine="h5netcdf")
    assert ds["m"].dims == ("time",) and ds["m_stderr"].attrs["units"] and ds["samples"].dims == ("particle", "coordinate")
    assert float(ds["mean_ratio"]) == json.loads(run_cli(capsys, *SMALL, "--sampler", "sde", "--json")[1])["mean_ratio"]


def test_existing_output_is_not_overwritten_without_the_flag(capsys, tmp_path):
    path = tmp_path / "run.h5"
    path.write_bytes(b"precious")
    code, out, err = run_cli(capsys, *SMALL, "--out", str(path))
    assert code == 2 and "out" in err and path.read_bytes() == b"precious"
    assert run_cli(capsys, *SMALL, "--out", str(path), "--overwrite")[0] == 0
    assert h5py.is_hdf5(path)


@pytest.mark.parametrize(
    "args, name",
    [
        (["--classes", "0"], "classes"),
        (["--d", "0"], "d"),
        (["--class-var", "-1"], "class_var"),
        (["--class-var", "nan"], "class_var"),
        (["--mean-var", "nan"], "mean_var"),
        (["--alpha", "9"], "alpha"),
        (["--omega", "nan"], "omega"),
        (["--omega", "1", "--guidance-scale", "2"], "guidance-scale"),
        (["--steps", "0"], "steps"),
        (["--particles", "1"], "particles"),
        (["--process", "flow", "--t-max", "2"], "t_max"),
        (["--t-max", "0.0"], "t_max"),
        (["--sampler", "sde", "--method", "heun"], "method"),
        (["--omega", "abc"], "omega"),
        (["--rule", "cfg", "--beta", "0.5"], "beta"),
        (["--rule", "apg", "--phi", "0.5"], "phi"),
        (["--rule", "adgg"], "rule"),
        (["--rule", "cfgpp"], "method"),
        (["--rule", "cfgpp", "--method", "ddim", "--omega", "2"], "omega"),
        (["--schedule", "tvcfg", "--t-switch", "1"], "t_switch"),
        (["--schedule", "interval"], "sigma_lo"),
        (["--schedule", "switch", "--fraction", "2"], "fraction"),
        (["--schedule", "linear", "--w0", "-2", "--slope", "1", "--floor", "-3"], "floor"),
        (["--schedule", "piecewise", "--breaks", "1", "--values", "1,2,3"], "values"),
        (["--schedule", "piecewise", "--breaks", "1,x", "--values", "1,2,3"], "breaks"),
        (["--modes", "2", "--mode-weights", "1"], "mode_weights"),
        (["--unconditional-var", "-1"], "unconditional"),
    ],
)
def test_bad_input_one_line_on_stderr_exit_2_nothing_written(capsys, tmp_path, args, name):
    path = tmp_path / "run.h5"
    base = [a for a in SMALL if a not in ("--classes", "12")] if "--alpha" in args or "--classes" in args else SMALL
    code, out, err = run_cli(capsys, *base, *args, "--out", str(path))
    assert code == 2
    assert err.count("\n") == 1 and name in err, err
    assert out == "" and not path.exists() and list(tmp_path.iterdir()) == []


def test_means_option_says_which_mode_ran_and_both_give_the_same_numbers(capsys):
    records = {}
    for means in ("stored", "generated", "auto"):
        code, out, _ = run_cli(capsys, *SMALL, "--json", "--means", means)
        assert code == 0
        records[means] = json.loads(out)
    assert [records[m]["means"] for m in ("stored", "generated", "auto")] == ["stored", "generated", "stored"]
    assert all(records["stored"][k] == records["generated"][k] for k in CONTRACT_KEYS)
    code, out, err = run_cli(capsys, *SMALL, "--means", "lazy")
    assert code == 2 and err.count("\n") == 1 and "--means" in err and out == ""
    code, out, _ = run_cli(capsys, *SMALL, "--means", "generated")
    assert code == 0 and "means=generated" in out.splitlines()[0]


def test_argparse_errors_are_one_line_with_status_2():
    proc = subprocess.run([sys.executable, "-m", "cfgphase", "simulate", "--process", "vp"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "process" in proc.stderr


def test_console_script_runs():
    script = Path(sys.executable).parent / "cfgphase"
    proc = subprocess.run([str(script), *SMALL, "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["d"] == 8


#: In a fresh interpreter: page faults of 100 rounds of three 512 KiB arrays made and freed (a sampler step's
#: pattern), after keep_freed_memory() when the first argument says so; prints its result and the faults.
_CHURN = """
import resource, sys
import numpy as np
from cfgphase.solvers.cli import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
for _ in range(3):
    a, b, c = np.ones(65536), np.ones(65536), np.ones(65536)
    del a, b, c
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    a, b, c = np.ones(65536), np.ones(65536), np.ones(65536)
    del a, b, c
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's (a no-op elsewhere)")
def test_the_program_keeps_freed_memory_unless_the_user_set_the_thresholds():
    """glibc's defaults hand three freed 512 KiB arrays back to the system (1.5 MiB at the heap's top is above the
    1 MiB trim threshold they reach), so each round faults most of its 384 pages in again; with the program's
    setting the rounds reuse the heap. A user's MALLOC_TRIM_THRESHOLD_ is left alone."""
    def churn(mode, **env):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        proc = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True,
                              env={**environment, **env})
        took, faults = proc.stdout.split()
        return took, int(faults)

    assert churn("default")[1] > 100 * 200  # 35,200 here: most of the 384 pages of each round
    took, faults = churn("keep")
    assert took == "True" and faults < 100
    assert churn("keep", MALLOC_TRIM_THRESHOLD_="131072")[0] == "False"


GAUSS = ["gaussian", "--lambda-c", "0.25", "--lambda-u", "1", "--mean-gap", "1"]


def test_gaussian_json_prints_the_simulate_keys_and_the_moments(capsys):
    code, out, _ = run_cli(capsys, *GAUSS, "--process", "ve", "--omega", "2", "--t-max", "1e6", "--json")
    assert code == 0
    record = json.loads(out)
    for key in CONTRACT_KEYS + ["mean", "var", "mean_conditional", "var_conditional"]:
        assert key in record, key
    assert record["var"] == pytest.approx(0.25 * 0.25**2, rel=1e-5)  # lambda_c (lambda_c/lambda_u)^omega
    assert record["var_conditional"] == 0.25 and record["t_condensation"] is None


def test_schedules_from_the_command_line_match_the_api(capsys):
    from cfgphase.physics.gaussian import GaussianPair
    from cfgphase.physics.schedules import LinearSchedule, SwitchSchedule
    from cfgphase.solvers.theory.gaussian import gaussian_moments

    pair = GaussianPair(1.0, 0.25, 0.0, 1.0)
    _, out, _ = run_cli(capsys, *GAUSS, "--schedule", "linear", "--w0", "-0.5", "--slope", "0.5", "--json")
    assert json.loads(out)["var"] == gaussian_moments(pair, omega=LinearSchedule(-0.5, 0.5)).var[0]
    _, out, _ = run_cli(capsys, *GAUSS, "--schedule", "switch", "--guidance-scale", "4", "--t-switch", "0.5",
                        "--sampler", "sde", "--json")
    assert json.loads(out)["var"] == gaussian_moments(pair, omega=SwitchSchedule(3.0, 0.5), sampler="sde").var[0]
    code, out, _ = run_cli(capsys, *SMALL, "--schedule", "switch", "--omega", "2", "--t-switch", "0.3", "--json")
    assert code == 0 and json.loads(out)["schedule"].startswith("SwitchSchedule")


def test_every_schedule_and_rule_from_the_command_line_matches_the_api(capsys):
    """`simulate --schedule NAME --rule NAME [parameters]` runs exactly what the API runs."""
    import cfgphase as cp

    cases = [
        (["--schedule", "tvcfg", "--guidance-scale", "3", "--rule", "adg", "--a-max", "0.5"],
         cp.Guidance(guidance_scale=3.0, schedule="tvcfg", rule="adg", a_max=0.5), None),
        (["--schedule", "interval", "--omega", "2", "--sigma-hi", "1.6", "--sigma-lo", "0.3", "--rule", "apg",
          "--beta", "-0.5", "--norm-cap", "1"],
         cp.Guidance(omega=2.0, schedule="interval", sigma_lo=0.3, sigma_hi=1.6, rule="apg", beta=-0.5,
                     norm_cap=1.0), None),
        (["--schedule", "linear", "--w0", "-1", "--slope", "0.2", "--rule", "rescaled", "--phi", "0.5", "--space", "eps"],
         cp.Guidance(schedule=cp.make_schedule("linear", w0=-1.0, slope=0.2), rule=cp.make_rule("rescaled", phi=0.5,
                                                                                               space="eps")), None),
        (["--schedule", "step-down", "--omega", "1", "--rule", "powerlaw", "--power", "0.5"],
         cp.Guidance(omega=1.0, schedule="step-down", rule="powerlaw", power=0.5), None),
        (["--rule", "cfgpp", "--lam", "0.4", "--method", "ddim"], cp.Guidance(rule="cfgpp", lam=0.4), "ddim"),
        (["--schedule", "piecewise", "--breaks", "0.5,1", "--values", "0,2,1"],
         cp.Guidance(schedule="piecewise", breaks=[0.5, 1.0], values=[0.0, 2.0, 1.0]), None),
    ]
    for args, guidance, method in cases:
        code, out, err = run_cli(capsys, *SMALL, *args, "--json")
        assert code == 0, err
        api = cp.simulate(cp.Model(d=8, classes=12), guidance, sampler=cp.Sampler("ode", method=method, steps=20),
                          particles=64).summary()
        record = json.loads(out)
        for key in ("mean_ratio", "var_perp", "distortion", "energy_distance"):
            assert record[key] == api[key], (args, key)


def test_schedules_lists_every_schedule_and_rule_with_parameters_and_sources(capsys):
    from cfgphase.physics.rules import RULES
    from cfgphase.physics.schedules import SCHEDULES

    code, out, _ = run_cli(capsys, "schedules", "--json")
    record = json.loads(out)
    assert code == 0 and set(record["schedules"]) == set(SCHEDULES) and set(record["rules"]) == set(RULES)
    assert record["rules"]["adg"]["parameters"]["a_max"]["default"] == pytest.approx(np.pi / 3)
    assert record["schedules"]["interval"]["source"].startswith("Kynkaanniemi")
    assert record["schedules"]["linear"]["parameters"]["w0"]["required"]
    code, out, _ = run_cli(capsys, "schedules")
    assert code == 0 and "step-down" in out and "--norm-cap" in out


@pytest.mark.parametrize(
    "args, name",
    [
        (["--lambda-c", "-1"], "lambda_c"),
        (["--lambda-u", "0"], "lambda_u"),
        (["--slope", "1"], "slope"),
        (["--schedule", "linear", "--w0", "1"], "slope"),
        (["--schedule", "linear", "--w0", "1", "--slope", "1", "--omega", "2"], "omega"),
        (["--schedule", "switch"], "t_switch"),
        (["--schedule", "interval", "--sigma-lo", "2", "--sigma-hi", "1"], "sigma_hi"),
        (["--schedule", "tvcfg", "--w0", "1"], "w0"),
        (["--rule", "adg"], "--rule"),
        (["--schedule", "switch", "--t-switch", "-1"], "t_switch"),
        (["--schedule", "cosine"], "schedule"),
        (["--sampler", "sde", "--process", "flow", "--t-max", "1"], "t_max"),
    ],
)
def test_gaussian_bad_input(capsys, args, name):  # noqa: D103
    base = [a for a in GAUSS]
    for flag in ("--lambda-c", "--lambda-u"):
        if flag in args:
            i = base.index(flag)
            del base[i : i + 2]
    code, out, err = run_cli(capsys, *base, *args)
    assert code == 2 and err.count("\n") == 1 and name in err, err
    assert out == ""


def test_theory_json_has_the_contract_keys(capsys):
    code, out, _ = run_cli(capsys, "theory", "--alpha", "0.2", "--omega", "1", "--sampler", "sde", "--json")
    assert code == 0
    record = json.loads(out)
    for key in CONTRACT_KEYS:
        assert key in record, key
    from cfgphase.solvers.theory.meanfield import guided_prediction
    assert record["mean_ratio"] == guided_prediction(0.2, 1.0, sampler="sde").mean_ratio
    assert 0 < record["var_par"] < 0.25 and record["t_condensation"] > 0


def test_theory_d_gives_the_finite_d_prediction_with_its_errors(capsys):
    """--d D: the finite-d prediction at D (K = --classes, alpha = log K / D), the same numbers as the
    API's for the same population seed and grid (--steps), with *_stderr keys."""
    from cfgphase.solvers.sampling.sampler import Sampler
    from cfgphase.solvers.theory.finite_d import finite_d_prediction

    _, out, _ = run_cli(capsys, "theory", "--classes", "2165", "--d", "24", "--particles", "400", "--steps", "60",
                        "--json")
    record = json.loads(out)
    assert record["alpha"] == pytest.approx(np.log(2165) / 24) and record["d"] == 24 and record["K"] == 2165
    api = finite_d_prediction(24, 1.0, classes=2165, particles=400, sampler=Sampler(kind="ode", steps=60))
    assert record["mean_ratio"] == api.mean_ratio
    assert record["mean_ratio_stderr"] > 0 and record["var_perp_stderr"] > 0


@pytest.mark.parametrize("args, name", [(["--classes", "10"], "--d"), (["--d", "1"], "d"), (["--d", "2.5"], "--d"),
                                        (["--alpha", "0.2", "--particles", "100"], "--particles"),
                                        (["--alpha", "-1"], "alpha"), (["--omega", "nan"], "omega")])
def test_theory_bad_input(capsys, args, name):
    code, out, err = run_cli(capsys, "theory", *args)
    assert code == 2 and err.count("\n") == 1 and name in err and out == ""
