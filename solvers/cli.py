"""The ``cfgphase`` command line (DESIGN.md, "Command line contract").

Bad input prints one line on stderr and exits with status 2, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from physics.guidance import DEFAULT_OMEGA
from physics.processes import PROCESSES
from solvers.steppers import STEPPERS
from solvers.plots import KINDS
from solvers.timegrid import GRIDS


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _model_options(p):
    g = p.add_argument_group("model")
    g.add_argument("--d", type=int, default=64, help="dimension (default 64)")
    k = g.add_mutually_exclusive_group()
    k.add_argument("--alpha", type=float, help="K = round(exp(alpha d)) classes (default 0.12)")
    k.add_argument("--classes", type=int, help="number of classes K")
    g.add_argument("--mean-var", type=float, default=1.0, help="variance sigma_mu^2 of the class means (default 1)")
    g.add_argument("--class-var", type=float, default=0.25, help="within-class variance s^2 (default 0.25)")
    g.add_argument("--process", choices=sorted(PROCESSES), default="ou", help="forward process (default ou)")
    g.add_argument("--modes", type=int, default=1, help="components per class: multimodal conditionals (default 1)")
    g.add_argument("--mode-weights", type=_number_list, metavar="W1,W2,...",
                   help="within-class weights of the modes (default uniform)")
    g.add_argument("--unconditional-var", type=float, metavar="V",
                   help="use N(0, V I) as an independent unconditional model instead of the mixture")
    g.add_argument("--target", type=int, default=0, help="target class c (default 0)")
    g.add_argument("--seed", type=int, default=0, help="seed of the class means and of the noise (default 0)")


#: Schedule and rule parameters that are not plain numbers on the command line.
LIST_PARAMETERS = ("breaks", "values", "sigmas")
TEXT_PARAMETERS = ("clock", "space")


def _number_list(text):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _registry_options(group, registry, skip=()):
    """One option per parameter of the schedules (or rules) in ``registry``; help names their owners."""
    names = []
    for cls in registry.values():
        for name, (default, text) in cls.PARAMETERS.items():
            if name in skip or name in names:
                continue
            names.append(name)
            owners = ", ".join(c.name for c in registry.values() if name in c.PARAMETERS)
            kind = str if name in TEXT_PARAMETERS else _number_list if name in LIST_PARAMETERS else float
            shown = ("" if default is None or not isinstance(default, (int, float, str)) else
                     f" (default {default:.4g})" if isinstance(default, float) else f" (default {default})")
            group.add_argument("--" + name.replace("_", "-"), type=kind, metavar=name.upper(),
                               help=f"{owners}: {text}{shown}")
    return names


def _guidance_options(p, rules=True):
    from physics.rules import RULES
    from physics.schedules import SCHEDULES

    g = p.add_argument_group("guidance (excess convention: s_c + omega (s_c - s_u); `cfgphase schedules` lists all)")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--omega", type=float, help=f"excess weight omega (default {DEFAULT_OMEGA}); the mean or early "
                                               "weight of a schedule")
    w.add_argument("--guidance-scale", type=float, help="diffusers weight w = 1 + omega")
    g.add_argument("--schedule", choices=list(SCHEDULES), default="constant", help="omega(t) (default constant)")
    p.set_defaults(schedule_parameters=_registry_options(g, SCHEDULES, skip=("omega",)))
    if rules:
        g = p.add_argument_group("guidance rule")
        g.add_argument("--rule", choices=list(RULES), default="cfg", help="how s_c and s_u are combined (default cfg)")
        p.set_defaults(rule_parameters=_registry_options(g, RULES))


def _guidance(args):
    """(omega, guidance_scale, rule) for the API from the guidance options; ValueError naming a
    parameter that does not belong to the chosen schedule or rule."""
    from physics.rules import make_rule
    from physics.schedules import make_schedule

    given = {k: getattr(args, k) for k in args.schedule_parameters if getattr(args, k) is not None}
    weight = {k: getattr(args, k) for k in ("omega", "guidance_scale") if getattr(args, k) is not None}
    rule = None
    if "rule_parameters" in args:
        rule = make_rule(args.rule, **{k: getattr(args, k) for k in args.rule_parameters if getattr(args, k) is not None})
    if args.schedule == "constant":
        if given:
            make_schedule("constant", **given)  # names the stray parameter
        return args.omega, args.guidance_scale, rule
    return make_schedule(args.schedule, **given, **weight), None, rule


def _sampler_options(p):
    g = p.add_argument_group("sampler")
    g.add_argument("--sampler", choices=["ode", "sde"], default="ode", help="probability-flow ODE or reverse SDE")
    g.add_argument("--method", choices=sorted(STEPPERS), help="stepper (default heun for ode, exponential for sde)")
    g.add_argument("--steps", type=int, default=200, help="number of steps (default 200)")
    g.add_argument("--t-max", type=float, help="start time (default: data signal-to-noise 1e-4)")
    g.add_argument("--t-min", type=float, default=0.0, help="end time (default 0)")
    g.add_argument("--grid", choices=GRIDS, default="log", help="time grid (default log: uniform in log(t + t0), refined near t = 0)")
    g.add_argument("--particles", type=int, default=1024, help="number of particles (default 1024)")
    g.add_argument("--init", choices=["unconditional", "conditional"], default="unconditional",
                   help="initial particles: exact noised unconditional or target-class data at t_max")
    g.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="precision of the score GEMMs")


def build_parser():
    parser = _Parser(prog="cfgphase", description="Classifier-free guidance on Gaussian mixtures with exact scores.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    theory = sub.add_parser("theory", help="mean-field prediction (d -> infinity) for K = exp(alpha d) classes")
    g = theory.add_argument_group("model")
    k = g.add_mutually_exclusive_group()
    k.add_argument("--alpha", type=float, help="K = exp(alpha d) (default 0.12)")
    k.add_argument("--classes", type=int, help="number of classes K, with --d: alpha = log(K)/d")
    g.add_argument("--d", type=int, help="dimension (only to convert --classes into alpha)")
    g.add_argument("--mean-var", type=float, default=1.0, help="variance sigma_mu^2 of the class means (default 1)")
    g.add_argument("--class-var", type=float, default=0.25, help="within-class variance s^2 (default 0.25)")
    g.add_argument("--process", choices=sorted(PROCESSES), default="ou", help="forward process (default ou)")
    _guidance_options(theory, rules=False)
    g = theory.add_argument_group("sampler")
    g.add_argument("--sampler", choices=["ode", "sde"], default="ode", help="probability-flow ODE or reverse SDE")
    g.add_argument("--t-max", type=float, help="start time (default: one direction's signal-to-noise 1e-10)")
    theory.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    gauss = sub.add_parser("gaussian", help="exact final mean and variance for Gaussian conditional/unconditional")
    g = gauss.add_argument_group("model (one eigendirection)")
    g.add_argument("--lambda-c", type=float, required=True, help="conditional variance lambda_c")
    g.add_argument("--lambda-u", type=float, required=True, help="unconditional variance lambda_u")
    g.add_argument("--mean-gap", type=float, required=True, help="mu_c - mu_u (mu_u = 0)")
    g.add_argument("--process", choices=sorted(PROCESSES), default="ou", help="forward process (default ou)")
    _guidance_options(gauss, rules=False)
    g = gauss.add_argument_group("sampler")
    g.add_argument("--sampler", choices=["ode", "sde"], default="ode", help="probability-flow ODE or reverse SDE")
    g.add_argument("--t-max", type=float, help="start time (default: signal-to-noise 1e-4)")
    g.add_argument("--t-min", type=float, default=0.0, help="end time (default 0)")
    g.add_argument("--init", choices=["unconditional", "conditional"], default="unconditional",
                   help="law at t_max: exact noised unconditional or conditional Gaussian")
    g.add_argument("--steps", type=int, default=200,
                   help="steps of the sampler's grid, for schedules defined on its steps (default 200)")
    g.add_argument("--grid", choices=GRIDS, default="log", help="the sampler's time grid (default log)")
    gauss.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    sim = sub.add_parser("simulate", help="guided sampling with exact scores; prints final statistics")
    _model_options(sim)
    _guidance_options(sim)
    _sampler_options(sim)
    out = sim.add_argument_group("output")
    out.add_argument("--out", help="write observables and parameters to this HDF5 file")
    out.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    out.add_argument("--samples", action="store_true", help="also store the final particles in --out")
    out.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    opt = sub.add_parser("optimize-schedule", help="the spline schedule with the least predicted distortion at a "
                                                   "required mean ratio, beside tuned baselines")
    g = opt.add_argument_group("model")
    k = g.add_mutually_exclusive_group(required=True)
    k.add_argument("--alpha", type=float, help="K = exp(alpha d)")
    k.add_argument("--classes", type=int, help="number of classes K, with --d: alpha = log(K)/d")
    g.add_argument("--d", type=int, help="dimension: converts --classes into alpha, and sets the sampler's start "
                                         "time and grid (TV-CFG, step-down baselines) as cfgphase simulate would")
    g.add_argument("--steps", type=int, default=200, help="sampler steps on the log grid, with --d (default 200)")
    g.add_argument("--mean-var", type=float, default=1.0, help="variance sigma_mu^2 of the class means (default 1)")
    g.add_argument("--class-var", type=float, default=0.25, help="within-class variance s^2 (default 0.25)")
    g.add_argument("--process", choices=sorted(PROCESSES), default="ou", help="forward process (default ou)")
    g = opt.add_argument_group("objective")
    g.add_argument("--target", type=float, required=True, help="required mean ratio E[x.mu_c]/|mu_c|^2 (> 1)")
    g.add_argument("--sampler", choices=["ode", "sde"], default="ode", help="probability-flow ODE or reverse SDE")
    g.add_argument("--knots", type=int, default=6, help="spline knots, log-spaced in noise level 0.05-20 (default 6)")
    opt.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    sched = sub.add_parser("schedules", help="list every guidance schedule and rule with its parameters and source")
    sched.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    pd = sub.add_parser("phase-diagram", help="theory on an (alpha, omega, ...) grid plus simulations; one HDF5 file")
    pd.add_argument("--config", help="TOML file describing the sweep (data/README.md); excludes the grid options")
    g = pd.add_argument_group("grid (RANGE is START:STOP:NUM or a comma list)")
    g.add_argument("--schedule", choices=["constant", "linear", "switch"], help="guidance schedule (default constant)")
    for name, text in (("alpha", "log(K)/d"), ("omega", "excess weight (constant, switch)"),
                       ("w0", "linear: omega at t = 0"), ("slope", "linear: d omega / dt"),
                       ("t-switch", "switch: forward time of the switch"), ("after", "switch: weight after (-1)")):
        g.add_argument(f"--{name}", metavar="RANGE", help=text)
    g.add_argument("--sampler", metavar="LIST", help="ode and/or sde, comma separated (default ode)")
    g.add_argument("--mean-var", type=float, help="sigma_mu^2 (default 1)")
    g.add_argument("--class-var", type=float, help="s^2 (default 0.25)")
    g.add_argument("--process", choices=sorted(PROCESSES), help="forward process (default ou)")
    g = pd.add_argument_group("simulations (only with --sim-d)")
    g.add_argument("--sim-alpha", metavar="RANGE", help="alphas to simulate (default: the grid's)")
    g.add_argument("--sim-omega", metavar="RANGE", help="omegas to simulate (default: the grid's)")
    g.add_argument("--sim-d", metavar="LIST", help="dimensions, comma separated")
    g.add_argument("--seeds", type=int, help="replicate seeds per point (default 1)")
    g.add_argument("--particles", type=int, help="particles per simulation (default 512)")
    g.add_argument("--steps", type=int, help="steps per simulation (default 100)")
    g = pd.add_argument_group("run")
    g.add_argument("--out", required=True, help="HDF5 file to write (.h5)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out, skipping finished points")
    g.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g.add_argument("--workers", type=int, help="local worker processes (default: usable cores)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="run on this Dask distributed scheduler instead")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    plot = sub.add_parser("plot", help="draw a figure from a cfgphase HDF5 file")
    plot.add_argument("file", help="HDF5 file written by cfgphase")
    plot.add_argument("--kind", choices=KINDS, help="figure to draw (default: the one the file holds)")
    plot.add_argument("--out", required=True, help="figure file (.pdf, .png or .svg)")

    bench = sub.add_parser("bench", help="time and peak memory of the exact score against the alternatives")
    g = bench.add_argument_group("cases (default: the full grid; each list is a product axis)")
    g.add_argument("--B", type=int, nargs="+", help="particles (default 1024 8192)")
    g.add_argument("--K", type=int, nargs="+", help="classes (default 4096 65536 1000000)")
    g.add_argument("--d", type=int, nargs="+", help="dimensions (default 32 64 256)")
    g.add_argument("--dtype", nargs="+", choices=["float32", "float64"], help="precisions (default both)")
    g.add_argument("--methods", nargs="+", help="gemm broadcast softmax torch cfgphase (default: all)")
    g.add_argument("--regimes", nargs="+", choices=["spread", "condensed"], help="default: both")
    g.add_argument("--operations", nargs="+", choices=["score", "step"], help="default: both")
    g.add_argument("--quick", action="store_true", help="one small case (B=256, K=4096, d=32) for a smoke test")
    g = bench.add_argument_group("limits")
    g.add_argument("--repeats", type=int, default=3, help="timed runs per case, median reported (default 3)")
    g.add_argument("--max-seconds", type=float, default=30.0,
                   help="skip a case whose estimated time per run exceeds this (default 30)")
    g.add_argument("--memory-gb", type=float, help="skip a case whose working set exceeds this (default: half the RAM)")
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _fmt(value, stderr=None):
    if value is None:
        return "n/a"
    text = f"{value:.4g}"
    return text if stderr is None else f"{text} +- {stderr:.2g}"


def _print_summary(summary, class_var):
    print(f"cfgphase simulate: d={summary['d']} K={summary['K']} {_weight_label(summary)} "
          f"process={summary['process']} sampler={summary['sampler']} ({summary['method']}, "
          f"{summary['steps']} steps) particles={summary['particles']}")
    rows = [
        ("mean_ratio", "E[x.mu_c]/|mu_c|^2", 1.0),
        ("var_par", "variance along mu_c", class_var),
        ("var_perp", "variance across mu_c", class_var),
        ("distortion", "KL(fit || conditional)/d", 0.0),
        ("accuracy", "Bayes accuracy", None),
        ("inv_prob", "E[1/p(c|x)]", None),
        ("t_condensation", "t where <pi_c> = 1/2", None),
    ]
    print(f"  {'statistic':<16}{'meaning':<28}{'simulated':<24}conditional")
    for key, meaning, target in rows:
        print(f"  {key:<16}{meaning:<28}{_fmt(summary.get(key), summary.get(key + '_stderr')):<24}{_fmt(target)}")
    print(f"  {summary['n_score_evals']} score evaluations in {summary['wall_time']:.1f} s")


def _simulate(args):
    from solvers.simulate import simulate
    from solvers.storage import check_output_path, write_simulation

    if args.out is not None:
        check_output_path(args.out, args.overwrite)
    omega, guidance_scale, rule = _guidance(args)
    result = simulate(
        d=args.d, alpha=args.alpha, classes=args.classes, mean_var=args.mean_var, class_var=args.class_var,
        process=args.process, target=args.target, seed=args.seed, dtype=args.dtype, modes=args.modes,
        mode_weights=args.mode_weights, unconditional=args.unconditional_var,
        omega=omega, guidance_scale=guidance_scale, rule=rule, sampler=args.sampler, method=args.method,
        steps=args.steps, t_max=args.t_max, t_min=args.t_min, grid=args.grid, particles=args.particles,
        init=args.init, keep_samples=args.samples, progress=not args.quiet and sys.stderr.isatty(),
    )
    if args.out is not None:
        write_simulation(args.out, result)
    summary = result.summary()
    if args.json:
        _print_json(summary)
    else:
        _print_summary(summary, result.params["class_var"])
        if args.out is not None:
            print(f"  written to {args.out}")
    return _exit_status(result.status == 0, result.message, "simulation")


def _weight_label(record):
    return f"omega={_fmt(record['omega'])}" if record["omega"] is not None else f"schedule={record['schedule']}"


def _exit_status(ok, message, what):
    if not ok:
        print(f"cfgphase: {what} failed: {message}", file=sys.stderr)
        return 1
    return 0


def _print_json(record):
    print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}))


def _gaussian(args):
    from physics.gaussian import GaussianPair
    from solvers.gaussian_theory import gaussian_moments

    from physics.processes import get_process
    from physics.schedules import needs_grid
    from solvers.timegrid import default_t_max, time_grid

    omega, guidance_scale, _ = _guidance(args)
    pair = GaussianPair(mean_c=args.mean_gap, var_c=args.lambda_c, mean_u=0.0, var_u=args.lambda_u)
    grid = None
    if needs_grid(omega):
        process = get_process(args.process)
        t_max = default_t_max(process, pair.signal_var) if args.t_max is None else args.t_max
        grid = time_grid(process, args.steps, t_max, args.t_min, kind=args.grid, class_var=pair.var_c)
    pred = gaussian_moments(pair, args.process, omega=omega, guidance_scale=guidance_scale, sampler=args.sampler,
                            t_max=args.t_max, t_min=args.t_min, init=args.init, grid=grid)
    record = pred.summary()
    record.update(lambda_c=args.lambda_c, lambda_u=args.lambda_u, mean_gap=args.mean_gap)
    if args.json:
        _print_json(record)
    else:
        print(f"cfgphase gaussian: lambda_c={args.lambda_c} lambda_u={args.lambda_u} mean_gap={args.mean_gap} "
              f"{_weight_label(record)} process={args.process} "
              f"sampler={args.sampler} t_max={record['t_max']:.4g}")
        print(f"  {'':<10}{'guided':<14}conditional")
        print(f"  {'mean':<10}{record['mean']:<14.6g}{record['mean_conditional']:.6g}")
        print(f"  {'var':<10}{record['var']:<14.6g}{record['var_conditional']:.6g}")
        print(f"  KL(guided || conditional) = {record['distortion']:.6g}")
    return _exit_status(pred.success, pred.message, "integration")


def _theory(args):
    from solvers.meanfield import guided_prediction

    alpha = args.alpha
    if args.classes is not None:
        if args.d is None or args.d < 1:
            raise ValueError("--classes needs --d >= 1 to give alpha = log(K)/d")
        if args.classes < 1:
            raise ValueError(f"classes must be >= 1, got {args.classes}")
        alpha = math.log(args.classes) / args.d
    elif args.d is not None:
        raise ValueError("--d only converts --classes into alpha; the theory is the d -> infinity limit")
    omega, guidance_scale, _ = _guidance(args)
    pred = guided_prediction(0.12 if alpha is None else alpha, omega=omega, guidance_scale=guidance_scale,
                             process=args.process, sampler=args.sampler, mean_var=args.mean_var,
                             class_var=args.class_var, t_max=args.t_max)
    record = pred.summary()
    if args.json:
        _print_json(record)
    else:
        print(f"cfgphase theory (d -> infinity): alpha={record['alpha']:.4g} {_weight_label(record)} process={args.process} "
              f"sampler={args.sampler}")
        for key, meaning, target in (("mean_ratio", "E[x.mu_c]/|mu_c|^2", 1.0),
                                     ("var_par", "variance along mu_c", args.class_var),
                                     ("var_perp", "variance across mu_c", args.class_var),
                                     ("distortion", "KL(fit || conditional)/d", 0.0),
                                     ("t_condensation", "condensation time t*", None)):
            print(f"  {key:<16}{meaning:<28}{_fmt(record[key]):<14}{_fmt(target)}")
    return _exit_status(pred.success, pred.message, "integration")


def _bench(args):
    from tqdm import tqdm

    from solvers import bench

    grid = dict(bench.QUICK if args.quick else bench.FULL)
    for key, name in (("B", "B"), ("K", "K"), ("d", "d"), ("dtype", "dtype")):
        if getattr(args, name) is not None:
            grid[key] = tuple(getattr(args, name))
    methods = tuple(args.methods or bench.METHODS)
    regimes, operations = tuple(args.regimes or bench.REGIMES), tuple(args.operations or bench.OPERATIONS)
    total = math.prod(len(v) for v in grid.values()) * len(methods) * len(regimes) * len(operations)
    with tqdm(total=total, unit="case", disable=args.quiet or not sys.stderr.isatty(), file=sys.stderr) as bar:
        def progress(text):
            bar.set_postfix_str(text, refresh=False)
            bar.update()

        rows = bench.run(grid["B"], grid["K"], grid["d"], grid["dtype"], methods, regimes, operations,
                         repeats=args.repeats, max_seconds=args.max_seconds, memory_gb=args.memory_gb,
                         progress=progress)
    record = bench.record(rows)
    print(json.dumps(record) if args.json else bench.report(record))
    return 0


def _phase_diagram(args):
    from solvers.sweep import run_sweep
    from solvers.sweep_spec import GRID_OPTIONS, config_from_options, parse_spec, read_config

    given = {k: v for k in GRID_OPTIONS if (v := getattr(args, k.replace("-", "_"))) is not None}
    if args.config is not None and given:
        raise ValueError(f"--config: give a TOML file or grid options, not both (got --{sorted(given)[0]})")
    if args.config is not None:
        spec = parse_spec(read_config(args.config))
    elif given:
        spec = parse_spec(config_from_options(given))
    elif args.resume:
        spec = None
    else:
        raise ValueError("--config: give a TOML file, grid options, or --resume")
    summary = run_sweep(spec, args.out, resume=args.resume, overwrite=args.overwrite, workers=args.workers,
                        scheduler=args.scheduler, progress=not args.quiet and sys.stderr.isatty())
    print(f"cfgphase phase-diagram: {summary['points_done']} points done, {summary['points_failed']} failed, "
          f"{summary['computed']} of {summary['units']} units computed in {summary['wall_time']:.1f} s; "
          f"written to {summary['path']}")
    return 0


def _optimize_schedule(args):
    from solvers import schedule_design

    alpha = args.alpha
    if args.classes is not None:
        if args.d is None or args.d < 1 or args.classes < 1:
            raise ValueError("--classes needs --d >= 1 and K >= 1 to give alpha = log(K)/d")
        alpha = math.log(args.classes) / args.d
    if args.knots < 2:
        raise ValueError(f"knots must be >= 2, got {args.knots}")
    grid = t_max = None
    if args.d is not None:  # the sampler cfgphase simulate would use at this d: its start and its steps
        from physics.processes import get_process
        from solvers.timegrid import default_t_max, time_grid

        if args.d < 1 or args.steps < 1:
            raise ValueError(f"d and steps must be >= 1, got d = {args.d}, steps = {args.steps}")
        process = get_process(args.process)
        t_max = default_t_max(process, args.d * (args.mean_var + args.class_var))
        grid = time_grid(process, args.steps, t_max, 0.0, kind="log", class_var=args.class_var)
    result = schedule_design.optimal_schedule(alpha, args.target, sampler=args.sampler, process=args.process,
                                              mean_var=args.mean_var, class_var=args.class_var,
                                              knots=schedule_design.default_knots(None, args.knots), grid=grid,
                                              t_max=t_max)
    if args.json:
        _print_json(schedule_design.record(result))
    else:
        print(schedule_design.report(result))
    return 0


def _schedules(args):
    from physics.rules import RULES
    from physics.schedules import REQUIRED, SCHEDULES

    def describe(cls):
        params = {name: dict(default=None if default is REQUIRED else default, required=default is REQUIRED,
                             description=text) for name, (default, text) in cls.PARAMETERS.items()}
        return dict(summary=cls.summary, source=cls.source or None, parameters=params,
                    space=getattr(cls, "space", None))

    record = dict(schedules={n: describe(c) for n, c in SCHEDULES.items()},
                  rules={n: describe(c) for n, c in RULES.items()})
    if args.json:
        _print_json(record)
        return 0
    for title, entries in (("schedules (--schedule NAME; weights in the excess convention, omega = w - 1)",
                            record["schedules"]), ("rules (--rule NAME)", record["rules"])):
        print(title)
        for name, info in entries.items():
            space = f" [{info['space']} space]" if info.get("space") else ""
            print(f"  {name:<11}{info['summary']}{space}")
            if info["source"]:
                print(f"  {'':<11}source: {info['source']}")
            for pname, p in info["parameters"].items():
                default = ("required" if p["required"] else "optional" if p["default"] is None
                           else f"default {p['default']:.4g}" if isinstance(p["default"], float) else f"default {p['default']}")
                print(f"  {'':<13}--{pname.replace('_', '-'):<14}{p['description']} ({default})")
    return 0


def _plot(args):
    from solvers.plots import file_kind, plot_file

    plot_file(args.file, args.kind, args.out)
    print(f"cfgphase plot: {args.kind or file_kind(args.file)} figure written to {args.out}")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        commands = {"simulate": _simulate, "gaussian": _gaussian, "theory": _theory, "phase-diagram": _phase_diagram,
                    "schedules": _schedules, "optimize-schedule": _optimize_schedule, "plot": _plot, "bench": _bench}
        return commands[args.command](args)
    except ValueError as err:
        print(f"cfgphase {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
