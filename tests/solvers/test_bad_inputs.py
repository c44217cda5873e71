"""Bad input, every subcommand: one line on stderr naming the parameter, exit status 2, nothing written.

The README's contract ("Command line"): bad input prints one line on stderr, exits with status 2
and writes nothing. Each case runs ``cfgphase.solvers.cli.main`` in process, in a fresh working
directory holding only the files the case needs, and checks: status 2; exactly one line on stderr,
no traceback, containing the name of the offending option or key; nothing on stdout; the working
directory unchanged (no new file, no file changed). Bad input is refused before any work, so each
case takes milliseconds (the first few pay for imports). A few cases run ``python -m cfgphase`` in
a subprocess for the real exit status.
"""

import os
import subprocess
import sys

import h5py
import pytest

from cfgphase.solvers.cli import main

SIM = ["simulate", "--d", "8", "--classes", "12", "--steps", "10", "--particles", "32", "--quiet"]
GAUSS = ["gaussian", "--lambda-c", "0.25", "--lambda-u", "1", "--mean-gap", "1"]
OPT = ["optimize-schedule", "--alpha", "0.1", "--target", "1.1"]
PD = ["phase-diagram", "--out", "pd.h5", "--workers", "1", "--quiet"]
GRID = ["--alpha", "0.1", "--omega", "1"]
SIMS = [*GRID, "--sim-d", "8", "--particles", "16", "--steps", "5"]
CONFIG = ["phase-diagram", "--config", "grid.toml", "--out", "pd.h5", "--workers", "1", "--quiet"]
THEORY_TOML = "[theory]\nalpha = [0.1]\nomega = [1.0]\n"
SIM_TOML = THEORY_TOML + "[simulation]\nd = [8]\nparticles = 16\nsteps = 5\n"


# --- files a case starts from ------------------------------------------------------------------


def _h5(name, **attrs):
    def make(root):
        with h5py.File(root / name, "w") as f:
            f.attrs.update(attrs)
    return make


def _bytes(name, data):
    def make(root):
        (root / name).write_bytes(data)
    return make


def _toml(text):
    return _bytes("grid.toml", text.encode())


FIGURE = _h5("fig.h5", kind="figure", figure_kind="gaussian", params="{}")
RANDOM = bytes(range(256)) * 16  # not HDF5, not UTF-8


def _both(*makers):
    def make(root):
        for m in makers:
            m(root)
    return make


