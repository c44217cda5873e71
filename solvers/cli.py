"""The ``cfgphase`` command line: parses, builds the API's value objects, calls the API, prints.

Every option is defined once (:data:`OPTIONS`) and each subcommand lists the ones it takes; the
contract is in the README ("Command line") and docs/architecture.md. Bad input prints one line on
stderr and exits with status 2, writing nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import sys

PROCESSES = ("flow", "ou", "ve")
SAMPLERS = ("ode", "sde")
METHODS = ("ddim", "euler", "exponential", "heun")
GRIDS = ("log", "uniform")
INITS = ("unconditional", "conditional")


def _number_list(text):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


#: Every option of every subcommand: name -> argparse keywords.
OPTIONS = {
    # model
    "d": dict(type=int, help="dimension"),
    "alpha": dict(type=float, help="K = round(exp(alpha d)) classes (default 0.12)"),
    "classes": dict(type=int, help="number of classes K"),
    "mean-var": dict(type=float, default=1.0, help="variance sigma_mu^2 of the class means (default 1)"),
    "class-var": dict(type=float, default=0.25, help="within-class variance s^2 (default 0.25)"),
    "process": dict(choices=PROCESSES, default="ou", help="forward process (default ou)"),
    "modes": dict(type=int, default=1, help="components per class: multimodal conditionals (default 1)"),
    "mode-weights": dict(type=_number_list, metavar="W1,W2,...", help="within-class mode weights (default uniform)"),
    "unconditional-var": dict(type=float, metavar="V", help="an independent unconditional model N(0, V I)"),
    "target": dict(type=int, help="target class c (default 0; with --data, a label, default the smallest)"),
    "data": dict(metavar="FILE", help="a labelled data set: .npz or HDF5 with x (N, d) and labels (N,), or "
                                      "'digits' (bundled, needs scikit-learn); each class is its points smoothed by "
                                      "N(0, s^2 I), s^2 = --class-var (0: the exact empirical score)"),
    "copy-ratio": dict(type=float, default=1 / 3, help="with --data: a sample copies a training point when it is "
                                                       "closer than RATIO times the second nearest (default 1/3)"),
    "seed": dict(type=int, default=0, help="seed of the class means and of the noise (default 0)"),
    "model-seed": dict(type=int, help="seed of the class means only (default: --seed)"),
    "noise-seed": dict(type=int, help="seed of the noise only (default: --seed)"),
    "target-norm": dict(type=float, metavar="RHO", help="condition on |mu_c|^2/d = RHO of one drawn target "
                                                        "(default: mean_var, its d -> infinity value)"),
    "draws": dict(type=int, default=4, help="draws of the means per dimension: draw j has model and noise seed "
                                             "--seed + j (default 4)"),
    # guidance
    "omega": dict(type=float, help="excess weight omega (default 1); the mean or early weight of a schedule"),
    "guidance-scale": dict(type=float, help="diffusers weight w = 1 + omega"),
    # sampler
    "sampler": dict(choices=SAMPLERS, default="ode", help="probability-flow ODE or reverse SDE (default ode)"),
    "method": dict(choices=METHODS, help="stepper (default heun for ode, exponential for sde)"),
    "steps": dict(type=int, default=200, help="number of steps (default 200)"),
    "t-max": dict(type=float, help="start time (default: data signal-to-noise 1e-4)"),
    "t-min": dict(type=float, default=0.0, help="end time (default 0)"),
    "grid": dict(choices=GRIDS, default="log", help="time grid (default log: uniform in log(t + t0))"),
    "particles": dict(type=int, default=1024, help="number of particles (default 1024)"),
    "init": dict(choices=INITS, default="unconditional", help="initial law at t_max: exact noised "
                                                               "unconditional or target-class data"),
    "dtype": dict(choices=("float64", "float32"), default="float64", help="precision of the score GEMMs"),
    "means": dict(choices=("auto", "stored", "generated"), default="auto",
                  help="class means stored, or generated chunk by chunk in the kernel (memory independent of K; "
                       "the same numbers); auto: generated when stored ones exceed half the memory (default)"),
    # output
    "json": dict(action="store_true", help="print one JSON object instead of a table"),
    "quiet": dict(action="store_true", help="no progress bar"),
    "overwrite": dict(action="store_true", help="replace the output file if it exists"),
    "resume": dict(action="store_true", help="continue an interrupted run in --out"),
    # where the work runs
    "workers": dict(type=int, help="local worker processes"),
    "scheduler": dict(metavar="ADDRESS", help="run on this Dask distributed scheduler (tcp://HOST:8786)"),
}


def _add(group, *names, **changes):
    for name in names:
        group.add_argument("--" + name, **{**OPTIONS[name], **changes.get(name.replace("-", "_"), {})})


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _classes(group, required=False, alpha_help=None):
    k = group.add_mutually_exclusive_group(required=required)
    _add(k, "alpha", "classes", **({"alpha": {"help": alpha_help}} if alpha_help else {}))


def _guidance_options(p, rules=True):
    from cfgphase.physics.rules import RULES
    from cfgphase.physics.schedules import SCHEDULES

    g = p.add_argument_group("guidance (excess convention: s_c + omega (s_c - s_u); `cfgphase schedules` lists all)")
    _add(g.add_mutually_exclusive_group(), "omega", "guidance-scale")
    g.add_argument("--schedule", choices=list(SCHEDULES), default="constant", help="omega(t) (default constant)")
    names = _registry_options(g, SCHEDULES, skip=("omega",))
    if rules:
        g = p.add_argument_group("guidance rule")
        g.add_argument("--rule", choices=list(RULES), default="cfg", help="how s_c and s_u are combined (default cfg)")
        names += _registry_options(g, RULES)
    p.set_defaults(guidance_parameters=names)


#: Schedule and rule parameters that are not plain numbers on the command line.
LIST_PARAMETERS = ("breaks", "values", "sigmas")
TEXT_PARAMETERS = ("clock", "space")


def _registry_options(group, registry, skip=()):
    """One option per parameter of the schedules (or rules) in ``registry``; help names their owners."""
    names = []
    for cls in registry.values():
        for name, (default, text) in cls.PARAMETERS.items():
            if name in skip or name in names or name == "weight":
                continue
            names.append(name)
            owners = ", ".join(c.name for c in registry.values() if name in c.PARAMETERS)
            kind = str if name in TEXT_PARAMETERS else _number_list if name in LIST_PARAMETERS else float
            shown = ("" if default is None or not isinstance(default, (int, float, str)) else
                     f" (default {default:.4g})" if isinstance(default, float) else f" (default {default})")
            group.add_argument("--" + name.replace("_", "-"), type=kind, metavar=name.upper(),
                               help=f"{owners}: {text}{shown}")
    return names


def _guidance(args):
    """The API's Guidance from the guidance options (a ValueError names a parameter that belongs to
    neither the schedule nor the rule)."""
    from cfgphase.physics.guidance import Guidance

    given = {k: getattr(args, k) for k in args.guidance_parameters if getattr(args, k) is not None}
    return Guidance(args.omega, guidance_scale=args.guidance_scale, schedule=args.schedule,
                    rule=getattr(args, "rule", "cfg"), **given)


def build_parser():
    parser = _Parser(prog="cfgphase", description="Classifier-free guidance on Gaussian mixtures with exact scores.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sim = sub.add_parser("simulate", help="guided sampling with exact scores; prints final statistics")
    g = sim.add_argument_group("model")
    _add(g, "d", d=dict(help=f"dimension (default {SIMULATE_D}; with --data, the data's)"))
    _classes(g)
    _add(g, "mean-var", "class-var", "process", "modes", "mode-weights", "unconditional-var", "target", "seed",
         "model-seed", "noise-seed", "data", "copy-ratio")
    _guidance_options(sim)
    _add(sim.add_argument_group("sampler"), "sampler", "method", "steps", "t-max", "t-min", "grid", "particles",
         "init", "dtype", "means")
    g = sim.add_argument_group("where (the particles sharded over Dask workers; the same numbers as without)")
    w = g.add_mutually_exclusive_group()
    _add(w, "workers", "scheduler", workers=dict(metavar="N", help="a Dask LocalCluster of N worker processes"))
    g = sim.add_argument_group("output")
    g.add_argument("--out", help="write observables and parameters to this HDF5 file")
    g.add_argument("--samples", action="store_true", help="also store the final particles in --out")
    _add(g, "overwrite", "json", "quiet")

    theory = sub.add_parser("theory", help="mean-field prediction for K = exp(alpha d) classes: d -> infinity, "
                                           "or at dimension --d with its finite-d corrections")
    g = theory.add_argument_group("model")
    _classes(g, alpha_help="K = exp(alpha d) (default 0.12)")
    _add(g, "d", "mean-var", "class-var", "process", "target-norm",
         d=dict(help="dimension D >= 2: the finite-d prediction (docs/theory.md section 12; a Monte-Carlo "
                     "estimate with standard errors); default: the d -> infinity limit"))
    _guidance_options(theory, rules=False)
    _add(theory.add_argument_group("sampler"), "sampler", "steps", "t-max",
         steps=dict(help="number of steps of the sampler the finite-d prediction follows (default 200)"),
         t_max=dict(help="start time (default: one direction's signal-to-noise 1e-10; with --d, the "
                         "simulator's: data signal-to-noise 1e-4)"))
    _add(theory.add_argument_group("finite d"), "particles", "seed",
         particles=dict(default=None, help="population size of the finite-d prediction (default 6000, ~5 s)"),
         seed=dict(help="seed of the finite-d population (default 0)"))
    _add(theory, "json")

    gauss = sub.add_parser("gaussian", help="exact guided dynamics of a jointly Gaussian conditional/unconditional pair")
    g = gauss.add_argument_group("model (one eigendirection)")
    g.add_argument("--lambda-c", type=float, required=True, help="conditional variance lambda_c (> 0)")
    g.add_argument("--lambda-u", type=float, required=True, help="unconditional variance lambda_u (> 0)")
    g.add_argument("--mean-gap", type=float, required=True, help="conditional minus unconditional mean")
    _add(g, "process")
    _guidance_options(gauss, rules=False)
    _add(gauss.add_argument_group("sampler"), "sampler", "t-max", "t-min", "init", "steps", "grid",
         steps=dict(help="steps of the sampler's grid, for schedules defined on its steps (default 200)"))
    _add(gauss, "json")

    opt = sub.add_parser("optimize-schedule", help="the spline schedule with the least predicted distortion at a "
                                                   "required mean ratio, beside tuned baselines")
    g = opt.add_argument_group("model")
    _classes(g, required=True, alpha_help="K = exp(alpha d)")
    _add(g, "d", "steps", "mean-var", "class-var", "process",
         d=dict(help="dimension: converts --classes into alpha, and sets the sampler's start time and grid "
                     "(TV-CFG, step-down baselines) as cfgphase simulate would"),
         steps=dict(default=None, help=f"sampler steps on the log grid, with --d (default {OPTIMIZE_STEPS})"))
    g = opt.add_argument_group("objective")
    g.add_argument("--target", type=float, required=True, help="required mean ratio E[x.mu_c]/|mu_c|^2 (> 1)")
    _add(g, "sampler")
    g.add_argument("--knots", type=int, default=6, help="spline knots, log-spaced in noise level 0.05-20 (default 6)")
    _add(opt, "json")

    sched = sub.add_parser("schedules", help="list every guidance schedule and rule with its parameters and source")
    _add(sched, "json")

    pd = sub.add_parser("phase-diagram", help="theory on an (alpha, omega, ...) grid plus simulations; one HDF5 file")
    pd.add_argument("--config", help="TOML file describing the sweep (data/README.md); excludes the grid options")
    g = pd.add_argument_group("grid (RANGE is START:STOP:NUM or a comma list)")
    g.add_argument("--schedule", choices=["constant", "linear", "switch"], help="guidance schedule (default constant)")
    for name, text in (("alpha", "log(K)/d"), ("omega", "excess weight (constant, switch)"),
                       ("w0", "linear: omega at t = 0"), ("slope", "linear: d omega / dt"),
                       ("t-switch", "switch: forward time of the switch"), ("after", "switch: weight after (-1)")):
        g.add_argument(f"--{name}", metavar="RANGE", help=text)
    g.add_argument("--sampler", metavar="LIST", help="ode and/or sde, comma separated (default ode)")
    _add(g, "mean-var", "class-var", "process", mean_var=dict(default=None, help="sigma_mu^2 (default 1)"),
         class_var=dict(default=None, help="s^2 (default 0.25)"), process=dict(default=None))
    g = pd.add_argument_group("simulations (only with --sim-d)")
    g.add_argument("--sim-alpha", metavar="RANGE", help="alphas to simulate (default: the grid's)")
    g.add_argument("--sim-omega", metavar="RANGE", help="omegas to simulate (default: the grid's)")
    g.add_argument("--sim-d", metavar="LIST", help="dimensions, comma separated")
    g.add_argument("--seeds", type=int, help="replicate seeds per point (default 1)")
    _add(g, "particles", "steps", particles=dict(default=None, help="particles per simulation (default 512)"),
         steps=dict(default=None, help="steps per simulation (default 100)"))
    g = pd.add_argument_group("run")
    g.add_argument("--out", required=True, help="HDF5 file to write (.h5)")
    _add(g, "resume", "overwrite", "workers", "scheduler", "quiet",
         resume=dict(help="continue an interrupted sweep in --out"),
         workers=dict(help="local worker processes (default: usable cores)"))

    fss = sub.add_parser("fss", help="finite-size scaling: one (alpha, omega, sampler) point simulated over a list "
                                     "of d and draws of the means; one HDF5 file the theory comparison reads")
    g = fss.add_argument_group("model")
    _classes(g, required=True, alpha_help="K = round(exp(alpha d)) at each d")
    _add(g, "d", "draws", "seed", "mean-var", "class-var", "process",
         d=dict(nargs="+", required=True, metavar="D", help="dimensions, e.g. --d 16 24 32"),
         seed=dict(help="seed of the first draw (default 0)"))
    _add(fss.add_argument_group("guidance"), "omega")
    _add(fss.add_argument_group("sampler"), "sampler", "steps", "particles", "means")
    g = fss.add_argument_group("run")
    g.add_argument("--out", required=True, help="HDF5 file to write (.h5)")
    _add(g, "resume", "overwrite", "json", "quiet")
    w = g.add_mutually_exclusive_group()
    _add(w, "workers", "scheduler", workers=dict(metavar="N", help="shard each run's particles over a Dask "
                                                                    "LocalCluster of N worker processes"))

    from cfgphase.solvers.figures.plots import KINDS

    plot = sub.add_parser("plot", help="draw a figure from a cfgphase HDF5 file")
    plot.add_argument("file", help="HDF5 file written by cfgphase")
    plot.add_argument("--kind", choices=KINDS, help="figure to draw (default: the one the file holds)")
    plot.add_argument("--out", required=True, help="figure file (.pdf, .png or .svg)")
    _add(plot, "overwrite")
    return parser


# --- checks shared by the commands (the API's value objects check the rest) -------------------------

#: Steps of the grid of ``optimize-schedule --d`` (default) and their bound: every step of a
#: step-indexed baseline is a segment of the theory's integration.
OPTIMIZE_STEPS = 200
MAX_OPTIMIZE_STEPS = 100_000


def _alpha(args, default=None):
    """alpha from --alpha, or log(K)/d from --classes and --d."""
    if args.classes is None:
        return default if args.alpha is None else args.alpha
    if args.classes < 1:
        raise ValueError(f"classes (K) must be an integer >= 1, got {args.classes}")
    if args.d is None or args.d < 1:
        raise ValueError(f"--d: --classes needs --d >= 1 to give alpha = log(K)/d, got {args.d}")
    return math.log(args.classes) / args.d


def _seeds(args):
    """(model seed, noise seed) from --seed, --model-seed and --noise-seed, each checked by name."""
    from cfgphase.solvers.sampling.brownian import check_seed

    seed = check_seed(args.seed, "seed")
    return tuple(seed if getattr(args, name) is None else check_seed(getattr(args, name), name)
                 for name in ("model_seed", "noise_seed"))


def _check_times(process, args):
    """--t-max (and --t-min, where the command has it) inside the process's time range, t_max > t_min."""
    t_min = getattr(args, "t_min", 0.0)
    if args.t_max is not None:
        process.check_span(args.t_max, t_min)
    else:
        process.check_times(t_min, "t_min")


