# %% [markdown]
# # 09 — The infinite-class limit: guided sampling tends to the Gaussian pair
#
# **Claim.** At fixed d, K classes with means drawn from N(0, sigma_mu^2 I) tend, as K grows, to the
# Gaussian pair: conditional N(mu_c, s^2 I), unconditional N(0, (sigma_mu^2 + s^2) I) (docs/theory.md
# eqs. 16-18, 23). The distortion of guided sampling (omega = 1, ODE and SDE) then tends to the pair's
# closed form for the same mu_c, finite at every d. K = e^{alpha_max d} (alpha_max = 0.805) is not
# enough: guidance pushes the particles out to where the other classes are sparse, and they stay
# dense only beyond alpha_c(omega) (eq. 49; 1.22 for the ODE and 1.14 for the SDE at omega = 1, more for
# a larger |mu_c|). Beyond alpha_c the mean-field prediction is the pair.
#
# **Finding.** At d = 8 the simulation reaches the pair by K ~ 1e5-1e6 (log K / d = 1.5-1.7; full mode,
# K = 8e5: ODE 1.002 +- 0.006 of the pair, SDE 0.94 +- 0.04: the SDE converges more slowly). At d = 12
# and 16 the K we can afford (5e5 and 4e5) are below e^{alpha_c d}: the distortion is still rising
# (0.88 and 0.56 of the pair, ODE). The mean field at alpha = log K / d and the draw's |mu_c| describes
# the crossover: ODE within 0.01 at d = 12-16 (up to 0.02 just below alpha_c), at d = 8 up to
# 0.045 below it within 0.3 of alpha_c, where finite d rounds the kink; the SDE sits 0.01-0.03 above it at
# small alpha (its known finite-d excess, docs/theory.md eq. 28).

# %%
import time

import numpy as np

import cfgphase as cp
from cfgphase.physics.processes import get_process
from cfgphase.solvers.sampling.timegrid import default_t_max

QUICK, OUT = cp.figures.data.notebook_mode()
plots = cp.figures.plots
S2, MV, OMEGA, KINDS = 0.25, 1.0, 1.0, ("ode", "sde")
B, STEPS, SEEDS = (128, 40, (0, 1, 2, 3)) if QUICK else (256, 60, (0, 1, 2, 3))
ALPHAS = ({8: (0.4, 0.8, 1.2, 1.5), 12: (0.4, 0.8, 0.9), 16: (0.4, 0.6, 0.7)} if QUICK else
          {8: (0.4, 0.8, 1.0, 1.2, 1.4, 1.7), 12: (0.4, 0.7, 0.9, 1.1), 16: (0.4, 0.6, 0.7, 0.8)})
AMAX = cp.theory.condensation.alpha_max(MV, S2)


def pair(mu, kind, t_max):
    """Exact final law of the Gaussian pair for this mu_c (eqs. 16-17): the statistic of eq. 13 from
    its moments (the structured Gaussian fit is exact here), and the mean ratio r and variance v."""
    g = cp.gaussian(cp.GaussianModel(var_c=S2, var_u=MV + S2, mean_c=mu, mean_u=0.0, process="ou"),
                    cp.Guidance(omega=OMEGA), sampler=cp.Sampler(kind, t_max=t_max))
    d, u = mu.size, mu / np.linalg.norm(mu)
    vpar = g.var @ u**2
    vperp = (g.var.sum() - vpar) / (d - 1)
    kl = (g.var.sum() + np.sum((g.mean - mu) ** 2)) / S2 - d + d * np.log(S2) - np.log(vpar) - (d - 1) * np.log(vperp)
    return 0.5 * kl / d, g.mean @ mu / (mu @ mu), g.var.mean()


def kl(r, v, rho):
    """Distortion of N(r mu_c, v I) from N(mu_c, s^2 I) per dimension, rho = |mu_c|^2 / d (eq. 18)."""
    return 0.5 * (v / S2 - 1 - np.log(v / S2)) + rho * (r - 1) ** 2 / (2 * S2)


# %% [markdown]
# Two biases. (1) The estimator: E log of a sample variance with n degrees of freedom is log v - 1/n,
# which would add 1/(d(B-1)) per dimension; the library's distortion statistic removes it (eq. 13; this
# notebook found it). (2) The discretisation, removed here: the pair ends at N(r mu_c, v I) with r, v
# independent of mu_c, so simulating the pair itself (a GaussianModel, cheap) in 256 directions gives
# the scheme's r and v.