# (arguments, a word the one line must contain, files the case starts from)
CASES = {
    # simulate: model
    "sim-seed": (SIM + ["--seed", "-1"], "seed", None),
    "sim-model-seed": (SIM + ["--model-seed", "-3"], "model_seed", None),
    "sim-noise-seed": (SIM + ["--noise-seed", "-3"], "noise_seed", None),
    "sim-d-zero": (["simulate", "--d", "0", "--classes", "4"], "d must be", None),
    "sim-classes-zero": (["simulate", "--d", "8", "--classes", "0"], "classes", None),
    "sim-alpha-memory": (["simulate", "--d", "64", "--alpha", "9"], "alpha", None),
    "sim-alpha-nan": (["simulate", "--d", "8", "--alpha", "nan"], "alpha", None),
    "sim-mean-var-zero": (SIM + ["--mean-var", "0"], "mean_var", None),
    "sim-mean-var-nan": (SIM + ["--mean-var", "nan"], "mean_var", None),
    "sim-class-var": (SIM + ["--class-var", "-1"], "class_var", None),
    "sim-unconditional": (SIM + ["--unconditional-var", "nan"], "unconditional", None),
    "sim-mode-weights": (SIM + ["--modes", "2", "--mode-weights", "nan,1"], "mode_weights", None),
    "sim-mode-weights-one-mode": (SIM + ["--mode-weights", "1,2"], "mode_weights", None),
    "sim-modes-zero": (SIM + ["--modes", "0"], "modes", None),
    "sim-target": (SIM + ["--target", "12"], "target", None),
    "sim-process": (SIM + ["--process", "vp"], "process", None),
    # simulate: guidance
    "sim-omega-below-minus-one": (SIM + ["--omega", "-2"], "omega", None),
    "sim-guidance-scale-negative": (SIM + ["--guidance-scale", "-0.5"], "guidance_scale", None),
    "sim-omega-inf": (SIM + ["--omega", "inf"], "omega", None),
    "sim-omega-nan": (SIM + ["--omega", "nan"], "omega", None),
    "sim-omega-and-scale": (SIM + ["--omega", "1", "--guidance-scale", "2"], "guidance-scale", None),
    "sim-tvcfg-omega": (SIM + ["--schedule", "tvcfg", "--omega", "-3"], "omega", None),
    "sim-tvcfg-two-steps": (SIM + ["--schedule", "tvcfg", "--steps", "2"], "steps", None),
    "sim-interval-no-window": (SIM + ["--schedule", "interval"], "sigma_lo", None),
    "sim-constant-with-window": (SIM + ["--sigma-lo", "0.3"], "sigma_lo", None),
    "sim-linear-w0-nan": (SIM + ["--schedule", "linear", "--w0", "nan", "--slope", "1"], "w0", None),
    "sim-piecewise-values": (SIM + ["--schedule", "piecewise", "--breaks", "1", "--values", "0,-3"], "values", None),
    "sim-switch-after": (SIM + ["--schedule", "switch", "--t-switch", "1", "--after", "-2"], "after", None),
    "sim-rule-unknown": (SIM + ["--rule", "adgg"], "rule", None),
    "sim-rule-parameter-nan": (SIM + ["--rule", "adg", "--a-max", "nan"], "a_max", None),
    "sim-rule-parameter-of-another": (SIM + ["--rule", "cfg", "--beta", "0.5"], "beta", None),
    "sim-rule-method": (SIM + ["--rule", "cfgpp"], "method", None),
    # simulate: sampler
    "sim-steps-huge": (SIM + ["--steps", str(10**9)], "steps", None),
    "sim-steps-zero": (SIM + ["--steps", "0"], "steps", None),
    "sim-steps-text": (SIM + ["--steps", "many"], "steps", None),
    "sim-t-min-above-t-max": (SIM + ["--t-min", "1", "--t-max", "0.5"], "t_max", None),
    "sim-t-max-nan": (SIM + ["--t-max", "nan"], "t_max", None),
    "sim-t-max-beyond-flow": (SIM + ["--process", "flow", "--t-max", "2"], "t_max", None),
    "sim-t-min-inf": (SIM + ["--t-min", "inf"], "t_min", None),
    "sim-particles-one": (SIM + ["--particles", "1"], "particles", None),
    "sim-particles-typo": (SIM + ["--particles", str(10**12)], "particles", None),
    # 10^8 particles at d = 4096 need 52 TB of working arrays: beyond the budget of any machine
    "sim-particles-memory": (["simulate", "--d", "4096", "--classes", "1", "--particles", str(10**8)], "particles",
                             None),
    "sim-dtype": (SIM + ["--dtype", "float16"], "dtype", None),
    # simulate: output
    "sim-out-empty": (SIM + ["--out", ""], "out", None),
    "sim-out-suffix": (SIM + ["--out", "run.txt"], "out", None),
    "sim-out-directory": (SIM + ["--out", "."], "out", None),
    "sim-out-no-directory": (SIM + ["--out", "nowhere/run.h5"], "out", None),
    "sim-out-exists": (SIM + ["--out", "run.h5"], "out", _bytes("run.h5", b"precious")),
    # theory
    "theory-omega": (["theory", "--omega", "-2"], "omega", None),
    "theory-guidance-scale": (["theory", "--guidance-scale", "-1"], "guidance_scale", None),
    "theory-t-max-zero": (["theory", "--t-max", "0"], "t_max", None),
    "theory-t-max-beyond-flow": (["theory", "--process", "flow", "--t-max", "2"], "t_max", None),
    "theory-mean-var": (["theory", "--mean-var", "0"], "mean_var", None),
    "theory-target-norm": (["theory", "--target-norm", "nan"], "target_norm", None),
    "theory-classes-without-d": (["theory", "--classes", "10"], "--d", None),
    "theory-d-one": (["theory", "--d", "1"], "d", None),
    "theory-d-text": (["theory", "--d", "16.5"], "--d", None),
    "theory-particles-without-d": (["theory", "--particles", "100"], "--particles", None),
    "theory-finite-d-seed": (["theory", "--d", "8", "--seed", "-1"], "seed", None),
    "theory-alpha-inf": (["theory", "--alpha", "inf"], "alpha", None),
    "theory-rule": (["theory", "--rule", "adg"], "rule", None),
    "theory-rule-parameter": (["theory", "--a-max", "1"], "a-max", None),
    "theory-step-schedule": (["theory", "--schedule", "tvcfg"], "schedule", None),
    "theory-window": (["theory", "--schedule", "interval", "--sigma-lo", "1", "--sigma-hi", "0.5"], "sigma_hi", None),
    # gaussian
    "gauss-lambda-c": ([*GAUSS, "--lambda-c", "nan"], "lambda_c", None),
    "gauss-lambda-u": ([*GAUSS, "--lambda-u", "0"], "lambda_u", None),
    "gauss-mean-gap": ([*GAUSS, "--mean-gap", "inf"], "mean", None),
    "gauss-omega": ([*GAUSS, "--omega", "-2"], "omega", None),
    "gauss-t-min": ([*GAUSS, "--t-min", "2", "--t-max", "1"], "t_max", None),
    "gauss-t-max-beyond-flow": ([*GAUSS, "--process", "flow", "--t-max", "2"], "t_max", None),
    "gauss-steps": ([*GAUSS, "--steps", str(10**9)], "steps", None),
    "gauss-tvcfg-two-steps": ([*GAUSS, "--schedule", "tvcfg", "--steps", "2"], "steps", None),
    "gauss-rule-parameter": ([*GAUSS, "--beta", "1"], "beta", None),
    "gauss-init": ([*GAUSS, "--init", "sideways"], "init", None),
    "gauss-missing-lambda": (["gaussian", "--lambda-c", "1", "--mean-gap", "1"], "lambda-u", None),
    # optimize-schedule
    "opt-knots": ([*OPT, "--knots", str(10**6)], "knots", None),
    "opt-target-nan": (["optimize-schedule", "--alpha", "0.1", "--target", "nan"], "target", None),
    "opt-target-missing": (["optimize-schedule", "--alpha", "0.1"], "target", None),
    "opt-steps-without-d": ([*OPT, "--steps", "0"], "steps", None),
    "opt-steps-huge": ([*OPT, "--d", "16", "--steps", str(10**9)], "steps", None),
    "opt-d-zero": ([*OPT, "--d", "0"], "d must be", None),
    "opt-mean-var": ([*OPT, "--mean-var", "-1"], "mean_var", None),
    "opt-alpha": (["optimize-schedule", "--alpha", "-1", "--target", "1.1"], "alpha", None),
    "opt-classes-without-d": (["optimize-schedule", "--classes", "10", "--target", "1.1"], "--d", None),
    # schedules
    "schedules-option": (["schedules", "--bogus"], "bogus", None),
    "schedules-argument": (["schedules", "extra"], "extra", None),
    # plot
    "plot-missing": (["plot", "missing.h5", "--out", "fig.png"], "file", None),
    "plot-empty-file": (["plot", "empty.h5", "--out", "fig.png"], "file", _bytes("empty.h5", b"")),
    "plot-random-bytes": (["plot", "noise.h5", "--out", "fig.png"], "file", _bytes("noise.h5", RANDOM)),
    "plot-not-cfgphase": (["plot", "plain.h5", "--out", "fig.png"], "file", _h5("plain.h5")),
    "plot-phase-diagram-without-data": (["plot", "pd.h5", "--out", "fig.png"], "file",
                                        _h5("pd.h5", kind="phase_diagram", schedule="constant")),
    "plot-simulation-without-data": (["plot", "run.h5", "--out", "fig.png"], "file", _h5("run.h5", kind="simulation")),
    "plot-figure-without-data": (["plot", "fig.h5", "--out", "fig.png"], "file", FIGURE),
    "plot-figure-without-params": (["plot", "fig.h5", "--out", "fig.png"], "file",
                                   _h5("fig.h5", kind="figure", figure_kind="gaussian")),
    "plot-figure-unknown-kind": (["plot", "fig.h5", "--out", "fig.png"], "file",
                                 _h5("fig.h5", kind="figure", figure_kind="cosine", params="{}")),
    "plot-file-empty-name": (["plot", "", "--out", "fig.png"], "file", None),
    "plot-file-directory": (["plot", ".", "--out", "fig.png"], "file", None),
    "plot-out-directory": (["plot", "fig.h5", "--out", "."], "out", FIGURE),
    "plot-out-suffix": (["plot", "fig.h5", "--out", "fig.jpg"], "out", FIGURE),
    "plot-out-empty": (["plot", "fig.h5", "--out", ""], "out", FIGURE),
    "plot-out-no-directory": (["plot", "fig.h5", "--out", "nowhere/fig.png"], "out", FIGURE),
    "plot-out-exists": (["plot", "fig.h5", "--out", "fig.png"], "out", _both(FIGURE, _bytes("fig.png", b"precious"))),
    "plot-kind-mismatch": (["plot", "fig.h5", "--kind", "schedules", "--out", "fig.png"], "kind", FIGURE),
    "plot-kind-unknown": (["plot", "fig.h5", "--kind", "cosine", "--out", "fig.png"], "kind", FIGURE),
    # phase-diagram, options
    "pd-particles-typo": ([*PD, *GRID, "--sim-d", "8", "--particles", str(10**12)], "particles", None),
    "pd-particles-memory": ([*PD, "--alpha", "0", "--omega", "1", "--sim-d", "4096", "--particles", str(10**8)],
                            "particles", None),
    "pd-alpha-memory": ([*PD, "--alpha", "5", "--omega", "1", "--sim-d", "64"], "alpha", None),
    "pd-steps": ([*PD, *GRID, "--sim-d", "8", "--steps", str(10**9)], "steps", None),
    "pd-seeds": ([*PD, *SIMS, "--seeds", "0"], "seeds", None),
    "pd-omega": ([*PD, "--alpha", "0.1", "--omega", "-2"], "omega", None),
    "pd-omega-nan": ([*PD, "--alpha", "0.1", "--omega", "nan"], "omega", None),
    "pd-sim-omega": ([*PD, *SIMS, "--sim-omega", "-3"], "omega", None),
    "pd-sim-d-fraction": ([*PD, *GRID, "--sim-d", "8.7"], "simulation.d", None),
    "pd-sim-d-word": ([*PD, *GRID, "--sim-d", "x"], "simulation.d", None),
    "pd-range-syntax": ([*PD, "--alpha", "0:0.6:x", "--omega", "1"], "--alpha", None),
    "pd-range-huge": ([*PD, "--alpha", f"0:0.6:{10**9}", "--omega", "1"], "alpha", None),
    "pd-grid-huge": ([*PD, "--alpha", "0:0.6:1001", "--omega", "0:5:1001"], "theory", None),
    "pd-alpha-words": ([*PD, "--alpha", "a,b", "--omega", "1"], "alpha", None),
    "pd-mean-var": ([*PD, *GRID, "--mean-var", "0"], "mean_var", None),
    "pd-sampler": ([*PD, *GRID, "--sampler", "ode,xde"], "sampler", None),
    "pd-linear-missing-slope": ([*PD, "--schedule", "linear", "--alpha", "0.1", "--w0", "1"], "slope", None),
    "pd-switch-t-switch": ([*PD, "--schedule", "switch", "--alpha", "0.1", "--omega", "1", "--t-switch", "-1"],
                           "t_switch", None),
    "pd-sim-option-without-d": ([*PD, *GRID, "--particles", "16"], "--sim-d", None),
    "pd-workers": ([*PD, *GRID, "--workers", "0"], "workers", None),
    "pd-scheduler": ([*PD, *GRID, "--scheduler", "nowhere"], "scheduler", None),
    "pd-out-empty": (["phase-diagram", *GRID, "--out", ""], "out", None),
    "pd-out-suffix": (["phase-diagram", *GRID, "--out", "pd.txt"], "out", None),
    "pd-out-exists": ([*PD, *GRID], "out", _bytes("pd.h5", b"precious")),
    "pd-config-and-options": ([*CONFIG, *GRID], "--config", _toml(THEORY_TOML)),
    "pd-nothing": (PD, "--config", None),
    # phase-diagram, TOML
    "toml-binary": (CONFIG, "--config", _bytes("grid.toml", RANDOM)),
    "toml-missing": (CONFIG, "--config", None),
    "toml-directory": (["phase-diagram", "--config", ".", "--out", "pd.h5"], "--config", None),
    "toml-syntax": (CONFIG, "--config", _toml("[theory\nalpha = \n")),
    "toml-d-fraction": (CONFIG, "simulation.d", _toml(SIM_TOML.replace("[8]", "[8.7]"))),
    "toml-particles-bool": (CONFIG, "simulation.particles", _toml(SIM_TOML.replace("16", "true"))),
    "toml-particles-typo": (CONFIG, "simulation.particles", _toml(SIM_TOML.replace("16", str(10**12)))),
    "toml-steps": (CONFIG, "simulation.steps", _toml(SIM_TOML.replace("= 5", f"= {10**9}"))),
    "toml-theory-not-a-table": (CONFIG, "theory", _toml("theory = 5\n")),
    "toml-model-not-a-table": (CONFIG, "model", _toml("model = 5\n" + THEORY_TOML)),
    "toml-simulation-not-a-table": (CONFIG, "simulation", _toml("simulation = 5\n" + THEORY_TOML)),
    "toml-t-max-negative": (CONFIG, "simulation.t_max", _toml(SIM_TOML + "t_max = -1.0\n")),
    "toml-t-max-beyond-flow": (CONFIG, "simulation.t_max",
                               _toml('[model]\nprocess = "flow"\n' + SIM_TOML + "t_max = 2.0\n")),
    "toml-theory-t-max": (CONFIG, "theory.t_max", _toml(THEORY_TOML + 't_max = "x"\n')),
    "toml-threads": (CONFIG, "simulation.threads", _toml(SIM_TOML + "threads = 100000\n")),
    "toml-threads-fraction": (CONFIG, "simulation.threads", _toml(SIM_TOML + "threads = 1.5\n")),
    "toml-dtype": (CONFIG, "simulation.dtype", _toml(SIM_TOML + 'dtype = "float16"\n')),
    "toml-dtype-number": (CONFIG, "simulation.dtype", _toml(SIM_TOML + "dtype = 5\n")),
    "toml-seed-negative": (CONFIG, "simulation.seed", _toml(SIM_TOML + "seed = [-1]\n")),
    "toml-seeds-fraction": (CONFIG, "simulation.seeds", _toml(SIM_TOML + "seeds = 2.0\n")),
    "toml-alpha-memory": (CONFIG, "simulation.alpha", _toml(SIM_TOML.replace("[8]", "[64]") + "alpha = [5.0]\n")),
    "toml-process": (CONFIG, "model.process", _toml("[model]\nprocess = 5\n" + THEORY_TOML)),
    "toml-mean-var-bool": (CONFIG, "model.mean_var", _toml("[model]\nmean_var = true\n" + THEORY_TOML)),
    "toml-schedule-number": (CONFIG, "schedule", _toml("schedule = 5\n" + THEORY_TOML)),
    "toml-alpha-bool": (CONFIG, "theory.alpha", _toml(THEORY_TOML.replace("[0.1]", "[true]"))),
    "toml-alpha-string": (CONFIG, "theory.alpha", _toml(THEORY_TOML.replace("[0.1]", '["0.1"]'))),
    "toml-alpha-nested": (CONFIG, "theory.alpha", _toml(THEORY_TOML.replace("[0.1]", "[[0.1]]"))),
    "toml-num-bool": (CONFIG, "theory.alpha.num",
                      _toml(THEORY_TOML.replace("[0.1]", "{ start = 0, stop = 1, num = true }"))),
    "toml-num-huge": (CONFIG, "theory.omega",
                      _toml(THEORY_TOML.replace("[1.0]", f"{{ start = 0, stop = 1, num = {10**9} }}"))),
    "toml-sampler-number": (CONFIG, "theory.sampler", _toml(THEORY_TOML + "sampler = [5]\n")),
    "toml-omega-nan": (CONFIG, "theory.omega", _toml(THEORY_TOML.replace("[1.0]", "[nan]"))),
    "toml-unknown-key": (CONFIG, "theory.unknown", _toml(THEORY_TOML + "unknown = 3\n")),
    "toml-unknown-section": (CONFIG, "modle", _toml(THEORY_TOML + "[modle]\n")),
    "toml-t-switch-beyond-flow": (CONFIG, "t_switch", _toml('schedule = "switch"\n[model]\nprocess = "flow"\n'
                                                          + THEORY_TOML + "t_switch = [2.0]\n")),
}