def _check_where(args):
    """--workers (an integer >= 1) and --scheduler (an address), before any work."""
    if args.workers is not None:
        from cfgphase.solvers.sweeps.runner import check_workers

        check_workers(args.workers)
    if args.scheduler is not None:
        _check_scheduler(args.scheduler)


def _where(args):
    """The keyword arguments that shard a run over Dask workers (none: the run stays in this process)."""
    return {k: v for k, v in (("workers", args.workers), ("scheduler", args.scheduler)) if v is not None}


def _check_scheduler(address):
    """A Dask scheduler address of the form [tcp://]HOST:PORT (connecting is the run's work)."""
    try:
        from distributed.comm.addressing import get_address_host_port
    except ImportError:
        raise ValueError("--scheduler: dask.distributed is not installed (pip install 'cfgphase[dask]')") from None
    try:
        get_address_host_port(address)
    except ValueError as err:
        raise ValueError(f"--scheduler: expected an address such as tcp://HOST:8786, got {address!r} ({err})") from None


# --- printing -----------------------------------------------------------------------------------


def _fmt(value, stderr=None):
    if value is None:
        return "n/a"
    text = f"{value:.4g}"
    return text if stderr is None else f"{text} +- {stderr:.2g}"


def _print_json(record):
    print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}))


def _table(record, rows, width=24):
    from cfgphase.physics.statistics import describe

    print(f"  {'statistic':<18}{'value':<{width}}{'conditional':<13}meaning")
    for key, target in rows:
        value = _fmt(record.get(key), record.get(key + "_stderr"))
        print(f"  {key:<18}{value:<{width}}{_fmt(target):<13}{describe(key)[0]}")


