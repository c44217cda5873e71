"""End-to-end sampling with exact scores against exact distributions (eqs. 9-14).

Discretisation allowances, measured once at d = 32, alpha = 0.2 (K = 602), against 1600 steps:
Heun with 200 steps moved mean_ratio, var_par, var_perp and q by <= 5e-5 (common initial
particles, so no noise in the difference): allowance 5e-4. The exponential SDE step is exact at
omega = 0 (the estimate is the constant mu_c; tests/solvers/sampling/test_steppers.py); at omega = -1 its
200-step differences were within noise (|dq| = 0.012 +- 0.008): allowance 1 % of the target.
"""

import numpy as np
import pytest

import cfgphase as cp
from cfgphase.physics.mixture import GaussianMixture
from cfgphase.solvers.score.fields import MixtureField

EXPONENTIAL = cp.Model(d=32, alpha=0.2)
RUN = dict(particles=2048, steps=200, save=cp.SaveAt(times=[0.0]))


@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_omega_zero_reproduces_the_true_conditional(sampler):
    res = cp.simulate(EXPONENTIAL, cp.Guidance(omega=0.0), sampler=sampler, **RUN).final
    for key, target in (("mean_ratio", 1.0), ("var_par", 0.25), ("var_perp", 0.25)):
        assert abs(res[key] - target) <= 3 * res[key + "_stderr"] + 5e-4, (key, res[key], res[key + "_stderr"])
    assert abs(res["distortion"]) <= 3 * res["distortion_stderr"] + 5e-4


@pytest.mark.parametrize("sampler, allowance", [("ode", 5e-4), ("sde", 0.01)])
def test_unconditional_sampling_reproduces_the_mixture_moments(sampler, allowance):
    """omega = -1 runs on the unconditional score alone: the streaming kernel drives the dynamics."""
    model = GaussianMixture.random(32, alpha=0.2, seed=0)
    q_exact = model.weights @ model.sq_norms / 32 + 0.25
    overlap_exact = model.weights @ (model.means @ model.means[0]) / 32
    res = cp.simulate(EXPONENTIAL, cp.Guidance(omega=-1.0), sampler=sampler, **RUN)
    q, q_err = (v[-1] for v in res.observable("q"))
    overlap, overlap_err = (v[-1] for v in res.observable("m"))
    assert abs(q - q_exact) <= 3 * q_err + allowance * q_exact
    assert abs(overlap - overlap_exact) <= 3 * overlap_err + allowance * np.sqrt(q_exact)


def test_inverse_posterior_identity_at_omega_zero():
    """E_{X ~ p(.|c)}[1/p(c|X)] = 1/pi_c on a small overlapping mixture (Li & Jiao)."""
    means = np.array([[0.0, 0.0], [1.0, 0.3], [-0.4, 0.9]])
    weights = np.array([0.5, 0.3, 0.2])
    model = cp.Model(means=means, weights=weights, class_var=1.0, target=1)
    res = cp.simulate(model, cp.Guidance(omega=0.0), sampler=cp.Sampler("ode", steps=100, init="conditional"),
                      particles=20000, save=cp.SaveAt(times=[0.0])).final
    assert abs(res["inv_prob"] - 1 / 0.3) <= 3 * res["inv_prob_stderr"] + 5e-4
    assert res["inv_prob_ci_low"] < 1 / 0.3 < res["inv_prob_ci_high"]
    assert res["accuracy"] < 0.9  # the classes really overlap


def test_guidance_scale_and_omega_are_the_same_weight():
    model, common = cp.Model(d=8, classes=20), dict(particles=64, steps=20, save=cp.SaveAt(times=[0.0]))
    by_omega = cp.simulate(model, cp.Guidance(omega=0.5), **common).final
    by_scale = cp.simulate(model, cp.Guidance(guidance_scale=1.5), **common).final
    by_callable = cp.simulate(model, cp.Guidance(guidance_scale=lambda t: 1.5), **common).final
    by_number = cp.simulate(model, 0.5, **common).final
    assert by_omega == by_scale == by_callable == by_number


def test_equal_seeds_give_common_random_numbers():
    model, common = cp.Model(d=8, classes=20), dict(particles=64, steps=20, sampler="sde",
                                                    save=cp.SaveAt(samples=True))
    a, b = cp.simulate(model, 0.0, **common), cp.simulate(model, 0.0, **common)
    np.testing.assert_array_equal(a.samples, b.samples)
    weak, strong = cp.simulate(model, 0.2, **common), cp.simulate(model, 3.0, **common)
    # same initial particles: the first recorded node (t_max) is identical for both weights
    np.testing.assert_array_equal(weak.trajectory["m"][0], strong.trajectory["m"][0])
    assert not np.array_equal(weak.samples, strong.samples)