# %%
scheme = {}  # sampler -> scheme minus exact (r, v); t_max = 5.8-6.1 from d = 8 to 16 changes them by < 1e-4
t_max = default_t_max(get_process("ou"), 8 * (MV + S2))
unit = cp.GaussianModel(var_c=S2, var_u=MV + S2, mean_c=1.0, mean_u=0.0, d=256, process="ou")
for kind in KINDS:
    _, r, v = pair(np.ones(256), kind, t_max)
    f = cp.simulate(unit, OMEGA, sampler=kind, steps=STEPS, t_max=t_max, particles=2048, seed=1).final
    scheme[kind] = (f["mean_ratio"] - r, (f["var_par"] + 255 * f["var_perp"]) / 256 - v)
    print(f"{kind}: scheme - exact: r {scheme[kind][0]:+.4f} +- {f['mean_ratio_stderr']:.4f}, v {scheme[kind][1]:+.5f} "
          f"+- {f['var_perp_stderr']:.5f}")

runs = {key: [] for key in ("d", "alpha", "K", "sampler", "seed", "rho", "sim", "sim_err", "pair", "mf", "seconds")}
for d, alphas in ALPHAS.items():
    for alpha in alphas:
        K = int(round(np.exp(alpha * d)))
        for seed in SEEDS:
            model = cp.Model(d=d, classes=K, seed=seed)
            t_max, rho = default_t_max(model.process, model.mixture.signal_var), model.target_norm
            for kind in KINDS:
                start = time.perf_counter()
                f = cp.simulate(model, OMEGA, sampler=kind, steps=STEPS, t_max=t_max, particles=B, seed=seed,
                                dtype="float32").final
                seconds = time.perf_counter() - start
                exact, r, v = pair(model.target_mean, kind, t_max)
                shift = kl(r + scheme[kind][0], v + scheme[kind][1], rho) - kl(r, v, rho)
                mf = cp.predict(model, OMEGA, sampler=cp.Sampler(kind, t_max=t_max), target_norm=rho).distortion
                for key, value in zip(runs, (d, alpha, K, kind, seed, rho, f["distortion"] - shift,
                                             f["distortion_stderr"], exact, mf, seconds)):
                    runs[key].append(value)
runs = {key: np.array(value) for key, value in runs.items()}
cp.figures.data.FigureData("infinite-class-limit", runs, dict(B=B, steps=STEPS, omega=OMEGA)).save(
    OUT / "09_infinite_class_limit.h5")

# %% [markdown]
# Per d, log K / d and sampler, mean +- standard error over the draws: the simulated distortion, the
# pair's closed form for the same draws, their difference and ratio, and the mean field at the draw's
# |mu_c|^2 / d (eq. 44). The mean-field curve at rho = 1 (d -> infinity) is the pair beyond alpha_c.

# %%
def se(x):
    return x.std(ddof=1) / np.sqrt(x.size)


table = {}
for d, alphas in ALPHAS.items():
    for a in alphas:
        for k in KINDS:
            sel = (runs["d"] == d) & (runs["alpha"] == a) & (runs["sampler"] == k)
            sim, ref, mf = runs["sim"][sel], runs["pair"][sel], runs["mf"][sel]
            table[d, a, k] = dict(K=runs["K"][sel][0], sim=sim.mean(), pair=ref.mean(), diff=(sim - ref).mean(),
                                  diff_se=se(sim - ref), ratio=(sim / ref).mean(), ratio_se=se(sim / ref),
                                  mf=(sim - mf).mean(), mf_se=se(sim - mf), seconds=runs["seconds"][sel].sum())
theory = {k: cp.theory.meanfield.guided_predictions(np.linspace(0.05, 2.0, 79), OMEGA, sampler=k) for k in KINDS}
alpha_c = {k: theory[k][0].alpha_condensation for k in KINDS}
print(f"alpha_max = {AMAX:.3f}; alpha_c(omega = {OMEGA:g}, rho = 1): ODE {alpha_c['ode']:.3f}, "
      f"SDE {alpha_c['sde']:.3f}")