def _weight_label(record):
    return f"omega={_fmt(record['omega'])}" if record["omega"] is not None else f"schedule={record['schedule']}"


def _exit_status(ok, message, what):
    if not ok:
        print(f"cfgphase: {what} failed: {message}", file=sys.stderr)
        return 1
    return 0


# --- commands -----------------------------------------------------------------------------------


#: Dimension of ``cfgphase simulate`` without --d or --data.
SIMULATE_D = 64

#: Options that describe random classes: refused with --data.
RANDOM_MODEL_OPTIONS = ("alpha", "classes", "modes", "mode_weights", "unconditional_var", "model_seed")


def _data_model(args):
    """Model.from_data from --data, --class-var, --target and --process (one checked error per option)."""
    from cfgphase.physics.model import Model
    from cfgphase.solvers.io.data import load_data

    given = [name for name in RANDOM_MODEL_OPTIONS if getattr(args, name) not in (None, 1)]
    if given:
        raise ValueError(f"--{given[0].replace('_', '-')}: describes random classes; --data gives the classes")
    x, labels = load_data(args.data)
    model = Model.from_data(x, labels, width=args.class_var, target=args.target, process=args.process)
    if args.d is not None and args.d != model.d:
        raise ValueError(f"--d: {args.d} differs from the data's dimension {model.d}")
    return model


