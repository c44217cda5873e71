# %% [markdown]
# # 11 — Guidance on real data: memorisation and distortion of the 8 x 8 digits
#
# **Claim.** On the digits that scikit-learn ships (1797 images, 10 classes, d = 64, scaled to unit
# pixel variance), with the exact empirical score of each class (docs/theory.md eq. 68):
# (1) with no smoothing (s^2 = 0) every sample copies a training point, at every guidance weight;
# (2) smoothing each point by N(0, s^2 I) stops the copying, and a smaller training set (N = 300)
# keeps copying up to a larger s^2 than the full set (its points are farther apart);
# (3) guidance distorts the class as it does Gaussian mixtures: the mean is pushed out
# (mean_ratio > 1) and the variance shrinks (var_ratio < 1) at every s^2, and with s^2 = 0 it copies
# fewer distinct training points (coverage falls);
# (4) the collapse onto one training point happens later in sampling (at a smaller t) than Biroli et
# al.'s t_C for isotropic Gaussian points with the class's variance; their formula with the class's
# covariance spectrum (eq. 70) is closer.
#
# **Finding** (full mode). Copying stops between s^2 = 0.01 and 0.1; guidance at omega = 3 shrinks the
# total variance by 15-25 % and pushes the mean by 3 %, and at s^2 = 0 it lowers the coverage of the
# class (0.97 -> 0.77 at N = 1797). The collapse time of class 3 sits below both formulas: real digits
# are not Gaussian, and their nearest neighbours are closer than Gaussian points of the same spectrum.

# %%
import numpy as np

import cfgphase as cp

QUICK, OUT = cp.figures.data.notebook_mode()
plots, regimes = cp.figures.plots, cp.theory.regimes
TARGET, SIZES, WIDTHS, OMEGAS = 3, (300, 1797), (0.0, 0.01, 0.03, 0.1), (0.0, 1.0, 3.0)
B, STEPS = (512, 60) if QUICK else (1024, 100)
SAMPLER = cp.Sampler("sde", steps=STEPS, t_min=1e-3)

x, labels = cp.load_data("digits")
x = x / x.std()
subsets = {1797: np.arange(x.shape[0]), 300: np.sort(np.random.default_rng(0).permutation(x.shape[0])[:300])}

# %% [markdown]
# The map: copy fraction, coverage, mean ratio and total-variance ratio (each with its jackknife
# standard error) over the training-set size N, the smoothing s^2 and the weight omega.

# %%
keys = ("copy_fraction", "coverage", "mean_ratio", "var_ratio")
grid = {k: np.full((len(SIZES), len(WIDTHS), len(OMEGAS)), np.nan) for k in keys}
errs = {k: np.full_like(grid[k], np.nan) for k in keys}
for i, n in enumerate(SIZES):
    for j, s2 in enumerate(WIDTHS):
        model = cp.Model.from_data(x[subsets[n]], labels[subsets[n]], width=s2, target=TARGET)
        for k, omega in enumerate(OMEGAS):
            final = cp.simulate(model, omega, sampler=SAMPLER, particles=B, seed=1).final
            for key in keys:
                grid[key][i, j, k], errs[key][i, j, k] = final[key], final[key + "_stderr"] or 0.0
        print(f"N {n:>4} s^2 {s2:<5}", "  ".join(
            f"omega {w:g}: copy {grid['copy_fraction'][i, j, k]:.2f} cover {grid['coverage'][i, j, k]:.2f} "
            f"r {grid['mean_ratio'][i, j, k]:.3f} v {grid['var_ratio'][i, j, k]:.2f}" for k, w in enumerate(OMEGAS)))
cp.figures.data.FigureData("empirical-digits", {**grid, **{k + "_stderr": v for k, v in errs.items()},
                                                "sizes": np.array(SIZES), "widths": np.array(WIDTHS),
                                                "omegas": np.array(OMEGAS)},
                           dict(B=B, steps=STEPS, target=TARGET)).save(OUT / "11_empirical_digits.h5")

# %% [markdown]
# **Collapse.** Unguided conditional sampling of class 3 with s^2 = 0: the time at which the mean
# entropy of the posterior over the class's points falls to log 2, against eq. (70) with the class's
# per-pixel variance (isotropic, Biroli et al.) and with its covariance spectrum.

