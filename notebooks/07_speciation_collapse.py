# %% [markdown]
# # 07 — Speciation and collapse times against the published formulas
#
# **Claim** (Biroli, Bonnaire, de Bortoli & Mezard 2024). Two dynamical transitions organise
# unguided sampling. *Speciation*: with a few well-separated classes, trajectories commit to a
# class at t_S = (1/2) log Lambda, Lambda the largest eigenvalue of the data covariance (here
# Lambda = |mu|^2 + s^2 ~ d): t_S grows like (1/2) log d. *Collapse*: with K = e^{alpha d} point
# classes drawn from N(0, sigma^2 I) (OU), the posterior condenses on one class at
# t_C = (1/2) log(1 + sigma^2 / (e^{2 alpha} - 1)); cfgphase's collapse time for classes of width
# s^2 (docs/theory.md eq. 21) reduces to it as s -> 0 and matches simulation extrapolated in 1/d.
# With guidance the condensation moves earlier (t* > t_C), as the trajectory figure shows.

# %%
import numpy as np

import cfgphase as cp

QUICK, OUT = cp.figures.data.notebook_mode()
collapse_time, extrapolate = cp.theory.condensation.collapse_time, cp.theory.scaling.extrapolate

# %% [markdown]
# **Speciation.** Two classes at +-mu, |mu|^2 = d, s^2 = 0.25, unconditional sampling (omega = -1).
# The simulated t_S is where the mean class-posterior entropy falls to half of log 2.

# %%
def speciation_time(d, seed=0):
    direction = np.random.default_rng(seed).standard_normal(d)
    mu = direction / np.linalg.norm(direction) * np.sqrt(d)
    model = cp.Model(means=np.stack([mu, -mu]), class_var=0.25)
    res = cp.simulate(model, cp.Guidance(omega=-1.0), particles=512 if QUICK else 4096, steps=200,
                      t_max=0.5 * np.log(d) + 6.0, seed=seed)
    entropy, _ = res.observable("posterior_entropy")
    times = res.times
    i = np.argmax(entropy <= 0.5 * np.log(2))
    return float(np.interp(0.5 * np.log(2), entropy[[i, i - 1]], times[[i, i - 1]]))


dims = np.array([16, 64, 256, 1024] if QUICK else [16, 32, 64, 128, 256, 512, 1024, 2048])
t_s = np.array([speciation_time(int(d)) for d in dims])
offset = t_s - 0.5 * np.log(dims + 0.25)
print("speciation: d", dims, "t_S", np.round(t_s, 4), "t_S - (1/2) log Lambda", np.round(offset, 4))

# %% [markdown]
# **Collapse.** Points (s -> 0): the formula. Classes of width s^2 = 0.25: the time at which the
# mean target posterior crosses 1/2 in conditional sampling (omega = 0), for several draws of the
# means per d (draw s: `cp.Model(..., seed=s)` for the means, `cp.simulate(..., seed=s)` for the
# noise); each draw is compared with the theory at its own target norm (eq. 44) and the mean
# residual extrapolated in 1/d.

# %%
for alpha in (0.1, 0.3, 0.6):
    published = 0.5 * np.log1p(1.0 / np.expm1(2 * alpha))
    ours = collapse_time(alpha, mean_var=1.0, class_var=1e-10).t_collapse
    print(f"alpha {alpha}: published t_C {published:.10f}, cfgphase (s^2 = 1e-10) {ours:.10f}")
    assert abs(ours - published) < 1e-8
alpha = 0.2
collapse_dims, seeds = ([24, 32, 40], 4) if QUICK else ([24, 32, 40, 48], 8)
means, errors = [], []
for d in collapse_dims:
    residuals = []
    for seed in range(seeds):
        model, conditional = cp.Model(d=d, alpha=alpha, seed=seed), cp.Guidance(omega=0.0)
        sim = cp.simulate(model, conditional, particles=512, steps=150, t_max=7.0, seed=seed).final
        pred = cp.predict(model, conditional, t_max=7.0, target_norm=model.target_norm)
        residuals.append(sim["t_condensation"] - pred.t_condensation)
    means.append(np.mean(residuals))
    errors.append(np.std(residuals, ddof=1) / np.sqrt(seeds))
extrapolated, err = extrapolate(collapse_dims, means, errors)
t_c = collapse_time(alpha).t_collapse
print(f"collapse: predicted t_C = {t_c:.4f}; residuals {np.round(means, 4)} +- {np.round(errors, 4)}; "
      f"extrapolated {extrapolated:+.4f} +- {err:.4f}")

# %%
guided = cp.simulate(cp.Model(d=48, alpha=0.15, seed=1), cp.Guidance(omega=1.0), particles=512 if QUICK else 2048,
                     steps=150, t_max=7.0, seed=1)
path = OUT / "07_trajectory.h5"
cp.save(guided, path, overwrite=True)
cp.plot(path, out=OUT / "07_trajectory", overwrite=True)

# %% [markdown]
# **Check.** (1) Speciation: the slope of t_S against log d is 1/2 within 0.05, and
# t_S - (1/2) log Lambda varies by less than 0.1 over the dimensions. (2) Collapse: the published
# formula is recovered to 1e-8 for s^2 = 1e-10; the simulated collapse time, conditioned on each
# draw's target norm and extrapolated in 1/d, agrees with eq. (21) within 3 standard errors.
# (3) Guidance condenses earlier: the guided run's simulated t* exceeds the unguided collapse time
# of the same alpha.

# %%
slope = np.polyfit(np.log(dims), t_s, 1)[0]
assert abs(slope - 0.5) < 0.05, slope
assert np.ptp(offset) < 0.1, offset
assert abs(extrapolated) <= 3 * err, (extrapolated, err)
assert guided.final["t_condensation"] > collapse_time(0.15).t_collapse
print("claim holds")