def test_the_model_seed_draws_the_means_and_the_run_seed_the_noise():
    a, b = cp.Model(d=8, classes=20, seed=1), cp.Model(d=8, classes=20, seed=2)
    assert not np.array_equal(a.mixture.means, b.mixture.means)
    common = dict(particles=64, steps=20, sampler="sde", save=cp.SaveAt(samples=True))
    same_means = [cp.simulate(a, 1.0, seed=s, **common) for s in (0, 1)]
    assert same_means[0].params["model_seed"] == same_means[1].params["model_seed"] == 1
    assert same_means[0].params["seed"] == 0 and same_means[1].params["seed"] == 1
    assert not np.array_equal(same_means[0].samples, same_means[1].samples)
    # the same noise on other means: the initial normals are shared (mixture draws differ)
    other = cp.simulate(b, 1.0, seed=0, **common)
    assert other.params["model_seed"] == 2 and not np.array_equal(other.samples, same_means[0].samples)


def test_guidance_pushes_the_mean_out_and_shrinks_the_variance():
    """The qualitative effect CFG is known for (Ventura et al.), on the same noise."""
    model, common = cp.Model(d=32, alpha=0.2), dict(particles=1024, steps=100, save=cp.SaveAt(times=[0.0]))
    base, guided = cp.simulate(model, 0.0, **common).final, cp.simulate(model, 2.0, **common).final
    assert guided["mean_ratio"] > base["mean_ratio"] + 5 * guided["mean_ratio_stderr"]
    assert guided["var_perp"] < base["var_perp"] - 5 * guided["var_perp_stderr"]


@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_float32_kernel_agrees_with_float64_on_every_final_statistic(sampler):
    """float32 GEMMs move every final statistic by less than 5 % of its standard error. Where the
    standard error is itself at float64's resolution (quantiles of p(c|x) within 1e-13 of 1: logits
    of order 100 carry rounding of 1e-14), the floor is 1e-12 of the value. The case of the audit
    (d = 16, K = 512, seed 7), where E[1/p] had moved by 5500 standard errors before the final
    statistics were evaluated in float64."""
    model, common = cp.Model(d=16, classes=512, seed=7), dict(particles=1024, steps=50, seed=7, sampler=sampler)
    f64, f32 = cp.simulate(model, 1.0, **common), cp.simulate(model, 1.0, dtype="float32", **common)
    assert f32.summary()["dtype"] == "float32" and f64.summary()["dtype"] == "float64"
    checked = 0
    for key, value in f64.final.items():
        se = f64.final.get(key + "_stderr")
        if key.endswith("_stderr") or value is None or se is None:
            continue
        assert abs(f32.final[key] - value) <= 0.05 * se + 1e-12 * max(1.0, abs(value)), (key, value, f32.final[key], se)
        checked += 1
    assert checked >= 20 and f32.final["inv_prob"] >= 1.0


@pytest.mark.parametrize("classes", [20, 100])  # the dense and the streaming kernel
def test_divergence_is_reported_not_raised(classes):
    """The particles blow up (to ~1e297 or to inf, depending on where the first overflow happens): status 1,
    a message naming what is non-finite, the statistics as null, nothing raised."""
    res = cp.simulate(cp.Model(d=8, classes=classes), cp.Guidance(omega=lambda t: 1e300), particles=16, steps=4,
                      save=cp.SaveAt(times=[0.0]))
    summary = res.summary()
    assert res.status == 1 and "non-finite" in res.message
    assert summary["var_perp"] is None or "var_perp" in summary["non_finite"]
    assert "distortion_stderr" in summary