# %%
collapse = {}
for n in SIZES:
    points = x[subsets[n]][labels[subsets[n]] == TARGET]
    spectrum = np.clip(np.linalg.eigvalsh(np.cov(points.T, bias=True)), 0.0, None)
    model = cp.Model.from_data(x[subsets[n]], labels[subsets[n]], width=0.0, target=TARGET)
    res = cp.simulate(model, 0.0, sampler=cp.Sampler("sde", steps=2 * STEPS, t_min=1e-4), particles=B, seed=2)
    entropy, _ = res.observable("responsibility_entropy")
    i = int(np.argmax(entropy <= np.log(2)))
    measured = float(np.interp(np.log(2), entropy[[i, i - 1]], res.times[[i, i - 1]]))
    isotropic = regimes.empirical_collapse_time(np.full(x.shape[1], spectrum.mean()), len(points))
    collapse[n] = (len(points), measured, isotropic, regimes.empirical_collapse_time(spectrum, len(points)))
    print(f"N {n}: class {TARGET} has {len(points)} points; collapse measured {measured:.3f}, "
          f"isotropic t_C {isotropic:.3f}, spectrum {collapse[n][3]:.3f}")


# %%
@plots.styled
def draw():
    fig, axes = plots.subplots(1, 2, figsize=(plots.WIDTH[2], 2.5))
    colors = plots.palette()
    widths = np.array(WIDTHS)
    shown = np.where(widths > 0, widths, widths[1] / 3)  # s^2 = 0 drawn at the left edge of the log axis
    for i, n in enumerate(SIZES):
        for k, omega in enumerate(OMEGAS):
            axes[0].errorbar(shown, grid["copy_fraction"][i, :, k], errs["copy_fraction"][i, :, k], color=colors[k],
                             marker="os"[i], markersize=3, linewidth=0.8, linestyle="-" if i else "--",
                             label=f"N = {n}, $\\omega$ = {omega:g}")
    axes[0].set_xscale("log")
    axes[0].set_xlabel(r"smoothing $s^2$ (0 at the left edge) [pixel variance]")
    axes[0].set_ylabel("copy fraction [1]")
    axes[0].legend(fontsize=5, ncol=2)
    for j, s2 in enumerate(WIDTHS):
        axes[1].errorbar(OMEGAS, grid["var_ratio"][1, j], errs["var_ratio"][1, j], color=colors[j], marker="o",
                         markersize=3, linewidth=0.8, label=f"$s^2$ = {s2:g}")
    axes[1].axhline(1.0, color="k", linestyle="--", linewidth=0.7)
    axes[1].set_xlabel(r"guidance weight $\omega$ [1]")
    axes[1].set_ylabel(r"total variance / the class's [1]")
    axes[1].set_title(f"N = {SIZES[1]}, class {TARGET}", fontsize=8)
    axes[1].legend(fontsize=6)
    return fig


plots.save(draw(), OUT / "11_empirical_digits")

# %% [markdown]
# **Check.** (1) Copy fraction 1 at s^2 = 0 for every N and omega. (2) No copies at s^2 = 0.1; at
# s^2 = 0.01 the smaller set copies more, by more than 3 combined standard errors. (3) At every N and
# s^2, omega = 3 has a larger mean ratio and a smaller variance ratio than omega = 0, each by more than 3
# combined standard errors; at s^2 = 0 and N = 1797 the coverage falls from omega = 0 to omega = 3 by
# more than 3 of them. (4) The measured collapse time is below the isotropic t_C, and the spectrum's
# prediction is closer to it.

# %%
def apart(a, b, ea, eb):
    return a - b > 3 * np.hypot(ea, eb)


cf, cf_e = grid["copy_fraction"], errs["copy_fraction"]
assert np.all(cf[:, 0, :] == 1.0), cf[:, 0, :]
assert np.all(cf[:, -1, :] == 0.0), cf[:, -1, :]
assert np.all(apart(cf[0, 1, :], cf[1, 1, :], cf_e[0, 1, :], cf_e[1, 1, :])), cf[:, 1, :]
for key, sign in (("mean_ratio", 1), ("var_ratio", -1)):
    hi, lo = grid[key][..., -1], grid[key][..., 0]
    assert np.all(apart(sign * hi, sign * lo, errs[key][..., -1], errs[key][..., 0])), (key, hi, lo)
cov, cov_e = grid["coverage"][1, 0], errs["coverage"][1, 0]
assert apart(cov[0], cov[-1], cov_e[0], cov_e[-1]), (cov, cov_e)
for n, (points, measured, isotropic, spectrum) in collapse.items():
    assert measured < isotropic and abs(spectrum - measured) < abs(isotropic - measured), collapse[n]
print("claim holds")