def _simulate(args):
    from cfgphase.physics.model import Model
    from cfgphase.solvers.sampling.sampler import SaveAt, Sampler

    if args.out is not None:  # h5py, Dask: imported when asked for (a small run starts in ~0.3 s)
        from cfgphase.solvers.io.hdf5 import check_output_path

        check_output_path(args.out, args.overwrite)
    _check_where(args)
    if args.workers is None and args.scheduler is None:
        from cfgphase.solvers.sampling.driver import simulate
    else:
        from cfgphase.solvers.sweeps.shards import simulate
    model_seed, noise_seed = _seeds(args)
    if args.data is not None:
        model = _data_model(args)
    else:
        model = Model(d=SIMULATE_D if args.d is None else args.d, alpha=args.alpha, classes=args.classes,
                      mean_var=args.mean_var, class_var=args.class_var, process=args.process,
                      target=0 if args.target is None else args.target,
                      modes=args.modes, mode_weights=args.mode_weights, unconditional=args.unconditional_var,
                      seed=model_seed)
    sampler = Sampler(kind=args.sampler, method=args.method, steps=args.steps, t_max=args.t_max, t_min=args.t_min,
                      grid=args.grid, init=args.init)
    _check_times(model.process, args)
    guidance = _guidance(args)
    result = simulate(model, guidance, sampler=sampler, particles=args.particles, seed=noise_seed, dtype=args.dtype,
                      save=SaveAt(samples=args.samples, copy_ratio=args.copy_ratio),
                      progress=not args.quiet and sys.stderr.isatty(), means=args.means,
                      **_where(args))
    if args.out is not None:
        from cfgphase.solvers.io.hdf5 import save

        save(result, args.out, overwrite=args.overwrite)
    summary = result.summary()
    if args.json:
        _print_json(summary)
    else:
        print(f"cfgphase simulate: d={summary['d']} K={summary['K']} {_weight_label(summary)} "
              f"process={summary['process']} sampler={summary['sampler']} ({summary['method']}, "
              f"{summary['steps']} steps) particles={summary['particles']} means={summary['means']}")
        if model.data_labels is None:
            s2 = summary["class_var"]
            _table(summary, (("mean_ratio", 1.0), ("var_par", s2), ("var_perp", s2), ("distortion", 0.0),
                             ("accuracy", None), ("inv_prob", None), ("t_condensation", None)))
        else:
            _table(summary, (("mean_ratio", 1.0), ("var_par", summary["var_par_class"]),
                             ("var_perp", summary["var_perp_class"]), ("var_ratio", 1.0), ("copy_fraction", None),
                             ("coverage", None), ("nearest_in_target", 1.0), ("accuracy", None), ("inv_prob", None)))
        print(f"  {summary['n_score_evals']} score evaluations in {summary['wall_time']:.1f} s")
        if args.out is not None:
            print(f"  written to {args.out}")
    return _exit_status(result.status == 0, result.message, "simulation")