print(" d logK/d       K     simulated   pair       sim - pair      sim / pair          sim - mf  wall s")
for (d, a, k), t in table.items():
    print(f"{d:>2} {a:>6.2f} {t['K']:>7} {k} {t['sim']:>9.4f} {t['pair']:>6.4f} {t['diff']:>+8.4f} +- "
          f"{t['diff_se']:.4f} {t['ratio']:>6.3f} +- {t['ratio_se']:.3f} {t['mf']:>+8.4f} +- {t['mf_se']:.4f} "
          f"{t['seconds']:>6.1f}")


# %%
@plots.styled
def draw():
    fig, axes = plots.subplots(1, 2, figsize=(plots.WIDTH[2], 2.6), sharey=True)
    colors = plots.palette()
    for ax, k in zip(axes, KINDS):
        ax.plot([p.inputs["alpha"] for p in theory[k]], [p.distortion / theory[k][-1].distortion for p in theory[k]],
                color="k", linewidth=0.8, marker="", linestyle="-", label=r"mean field, $d \to \infty$")
        for j, d in enumerate(ALPHAS):
            pts = [table[d, a, k] for a in ALPHAS[d]]
            ax.errorbar(ALPHAS[d], [p["ratio"] for p in pts], [p["ratio_se"] for p in pts], color=colors[j],
                        marker="o", markersize=3, linestyle="-", linewidth=0.7, label=f"simulation, d = {d}")
        ax.axhline(1.0, color="k", linestyle="--", linewidth=0.7)
        for x, name, style in ((AMAX, r" $\alpha_{max}$", ":"), (alpha_c[k], r" $\alpha_c(\omega)$", "-.")):
            ax.axvline(x, color="0.5", linestyle=style, linewidth=0.8)
            ax.text(x, 0.03, name, fontsize=7)
        ax.set_title(f"{k.upper()}, $\\omega$ = {OMEGA:g}", fontsize=8)
        ax.set_xlabel(r"$\log K / d$ [1]")
    axes[0].set_ylabel("distortion / the Gaussian pair's [1]")
    axes[0].legend(fontsize=6)
    return fig


plots.save(draw(), OUT / "09_infinite_class_limit")

# %% [markdown]
# **Check.** Tolerance: 3 standard errors of the mean over the draws of the means, whose scatter holds
# the particle noise, the finite-K disorder and the draw's |mu_c| (the biases above are removed).
# (1) At d = 8 the largest K agrees with the pair's closed form for the ODE; the SDE converges more
# slowly and is still below it (quick mode, K = 1.6e5: 0.90 +- 0.02 of the pair; full mode, K = 8e5:
# 0.94 +- 0.04), so for the SDE (1) is left to (3), the approach. (2) Every distortion is
# finite. (3) The approach is visible at every d: the ratio to the pair does not fall with K (beyond 2
# combined standard errors) and at the largest K it exceeds that at the smallest by more than 3.
# (4) e^{alpha_max d} classes are not enough: within 0.15 of alpha_max every d is below the pair by more
# than 3 standard errors. (5) Beyond alpha_c the mean field is the pair's closed form (1e-6), and so it
# is at d = 8's largest K for every draw.

# %%
top = table[8, ALPHAS[8][-1], "ode"]
assert abs(top["diff"]) <= 3 * top["diff_se"], top
for k in KINDS:
    for d in ALPHAS:
        pts = [table[d, a, k] for a in ALPHAS[d]]
        assert all(np.isfinite([p["sim"], p["pair"], p["diff_se"]]).all() for p in pts)
        assert all(b["ratio"] > a["ratio"] - 2 * np.hypot(a["ratio_se"], b["ratio_se"]) for a, b in zip(pts, pts[1:]))
        first, last = pts[0], pts[-1]
        assert last["ratio"] - first["ratio"] > 3 * np.hypot(first["ratio_se"], last["ratio_se"]), (d, k)
        near = [p for a, p in zip(ALPHAS[d], pts) if abs(a - AMAX) <= 0.15]
        assert near and all(-p["diff"] > 3 * p["diff_se"] for p in near), (d, k, near)
    limit, _, _ = pair(np.ones(8), k, theory[k][0].inputs["t_max"])
    dense = [p.distortion for p in theory[k] if p.inputs["alpha"] > alpha_c[k]]
    assert dense and np.allclose(dense, limit, rtol=1e-6, atol=0), (k, dense[0], limit)
top = (runs["d"] == 8) & (runs["alpha"] == ALPHAS[8][-1])
assert np.allclose(runs["mf"][top], runs["pair"][top], rtol=1e-6, atol=0)
print("claim holds")
