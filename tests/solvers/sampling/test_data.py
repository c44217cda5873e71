"""Models built from a user's labelled data (docs/theory.md eqs. 68-69): loading and validation,
exact empirical scores, copy statistics, conditional sampling of the class's own moments, CLI."""

import json
import math

import h5py
import numpy as np
import pytest

import cfgphase as cp
from cfgphase.solvers.cli import main
from cfgphase.solvers.io.data import digits, load_data
from cfgphase.solvers.sampling.observables import nearest_points
from cfgphase.solvers.score.fields import field_for


def toy(n_per=20, d=8, seed=0):
    """Three classes of n_per points, labels 3, 5, 7, classes centred at distinct points."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((3, d))
    x = np.concatenate([c + rng.standard_normal((n_per, d)) for c in centres])
    return x, np.repeat([3, 5, 7], n_per)


@pytest.mark.parametrize("change, name", [
    (lambda x, y: (x[:, :, None], y), "x"),
    (lambda x, y: (x[:1], y[:1]), "x"),
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 9, np.nan, x), y), "x"),
    (lambda x, y: (x, y[:-1]), "labels"),
    (lambda x, y: (x, y + 0.5), "labels"),
    (lambda x, y: (x, np.zeros_like(y)), "labels"),
    (lambda x, y: (x, y.astype(str)), "labels"),
])
def test_bad_data_is_refused_by_name(change, name):
    x, y = change(*toy())
    with pytest.raises(ValueError, match=name):
        cp.Model.from_data(x, y)


@pytest.mark.parametrize("kwargs, name", [(dict(width=-1.0), "width"), (dict(width=float("nan")), "width"),
                                          (dict(target=4), "target"), (dict(target="3"), "target")])
def test_bad_width_or_target_is_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        cp.Model.from_data(*toy(), **kwargs)


def test_classes_are_numbered_in_label_order_and_weighted_by_their_share():
    x, y = toy()
    y[:5] = 5  # classes of 15, 25, 20 points
    model = cp.Model.from_data(x, y, width=0.1, target=5)
    assert model.data_labels == (3, 5, 7) and model.target == 1 and model.K == 3
    np.testing.assert_allclose(model.mixture.class_weights, [15 / 60, 25 / 60, 20 / 60], rtol=1e-14)
    np.testing.assert_allclose(model.target_mean, x[y == 5].mean(0), rtol=1e-12)
    record = model.record()
    assert record["disorder"] == "data" and record["components"] == 60 and record["target_label"] == 5


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_files_round_trip_and_bad_files_name_data(tmp_path, suffix):
    x, y = toy()
    path = tmp_path / f"set{suffix}"
    if suffix == ".npz":
        np.savez(path, x=x, labels=y)
    else:
        with h5py.File(path, "w") as f:
            f["x"], f["labels"] = x, y
    x2, y2 = load_data(path)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    bad = tmp_path / f"bad{suffix}"
    if suffix == ".npz":
        np.savez(bad, x=x)
    else:
        with h5py.File(bad, "w") as f:
            f["x"] = x
    with pytest.raises(ValueError, match="data: .* has no array 'labels'"):
        load_data(bad)
    damaged = tmp_path / f"damaged{suffix}"
    damaged.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="data: cannot read"):
        load_data(damaged)
    for missing in (tmp_path / "none.npz", tmp_path / "set.csv"):
        if missing.suffix == ".csv":
            missing.write_text("1,2\n")
        with pytest.raises(ValueError, match="data"):
            load_data(missing)


def test_the_bundled_digits():
    x, y = digits()
    assert x.shape == (1797, 64) and x.dtype == np.float64 and np.array_equal(np.unique(y), np.arange(10))
    assert 0 <= x.min() and x.max() <= 16


@pytest.mark.parametrize("t", [0.01, 0.3, 2.0])
def test_exact_empirical_score_is_the_gradient_of_the_class_log_density(t):
    """s^2 = 0: class c's noised density is the mean over its points of N(a_t x_i, sigma_t^2 I); the
    field's conditional estimate, turned into a score (eq. 9), against central differences of that
    log-density (step 1e-5: error ~1e-9 relative, bound 1e-6)."""
    x, y = toy()
    model = cp.Model.from_data(x, y, width=0.0, target=7)
    field = field_for(model)
    process = model.process
    a, var = float(process.a(t)), float(process.var(t))
    points = x[y == 7]

    def log_density(z):
        e = -np.sum((z - a * points) ** 2, axis=1) / (2 * var)
        return e.max() + math.log(np.mean(np.exp(e - e.max())))

    rng = np.random.default_rng(1)
    z = a * points[:2] + math.sqrt(var) * rng.standard_normal((2, x.shape[1]))
    cond = field.evaluate(z, t).cond
    score = (a * cond - z) / var
    h = 1e-5
    for i in range(2):
        grad = np.array([(log_density(z[i] + h * e) - log_density(z[i] - h * e)) / (2 * h) for e in np.eye(z.shape[1])])
        assert np.linalg.norm(score[i] - grad) <= 1e-6 * np.linalg.norm(grad), (t, i)


def test_nearest_points_against_brute_force_across_blocks():
    rng = np.random.default_rng(2)
    x, points = rng.standard_normal((50, 5)), rng.standard_normal((37, 5))
    index, first, second = nearest_points(x, points, block=8)
    dist = np.linalg.norm(x[:, None] - points[None], axis=2)
    order = np.sort(dist, axis=1)
    np.testing.assert_array_equal(index, dist.argmin(1))
    np.testing.assert_allclose(first, order[:, 0], rtol=1e-10)
    np.testing.assert_allclose(second, order[:, 1], rtol=1e-10)


def test_coverage_per_class_against_brute_force():
    """Unguided sampling (omega = -1) of the toy's three classes at s^2 = 0, 8 particles: for every
    class, the fraction of its points that are the copied nearest point of some sample, recomputed
    by brute force from the kept samples; the target's entry is ``coverage``; the class coordinate
    of the dataset and the JSON keys are the labels."""
    x, y = toy(n_per=6)
    run = cp.simulate(cp.Model.from_data(x, y, width=0.0, target=5), -1.0, sampler=cp.Sampler(kind="sde", steps=40,
                      t_min=1e-3), particles=8, seed=1, save=cp.SaveAt(samples=True))
    dist = np.linalg.norm(run.samples[:, None] - x[None], axis=2)
    order = np.sort(dist, axis=1)
    copied = set(dist.argmin(axis=1)[order[:, 0] < order[:, 1] / 3].tolist())
    expected = {str(c): sum(int(i in copied) for i in np.flatnonzero(y == c)) / 6 for c in (3, 5, 7)}
    summary = run.summary()
    assert summary["coverage_per_class"] == pytest.approx(expected, abs=1e-12)
    assert summary["coverage"] == pytest.approx(expected["5"], abs=1e-12)
    assert 0 < sum(expected.values()) < 3  # the check is not vacuous
    ds = run.to_xarray()
    assert ds["coverage_per_class"].dims == ("class",) and ds["class"].values.tolist() == [3, 5, 7]
    assert ds["coverage_per_class"].sel({"class": 7}).item() == pytest.approx(expected["7"])
    assert ds["coverage_per_class_stderr"].shape == (3,)
    json.dumps(summary, default=float)


def test_the_exact_empirical_score_copies_and_smoothing_stops_it():
    """Conditional sampling (omega = 0) of a toy class, SDE, to t_min = 1e-4: with s^2 = 0 every sample
    ends on a training point of the target (the exact empirical score memorises: copy fraction 1,
    nearest point in the target); with s^2 = 1 (the points' own scale) none copies."""
    x, y = toy()
    sampler = cp.Sampler(kind="sde", steps=100, t_min=1e-4)
    runs = {s2: cp.simulate(cp.Model.from_data(x, y, width=s2, target=5), 0.0, sampler=sampler, particles=256,
                            seed=0).final for s2 in (0.0, 1.0)}
    assert runs[0.0]["copy_fraction"] == 1.0 and runs[0.0]["nearest_in_target"] == 1.0
    assert runs[0.0]["coverage"] > 0.9  # 256 samples over 20 points: each is missed with probability ~e^-12.8
    assert runs[1.0]["copy_fraction"] == 0.0


def test_conditional_sampling_reproduces_the_class_moments_and_guidance_pushes_them():
    """s^2 = 0.5: omega = 0 gives the class's exact conditional, whose moments are the points'
    covariance plus s^2 I: var_ratio = 1, mean_ratio = 1 and var_par = var_par_class within 3
    standard errors (jackknife). omega = 2 pushes the mean out (mean ratio 1.13 +- 0.008); for three
    well-separated classes it barely shrinks the total variance (measured 0.98 +- 0.014): guidance
    acts before the classes separate, as in the sub-exponential regime of docs/theory.md section 9."""
    x, y = toy()
    model = cp.Model.from_data(x, y, width=0.5, target=3)
    sampler = cp.Sampler(kind="sde", steps=200)
    f = cp.simulate(model, 0.0, sampler=sampler, particles=4096, seed=3).final
    for key, truth in (("var_ratio", 1.0), ("mean_ratio", 1.0), ("var_par", f["var_par_class"]),
                       ("var_perp", f["var_perp_class"])):
        assert abs(f[key] - truth) < 3 * f[key + "_stderr"], (key, f[key], truth, f[key + "_stderr"])
    g = cp.simulate(model, 2.0, sampler=sampler, particles=1024, seed=3).final
    assert g["mean_ratio"] > 1 + 3 * g["mean_ratio_stderr"]


def test_cli_simulates_a_data_file_and_refuses_bad_input(tmp_path, capsys):
    x, y = toy()
    path = tmp_path / "toy.npz"
    np.savez(path, x=x, labels=y)
    args = ["simulate", "--data", str(path), "--class-var", "0.1", "--particles", "64", "--steps", "20", "--quiet"]
    assert main(args + ["--target", "5", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["disorder"] == "data" and record["target_label"] == 5 and record["d"] == 8
    assert {"copy_fraction", "coverage", "nearest_in_target", "var_ratio"} <= set(record)
    assert set(record["coverage_per_class"]) == {"3", "5", "7"}
    assert record["coverage_per_class"]["5"] == record["coverage"]
    for extra, name in ((["--alpha", "0.2"], "--alpha"), (["--target", "4"], "target"), (["--d", "9"], "--d"),
                        (["--copy-ratio", "2"], "copy_ratio")):
        assert main(args + extra) == 2
        err = capsys.readouterr().err
        assert name in err and err.count("\n") == 1, err
    assert main(["simulate", "--data", str(tmp_path / "none.npz")]) == 2
    assert "data" in capsys.readouterr().err