def _theory(args):
    from cfgphase.physics.processes import get_process
    from cfgphase.solvers.sampling.sampler import Sampler

    _check_times(get_process(args.process), args)
    if args.d is None:
        from cfgphase.solvers.theory.meanfield import guided_prediction

        if args.particles is not None:
            raise ValueError("--particles: only the finite-d prediction (--d) is a Monte-Carlo estimate")
        pred = guided_prediction(_alpha(args, default=0.12), _guidance(args).weight, process=args.process,
                                 sampler=args.sampler, mean_var=args.mean_var, class_var=args.class_var,
                                 t_max=args.t_max, target_norm=args.target_norm)
    else:
        from cfgphase.solvers.theory.finite_d import check_dimension, finite_d_prediction

        d = check_dimension(args.d)
        options = {} if args.particles is None else dict(particles=args.particles)
        alpha = None if args.classes is not None else 0.12 if args.alpha is None else args.alpha
        pred = finite_d_prediction(d, _guidance(args).weight, alpha=alpha, classes=args.classes,
                                   sampler=Sampler(kind=args.sampler, steps=args.steps, t_max=args.t_max),
                                   process=args.process, mean_var=args.mean_var, class_var=args.class_var,
                                   target_norm=args.target_norm, seed=args.seed, **options)
    record = pred.summary()
    if args.json:
        _print_json(record)
    else:
        limit = "d -> infinity" if args.d is None else f"d = {args.d}, K = {record['K']}"
        print(f"cfgphase theory ({limit}): alpha={record['alpha']:.4g} {_weight_label(record)} "
              f"process={args.process} sampler={args.sampler}")
        _table(record, (("mean_ratio", 1.0), ("var_par", args.class_var), ("var_perp", args.class_var),
                        ("distortion", 0.0), ("t_condensation", None)), width=14 if args.d is None else 24)
    return _exit_status(pred.success, pred.message, "integration")