MODEL_KEYS = {"d", "classes", "alpha", "class_var", "mean_var", "weights", "target", "process"}
GUIDANCE_KEYS = {"omega", "guidance_scale"}
SAMPLER_KEYS = {"grid", "method", "t_max"}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(classes=0), "classes"),
        (dict(d=0, classes=3), "d"),
        (dict(class_var=-0.25), "class_var"),
        (dict(class_var=float("nan")), "class_var"),
        (dict(mean_var=float("nan")), "mean_var"),
        (dict(classes=3, weights=[1.0, -1.0, 1.0]), "weights"),
        (dict(classes=3, weights=[1.0, float("nan"), 1.0]), "weights"),
        (dict(alpha=4.0), "alpha"),  # K = e^32 classes: more than MAX_CLASSES = 2^40, even generated
        (dict(grid=[1.0, 0.5, 0.7, 0.0]), "monotone"),
        (dict(omega=float("nan")), "omega"),
        (dict(omega=lambda t: float("nan")), "omega"),
        (dict(omega=1.0, guidance_scale=2.0), "guidance_scale"),
        (dict(particles=1), "particles"),
        (dict(target=10_000), "target"),
        (dict(steps=0), "steps"),
        (dict(process="flow", t_max=1.5), "t_max"),
        (dict(sampler="langevin"), "sampler"),
        (dict(sampler="sde", method="heun"), "method"),
        (dict(class_var=0.0), "class_var"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_input_raises_value_error_naming_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        model = cp.Model(**{"d": 8, "alpha": None if "classes" in kwargs else 0.3,
                            **{k: v for k, v in kwargs.items() if k in MODEL_KEYS}})
        guidance = cp.Guidance(**{k: v for k, v in kwargs.items() if k in GUIDANCE_KEYS})
        sampler = cp.Sampler(kwargs.get("sampler", "ode"), **{k: v for k, v in kwargs.items() if k in SAMPLER_KEYS})
        cp.simulate(model, guidance, sampler=sampler, steps=kwargs.get("steps"), seed=kwargs.get("seed", 0),
                    particles=kwargs.get("particles", 16))


def test_integrate_accepts_an_explicit_increasing_grid():
    field = MixtureField(GaussianMixture.random(8, classes=5))
    res = cp.integrate(field, 0.0, cp.Sampler(grid=np.linspace(0.0, 4.0, 41)), particles=32)
    assert res.params["t_max"] == 4.0 and res.params["steps"] == 40 and res.params["grid"] == "explicit"


def test_multimodal_conditional_sampling_and_the_energy_distance():
    """omega = 0 on a two-mode class (0.3 / 0.7) reproduces the mode weights and the within-mode
    variance s^2, and its energy distance to exact samples is zero within 3 standard errors;
    guidance (omega = 2) makes it clearly positive."""
    model = cp.Model(d=4, classes=5, modes=2, mode_weights=[0.3, 0.7], class_var=0.25, seed=3)
    common = dict(particles=4096, steps=100, save=cp.SaveAt(times=[0.0]), seed=3)
    exact = cp.simulate(model, 0.0, **common).final
    assert abs(exact["mode_weight_0"] - 0.3) <= 3 * exact["mode_weight_0_stderr"]
    assert abs(exact["within_mode_var"] - 0.25) <= 3 * exact["within_mode_var_stderr"] + 5e-4
    assert abs(exact["energy_distance"]) <= 3 * exact["energy_distance_stderr"]
    guided = cp.simulate(model, 2.0, **common).final
    assert guided["energy_distance"] > 10 * guided["energy_distance_stderr"]


def test_non_finite_statistics_are_marked_apart_from_undefined_ones(tmp_path):
    """Unconditional sampling of two far classes: half the samples have p(c|x) = exp(-1800), so
    E[1/p(c|x)] is infinite. It is reported as such (in ``non_finite``, in the file), not as
    'not defined' (None), which a two-class 1-D model's var_perp is."""
    res = cp.simulate(cp.Model(means=[[0.0], [30.0]], class_var=0.25), -1.0, particles=64, steps=20)
    summary = res.summary()
    assert res.status == 0 and summary["inv_prob"] == float("inf") and "inv_prob" in summary["non_finite"]
    assert summary["var_perp"] is None and "var_perp" not in summary["non_finite"]
    ds = cp.open_dataset(cp.save(res, tmp_path / "run.h5"))
    assert np.isinf(float(ds["inv_prob"])) and np.isnan(float(ds["var_perp"]))
    assert "inv_prob" in ds.attrs["non_finite"].split(",")


def test_the_gemm_library_is_recorded_and_moves_the_statistics_only_by_rounding(monkeypatch):
    """The run records the streaming kernel's GEMM library ('blas', None when the dense NumPy path runs); with
    the other library (CFGPHASE_BLAS) every final statistic moves by less than 1e-3 of its standard error: the
    libraries differ only in the GEMMs' rounding (relative ~1e-16), carried through 50 steps."""
    from cfgphase.solvers.score import blas

    small = cp.simulate(cp.Model(d=4, classes=8), 1.0, particles=16, steps=4)
    assert small.summary()["blas"] is None
    libraries = ["openblas"] + (["mkl"] if blas._mkl_path() is not None else [])
    model, runs = cp.Model(d=16, classes=300, seed=2), {}
    for name in libraries:
        monkeypatch.setenv("CFGPHASE_BLAS", name)
        runs[name] = cp.simulate(model, 1.0, particles=256, steps=50, seed=3)
        assert runs[name].summary()["blas"] == name and runs[name].to_xarray().attrs["blas"] == name
    for name in libraries[1:]:
        for key, value in runs["openblas"].final.items():
            se = runs["openblas"].final.get(key + "_stderr")
            if key.endswith("_stderr") or value is None or se is None:
                continue
            assert abs(runs[name].final[key] - value) <= 1e-3 * se + 1e-12 * max(1.0, abs(value)), (key, value)