def _snapshot(root):
    return {p.relative_to(root): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def _run(capsys, args):
    try:
        code = main(list(args))
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    return code, *capsys.readouterr()


def test_the_table_covers_every_subcommand():
    commands = {args[0] for args, _, _ in CASES.values()}
    assert commands == {"simulate", "theory", "gaussian", "optimize-schedule", "schedules", "plot", "phase-diagram"}
    assert len(CASES) >= 60
    assert sum(args[:3] == CONFIG[:3] for args, _, _ in CASES.values()) >= 20  # TOML files


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, monkeypatch, capsys):
    args, word, make = CASES[case]
    monkeypatch.chdir(tmp_path)
    if make is not None:
        make(tmp_path)
    before = _snapshot(tmp_path)
    code, out, err = _run(capsys, args)
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    assert word in err, err
    assert out == ""
    assert _snapshot(tmp_path) == before


SUBPROCESS = ["sim-seed", "theory-omega", "plot-random-bytes", "toml-binary", "pd-alpha-memory"]


@pytest.mark.parametrize("case", SUBPROCESS)
def test_bad_input_through_the_real_entry_point(case, tmp_path):
    args, word, make = CASES[case]
    if make is not None:
        make(tmp_path)
    before = _snapshot(tmp_path)
    env = dict(os.environ, PYTHONWARNINGS="error::RuntimeWarning")
    proc = subprocess.run([sys.executable, "-m", "cfgphase", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and word in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert _snapshot(tmp_path) == before


def test_options_the_audit_found_failing_point_by_point_are_now_checked_or_fixed():
    """The default simulation start, t_max = 7, lies beyond the flow process's time range [0, 1]:
    every flow simulation of a sweep failed. It now defaults to the end of the range (and a t_max
    given beyond it is refused); the stored spec of other processes is unchanged (resume)."""
    from cfgphase.solvers.sweeps.spec import parse_spec

    config = {"theory": {"alpha": [0.1], "omega": [1.0]}, "simulation": {"d": [8]}}
    assert parse_spec(config).simulation["t_max"] == 7.0
    assert parse_spec(dict(config, model={"process": "flow"})).simulation["t_max"] == 1.0
    with pytest.raises(ValueError, match=r"simulation\.t_max"):
        parse_spec(dict(config, model={"process": "flow"}, simulation={"d": [8], "t_max": 7.0}))
    # integers stay integers on the command line, so that --sim-d 8.7 is refused rather than truncated
    from cfgphase.solvers.sweeps.spec import config_from_options

    assert config_from_options({"alpha": "0.1", "omega": "1", "sim-d": "32,64"})["simulation"]["d"] == [32, 64]