def _gaussian(args):
    from cfgphase.physics.model import GaussianModel
    from cfgphase.solvers.sampling.sampler import Sampler
    from cfgphase.solvers.theory.gaussian import gaussian

    model = GaussianModel(var_c=args.lambda_c, var_u=args.lambda_u, mean_c=args.mean_gap, mean_u=0.0,
                          process=args.process)
    sampler = Sampler(kind=args.sampler, steps=args.steps, t_max=args.t_max, t_min=args.t_min, grid=args.grid,
                      init=args.init)
    _check_times(model.process, args)
    pred = gaussian(model, _guidance(args), sampler=sampler)
    record = pred.summary()
    record.update(lambda_c=args.lambda_c, lambda_u=args.lambda_u, mean_gap=args.mean_gap)
    if args.json:
        _print_json(record)
    else:
        print(f"cfgphase gaussian: lambda_c={args.lambda_c} lambda_u={args.lambda_u} mean_gap={args.mean_gap} "
              f"{_weight_label(record)} process={args.process} sampler={args.sampler} t_max={record['t_max']:.4g}")
        print(f"  {'':<10}{'guided':<14}conditional")
        print(f"  {'mean':<10}{record['mean']:<14.6g}{record['mean_conditional']:.6g}")
        print(f"  {'var':<10}{record['var']:<14.6g}{record['var_conditional']:.6g}")
        print(f"  KL(guided || conditional) = {record['distortion']:.6g}")
    return _exit_status(pred.success, pred.message, "integration")


