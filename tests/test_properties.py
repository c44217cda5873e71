"""Property-based tests: any inputs give a finite or marked result, or one ValueError.

Model, guidance and sampler parameters are drawn over ranges that include invalid and extreme
values (d <= 0, K <= 0, negative, zero, NaN and infinite variances, omega from below -1 through
1e50, unknown names, out-of-range times, steps and particles, foreign parameters of a schedule or
rule). Every call must either

- return a result whose final statistics are finite, or None where a statistic is not defined,
  or that is marked as failed (a simulation's ``status != 0``, a theory's ``success=False``) with a
  message; or
- raise exactly one ValueError with a non-empty message;

never another exception, never a RuntimeWarning (turned into an error here) and never a hang
(each call runs under an alarm of ``LIMIT`` seconds; hypothesis's deadline reports slow ones).
Sizes are tiny (d <= 8, K <= 16, particles <= 32, steps <= 8). ``derandomize=True`` makes the
examples the same on every run; explicit ``@example``s pin the extreme weights.
"""

import math
import signal
import warnings
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import cfgphase as cp
from cfgphase.physics.rules import RULES
from cfgphase.physics.schedules import REQUIRED, SCHEDULES
from cfgphase.solvers.theory.meanfield import guided_prediction

#: Seconds one call may take before it counts as a hang (tiny sizes take milliseconds to a second).
LIMIT = 60
#: No shrinking: a failure is reported as found (shrinking a slow theory call would take minutes).
SETTINGS = settings(max_examples=40, deadline=timedelta(seconds=20), derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NAN, INF = math.nan, math.inf


def mostly(valid, invalid, odds=30):
    """``valid`` values, and one draw in about ``odds + 1`` from ``invalid`` (so that most examples get past
    validation and run, while every parameter is sometimes wrong). The first valid value is the one
    hypothesis treats as simplest."""
    as_strategy = (lambda v: v if isinstance(v, st.SearchStrategy) else st.sampled_from(v))
    valid, invalid = as_strategy(valid), as_strategy(invalid)
    # hypothesis favours the ends of a range: the invalid branch sits in its middle
    return st.integers(0, odds).flatmap(lambda i: invalid if i == odds // 2 else valid)


#: Excess weights: the conventions' landmarks, extremes (1e3 .. 1e50) and, sometimes, invalid ones.
WEIGHTS = mostly(st.one_of(st.sampled_from([1.0, -1.0, -0.5, 0.0, 3.0, 1e3, 1e6, 1e20, 1e50]), st.floats(-1.0, 10.0)),
                 [-1e6, -2.0, -1.0 - 1e-6, NAN, INF])
VARIANCES = mostly([1.0, 1e-8, 0.1, 0.25, 4.0, 1e6], [-1.0, 0.0, NAN, INF])
T_MAX = mostly([None, None, 0.3, 1.0, 3.0, 50.0, 1e6], [-1.0, 0.0, NAN, INF])
T_MIN = mostly([0.0, 0.0, 1e-3, 0.5], [-1.0, NAN, INF])
PROCESSES = mostly(["ou", "ve", "flow"], ["vp"])
KINDS = mostly(["ode", "sde"], ["xde"])
#: Values of every schedule and rule parameter, valid and not.
PARAMETERS = {
    "sigma_lo": mostly([0.0, 0.1, 0.5, 2.0], [-1.0, NAN]),
    "sigma_hi": mostly([0.3, 1.6, 10.0, INF], [0.05, NAN]),
    "t_lo": mostly([0.0, 0.2, 0.6], [-1.0, 2.0]),
    "t_hi": mostly([0.5, 1.0, 5.0, INF], [0.1]),
    "w0": WEIGHTS,
    "slope": mostly([0.05, 0.5, 5.0, 1e6], [-1.0, 0.0, NAN]),
    "floor": mostly([-1.0, 0.0], [-2.0]),
    "clock": mostly(["noise", "time"], ["steps"]),
    "t_switch": mostly([0.3, 1.0, 5.0], [-1.0, 0.0, INF]),
    "fraction": mostly([0.3, 0.7], [0.0, 1.5]),
    "after": mostly([-1.0, 0.0, 1.0, 1e6], [-2.0]),
    "breaks": mostly(st.lists(st.sampled_from([0.1, 0.5, 1.0, 2.0]), max_size=3, unique=True).map(sorted),
                     st.lists(st.sampled_from([-1.0, 0.5, NAN]), min_size=1, max_size=2)),
    "values": st.lists(WEIGHTS, min_size=1, max_size=4),
    "sigmas": mostly(st.lists(st.sampled_from([0.05, 0.5, 1.0, 5.0, 20.0]), min_size=2, max_size=4,
                              unique=True).map(sorted), st.lists(st.sampled_from([-1.0, 0.5]), max_size=3)),
    "a_max": mostly([0.5, 1.0, 1.5], [-1.0, 0.0, 2.0, NAN]),
    "offset": mostly([0.0, 1e-3, 0.1], [-1.0, INF]),
    "beta": mostly([-0.75, 0.0, 0.5], [NAN, INF]),
    "norm_cap": mostly([0.0, 2.5, 1e6], [-1.0]),
    "eta": mostly([0.0, 0.5, 1.0], [INF]),
    "lam": mostly([0.0, 0.6, 1.0], [-0.5, 2.0]),
    "phi": mostly([0.0, 0.7, 1.0], [-0.1, 1.5]),
    "space": mostly(["v", "eps", "x0"], ["score", "w"]),
    "power": mostly([0.0, 0.9, 3.0], [-1.0, INF]),
}


#: Schedules whose window or switch is given one of two ways (exactly one).
ALTERNATIVES = {"interval": (("sigma_lo", "sigma_hi"), ("t_lo", "t_hi")), "switch": (("t_switch",), ("fraction",))}


@st.composite
def guidances(draw, schedules=tuple(SCHEDULES), rules=tuple(RULES)):
    """Keyword arguments of cp.Guidance: a schedule and a rule by name (sometimes unknown), their
    parameters, a weight in either convention where the schedule takes one, and sometimes a
    parameter that belongs to neither."""
    schedule = draw(mostly(list(schedules), ["cosine"], odds=40))
    rule = draw(mostly(list(rules), ["bogus"], odds=40))
    names = []
    for cls in (SCHEDULES.get(schedule), RULES.get(rule)):
        if cls is None:
            continue
        chosen = draw(st.sampled_from(ALTERNATIVES[cls.name])) if cls.name in ALTERNATIVES else ()
        for name, (default, _) in cls.PARAMETERS.items():
            if name == "omega" or any(name in group for group in ALTERNATIVES.get(cls.name, ())) and \
                    name not in chosen:
                continue
            if default is REQUIRED or name in chosen or draw(st.booleans()):
                names.append(name)
    if draw(st.integers(0, 15)) == 15:
        names.append(draw(st.sampled_from(sorted(PARAMETERS))))
    kwargs = {n: draw(PARAMETERS[n]) for n in names}
    for knots in ("breaks", "sigmas"):  # mostly one value per interval (piecewise) or per knot (spline)
        if knots in kwargs and "values" in kwargs and draw(st.integers(0, 10)) < 10:
            size = len(kwargs[knots]) + (knots == "breaks")
            kwargs["values"] = draw(st.lists(WEIGHTS, min_size=size, max_size=size))
    takes_weight = schedule in SCHEDULES and "omega" in SCHEDULES[schedule].PARAMETERS and \
        (rule not in RULES or RULES[rule].uses_weight)
    convention = draw(mostly(["omega", "guidance_scale", None] if takes_weight else [None], ["omega"], odds=30))
    if convention is not None:
        weight = draw(WEIGHTS)
        kwargs[convention] = weight if convention == "omega" else weight + 1.0
    return dict(schedule=schedule, rule=rule, **kwargs)


@st.composite
def models(draw):
    """Keyword arguments of cp.Model: K given as classes or as alpha (sometimes both, or neither)."""
    kwargs = draw(st.fixed_dictionaries({
        "d": mostly(st.integers(1, 8), [-1, 0]),
        "mean_var": VARIANCES,
        "class_var": mostly([0.25, 0.0, 1e-6, 0.1, 1.0, 1e3], [-1.0, NAN, INF]),
        "process": PROCESSES,
        "target": mostly([0], [-1, 1, 3]),
        "seed": mostly(st.integers(0, 3), [-1]),
    }, optional={"modes": mostly(st.integers(1, 3), [0]), "unconditional": VARIANCES}))
    for key in draw(mostly([("classes",), ("alpha",)], [(), ("classes", "alpha")])):
        kwargs[key] = draw(mostly(st.integers(1, 16), [-1, 0]) if key == "classes" else
                           mostly([0.1, 0.0, 0.3], [-0.1, 50.0, NAN]))
    return kwargs


#: The schedules the theories integrate in forward time (the others are defined on a sampler's steps).
TIME_SCHEDULES = ("constant", "interval", "linear", "switch", "piecewise", "spline")


SIMULATIONS = st.fixed_dictionaries({
    "model": models(),
    "guidance": guidances(),
    "sampler": st.fixed_dictionaries({
        "kind": KINDS,
        "method": mostly([None], ["heun", "euler", "ddim", "exponential", "rk4"], odds=4),
        "steps": mostly(st.integers(1, 8), [-1, 0]),
        "t_max": T_MAX,
        "t_min": T_MIN,
        "grid": mostly(["log", "uniform"], ["cosine"]),
        "init": mostly(["unconditional", "conditional"], ["target"]),
    }),
    "particles": mostly(st.sampled_from([32, 8, 2, 16, 3]), [-1, 0, 1]),
    "seed": mostly(st.integers(0, 3), [-1]),
    "dtype": mostly(["float64", "float32"], ["float16"]),
})

THEORIES = st.fixed_dictionaries({
    "alpha": mostly(st.one_of(st.sampled_from([0.0, 1e-6, 0.12, 1.0, 5.0]), st.floats(0.0, 0.6)), [-0.1, NAN, INF]),
    "guidance": guidances(TIME_SCHEDULES, rules=("cfg",)),
    "process": PROCESSES,
    "sampler": KINDS,
    "mean_var": VARIANCES,
    "class_var": VARIANCES,
    "t_max": T_MAX,
    "target_norm": mostly([None, None, 0.5, 1.0, 2.0], [-1.0, 0.0, NAN]),
    "api": st.sampled_from(["predict", "guided_prediction"]),
})

GAUSSIANS = st.fixed_dictionaries({
    "model": st.fixed_dictionaries({
        "var_c": VARIANCES, "var_u": VARIANCES,
        "mean_c": mostly([-1e6, -1.0, 0.0, 1.0, 3.0], [NAN, INF]),
        "mean_u": mostly([0.0, 0.5], [NAN]),
        "process": PROCESSES,
    }, optional={"d": mostly(st.integers(1, 4), [-1, 0])}),
    "guidance": guidances(TIME_SCHEDULES, rules=("cfg",)),
    "sampler": st.fixed_dictionaries({
        "kind": KINDS,
        "steps": mostly(st.integers(1, 8), [-1, 0]),
        "t_max": T_MAX,
        "t_min": T_MIN,
        "grid": mostly(["log", "uniform"], ["cosine"]),
        "init": mostly(["unconditional", "conditional"], ["target"]),
    }),
})


@contextmanager
def _strict(limit=LIMIT):
    """RuntimeWarnings as errors, and a TimeoutError after ``limit`` seconds (a hang)."""
    def alarm(signum, frame):
        raise TimeoutError(f"no answer within {limit} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _outcome(call):
    """(result, its summary) of ``call()``, or (None, None) when it raised a ValueError with a
    message; any other exception (TimeoutError: a hang; RuntimeWarning: a numerical accident) fails
    the test. The summary is computed under the same rules (it derives statistics, e.g. the KL)."""
    try:
        with _strict():
            result = call()
            return result, result.summary()
    except ValueError as err:
        assert str(err).strip(), f"a ValueError without a message: {err!r}"
        return None, None


def _finite_or_none(record, keys):
    bad = {k: record[k] for k in keys if record.get(k) is not None and not np.all(np.isfinite(record[k]))}
    assert not bad, f"non-finite statistics in a result marked as successful: {bad}"


def _simulate(p):
    model = cp.Model(**p["model"])
    guidance = cp.Guidance(**p["guidance"])
    sampler = cp.Sampler(**p["sampler"])
    return cp.simulate(model, guidance, sampler=sampler, particles=p["particles"], seed=p["seed"], dtype=p["dtype"],
                       threads=1)


def _sim_case(omega, kind, method=None):
    return {"model": {"d": 8, "classes": 12, "mean_var": 1.0, "class_var": 0.25, "process": "ou", "target": 0,
                      "seed": 0},
            "guidance": {"schedule": "constant", "rule": "cfg", "omega": omega},
            "sampler": {"kind": kind, "method": method, "steps": 8, "t_max": None, "t_min": 0.0, "grid": "log",
                        "init": "unconditional"},
            "particles": 32, "seed": 0, "dtype": "float64"}


@SETTINGS
@given(SIMULATIONS)
@example(_sim_case(1e20, "ode"))  # used to divide by zero inside the kernel
@example(_sim_case(1e50, "sde"))
@example(_sim_case(1e6, "ode"))
@example(_sim_case(-1.0, "sde"))
@example(dict(_sim_case(1.0, "ode"), particles=2))  # the smallest sample: one particle per jackknife group
def test_simulate_gives_a_finite_or_marked_result_or_one_value_error(p):
    res, record = _outcome(lambda: _simulate(p))
    if res is None:
        return
    if res.status == 0:
        # E[1/p(c|x)] alone may be infinite in a sound run (a sample deep in another class); it is
        # then listed in non_finite; anything else non-finite must have failed the run
        heavy = [k for k in res.final if k.startswith("inv_prob")]
        assert set(res.non_finite) <= set(heavy), res.non_finite
        _finite_or_none(res.final, [k for k in res.final if k not in res.non_finite])
        _finite_or_none(record, [k for k in res.final if k not in res.non_finite])
    else:
        assert res.message and res.message != "ok", res.message


def _theory_case(omega, sampler, **changes):
    return dict({"alpha": 0.12, "guidance": {"schedule": "constant", "rule": "cfg", "omega": omega}, "process": "ou",
                 "sampler": sampler, "mean_var": 1.0, "class_var": 0.25, "t_max": None, "target_norm": None,
                 "api": "guided_prediction"},
                **changes)


THEORY_STATISTICS = ("mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "t_condensation")


def _predict(p):
    guidance = cp.Guidance(**p["guidance"])
    if p["api"] == "predict":  # through the value objects (K = e^{alpha d} at d = 8 must fit in memory)
        model = cp.Model(d=8, alpha=p["alpha"], mean_var=p["mean_var"], class_var=p["class_var"],
                         process=p["process"])
        return cp.predict(model, guidance, sampler=p["sampler"], t_max=p["t_max"], target_norm=p["target_norm"])
    return guided_prediction(p["alpha"], guidance.weight, process=p["process"], sampler=p["sampler"],
                             mean_var=p["mean_var"], class_var=p["class_var"], t_max=p["t_max"],
                             target_norm=p["target_norm"])


def _check_solution(solve, statistics):
    """A solver's outcome: one ValueError (``_outcome``), or a result whose ``statistics`` are finite or
    None when it reports success, and that says why when it does not."""
    pred, record = _outcome(solve)
    if pred is None:
        return
    if pred.success:
        _finite_or_none(record, statistics)
    else:
        assert pred.message and pred.message != "ok", pred.message


@SETTINGS
@given(THEORIES)
@example(_theory_case(1e6, "ode"))  # used to stall in the moment equations
@example(_theory_case(1e6, "sde"))
@example(_theory_case(1e12, "ode"))
@example(_theory_case(1e50, "sde"))
@example(_theory_case(-1.0, "ode"))
@example(_theory_case(1.0, "ode", alpha=0.0))
def test_theory_gives_a_finite_or_marked_result_or_one_value_error(p):
    _check_solution(lambda: _predict(p), THEORY_STATISTICS)


def _gaussian(p):
    model = cp.GaussianModel(**p["model"])
    return cp.gaussian(model, cp.Guidance(**p["guidance"]), sampler=cp.Sampler(**p["sampler"]))


def _gaussian_case(omega, kind):
    return {"model": {"var_c": 0.25, "var_u": 1.0, "mean_c": 1.0, "mean_u": 0.0, "process": "ou"},
            "guidance": {"schedule": "constant", "rule": "cfg", "omega": omega},
            "sampler": {"kind": kind, "steps": 8, "t_max": None, "t_min": 0.0, "grid": "log",
                        "init": "unconditional"}}


GAUSSIAN_STATISTICS = ("mean", "var", "mean_ratio", "var_par", "var_perp", "distortion")


@SETTINGS
@given(GAUSSIANS)
@example(_gaussian_case(1e3, "ode"))  # the guided variance underflows to 0: KL = inf
@example(_gaussian_case(1e6, "sde"))
@example(_gaussian_case(1e20, "ode"))
@example(_gaussian_case(-1.0, "ode"))
def test_gaussian_gives_a_finite_or_marked_result_or_one_value_error(p):
    _check_solution(lambda: _gaussian(p), GAUSSIAN_STATISTICS)


@pytest.mark.parametrize("omega, guidance_scale", [(-1.0 - 1e-9, None), (-2.0, None), (None, -1e-9), (None, -1.0)])
def test_every_entry_point_refuses_a_weight_below_minus_one(omega, guidance_scale):
    """The constant weight keeps the schedules' floor: omega >= -1 (guidance_scale >= 0), in the value
    object, the theories and the schedules alike."""
    weight = dict(omega=omega) if omega is not None else dict(guidance_scale=guidance_scale)
    name = "omega" if omega is not None else "guidance_scale"
    for call in (lambda: cp.Guidance(**weight),
                 lambda: guided_prediction(0.1, **weight),
                 lambda: cp.theory.gaussian.gaussian_moments(cp.GaussianModel(0.25, 1.0).pair, **weight),
                 lambda: cp.make_schedule("constant", **weight),
                 lambda: cp.make_schedule("tvcfg", **weight)):
        with pytest.raises(ValueError, match=name):
            call()
    assert cp.Guidance(omega=-1.0).omega == -1.0 and cp.Guidance(guidance_scale=0.0).omega == -1.0