def _phase_diagram(args):
    from cfgphase.solvers.io.hdf5 import check_output_path
    from cfgphase.solvers.sweeps.runner import phase_diagram
    from cfgphase.solvers.sweeps.spec import GRID_OPTIONS, config_from_options

    given = {k: v for k in GRID_OPTIONS if (v := getattr(args, k.replace("-", "_"))) is not None}
    if args.config is not None and given:
        raise ValueError(f"--config: give a TOML file or grid options, not both (got --{sorted(given)[0]})")
    if args.config is None and not given and not args.resume:
        raise ValueError("--config: give a TOML file, grid options, or --resume")
    check_output_path(args.out, overwrite=True)  # the name itself; the runner refuses to replace a file
    _check_where(args)
    config = args.config if args.config is not None else config_from_options(given) if given else None
    result = phase_diagram(config, args.out, resume=args.resume, overwrite=args.overwrite, workers=args.workers,
                           scheduler=args.scheduler, progress=not args.quiet and sys.stderr.isatty())
    print(f"cfgphase phase-diagram: {result.points_done} points done, {result.points_failed} failed, "
          f"{result.computed} of {result.units} units computed in {result.wall_time:.1f} s; "
          f"written to {result.path}")
    return 0


def _fss(args):
    from cfgphase.solvers.sweeps.fss import finite_size_scaling

    _check_where(args)
    result = finite_size_scaling(args.out, alpha=args.alpha, classes=args.classes,
                                 omega=1.0 if args.omega is None else args.omega, sampler=args.sampler, d=args.d,
                                 draws=args.draws, seed=args.seed, particles=args.particles, steps=args.steps,
                                 mean_var=args.mean_var, class_var=args.class_var, process=args.process,
                                 means=args.means, workers=args.workers, scheduler=args.scheduler, resume=args.resume,
                                 overwrite=args.overwrite, progress=not args.quiet and sys.stderr.isatty())
    if args.json:
        _print_json(result.summary())
    else:
        print(f"cfgphase fss: {result.runs} runs, {result.computed} computed, {result.failed} failed in "
              f"{result.wall_time:.1f} s; written to {result.path}")
    return 0


def _optimize_schedule(args):
    from cfgphase.physics.processes import get_process
    from cfgphase.solvers.design import optimal
    from cfgphase.solvers.sampling.timegrid import default_t_max, time_grid

    alpha = _alpha(args)
    if not 2 <= args.knots <= 32:
        raise ValueError(f"knots must be an integer in [2, 32], got {args.knots}")
    for name in ("mean_var", "class_var"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {getattr(args, name)!r}")
    if args.steps is not None and args.d is None:
        raise ValueError("steps: --steps sets the sampler's grid at --d; give --d too")
    grid = t_max = None
    if args.d is not None:  # the sampler cfgphase simulate would use at this d: its start and its steps
        steps = OPTIMIZE_STEPS if args.steps is None else args.steps
        if args.d < 1:
            raise ValueError(f"d must be an integer >= 1, got {args.d}")
        if not 1 <= steps <= MAX_OPTIMIZE_STEPS:
            raise ValueError(f"steps must be an integer in [1, {MAX_OPTIMIZE_STEPS}], got {steps}")
        process = get_process(args.process)
        t_max = default_t_max(process, args.d * (args.mean_var + args.class_var))
        grid = time_grid(process, steps, t_max, 0.0, kind="log", class_var=args.class_var)
    result = optimal.optimal_schedule(alpha, args.target, sampler=args.sampler, process=args.process,
                                      mean_var=args.mean_var, class_var=args.class_var,
                                      knots=optimal.default_knots(None, args.knots), grid=grid, t_max=t_max)
    print(json.dumps(optimal.record(result)) if args.json else optimal.report(result))
    return 0


def _schedules(args):
    from cfgphase.physics.rules import RULES
    from cfgphase.physics.schedules import REQUIRED, SCHEDULES

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
                           else f"default {p['default']:.4g}" if isinstance(p["default"], float)
                           else f"default {p['default']}")
                print(f"  {'':<13}--{pname.replace('_', '-'):<14}{p['description']} ({default})")
    return 0


def _plot(args):
    from cfgphase.solvers.figures.plots import file_kind, plot

    plot(args.file, kind=args.kind, out=args.out, overwrite=args.overwrite)
    print(f"cfgphase plot: {args.kind or file_kind(args.file)} figure written to {args.out}")
    return 0


COMMANDS = {"simulate": _simulate, "gaussian": _gaussian, "theory": _theory, "phase-diagram": _phase_diagram,
            "fss": _fss, "schedules": _schedules, "optimize-schedule": _optimize_schedule, "plot": _plot}


#: glibc's mallopt parameters, and the values :func:`run` gives them: blocks below MMAP_THRESHOLD come from the heap,
#: which keeps up to TRIM_THRESHOLD of freed memory at its top instead of handing it back to the system.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
ALLOCATOR = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 256 * 2**20}


def keep_freed_memory():
    """Let glibc's allocator keep freed memory for the process's next arrays (:data:`ALLOCATOR`); True if it took.

    A step of the samplers makes a dozen fresh (B, d) arrays, 512 KiB each at B = 1024, d = 64. With glibc's
    defaults, blocks of that size are freed back to the system (mapped and unmapped, or trimmed from the heap's top
    once 1 MiB is free there) and faulted in again by the next step: 108,000 page faults in a default
    ``cfgphase simulate``, 25,000 with these thresholds, peak memory unchanged (README "Start-up"). The thresholds
    belong to the process, so only the program sets them (:func:`run`), never the library; nothing is changed when
    the C library is not glibc or the user has set either (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
    ``GLIBC_TUNABLES``).
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (platform.libc_ver()[0] != "glibc" or "MALLOC_MMAP_THRESHOLD_" in os.environ
            or "MALLOC_TRIM_THRESHOLD_" in os.environ or "mmap_threshold" in tunables or "trim_threshold" in tunables):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    return all([mallopt(parameter, value) == 1 for parameter, value in ALLOCATOR.items()])


def run():
    """The ``cfgphase`` program (and ``python -m cfgphase``): :func:`main` on the command line's arguments, in a
    process whose allocator keeps freed memory (:func:`keep_freed_memory`)."""
    keep_freed_memory()
    sys.exit(main())


def main(argv=None):
    """Run one command; returns the exit status: 0 done, 1 the work or a write failed, 2 bad input
    (nothing written), 130 / 143 interrupted by SIGINT / SIGTERM (what finished is saved)."""
    from cfgphase.solvers.sweeps.signals import Interrupted

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ValueError as err:
        print(f"cfgphase {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"cfgphase {args.command}: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except BrokenPipeError:  # the reader went away (cfgphase ... | head): nothing left to say
        sys.stderr.close()
        return 0
    except OSError as err:  # a failed write: the previous file, if any, is untouched
        print(f"cfgphase {args.command}: error: {err}", file=sys.stderr)
        return 1
