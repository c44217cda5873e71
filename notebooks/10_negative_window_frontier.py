# %% [markdown]
# # 10 — The negative-guidance window in the exponential regime: separability without variance loss
#
# **Claim** (Ventura et al. 2026; docs/theory.md eqs. 32, 47). With K = e^{alpha d} classes, the window
# max(w0 + slope tau, -1) in VE time tau (negative late, growing as sigma^2 early), tuned to the mean
# ratio E[x . mu_c] / |mu_c|^2 of constant CFG, keeps nearly all of the within-class variance var_perp
# that constant CFG loses: on the (mean_ratio, var_perp) plane it reaches points no constant weight
# reaches, at alpha = 0.2 and 0.4, for the probability-flow ODE (gain 0.02-0.07; it ends within 0.003
# of the variance of unguided sampling). The SDE relaxes most of the loss by itself (after condensation
# it samples the conditional), so the window's gain there, though still positive, is several times
# smaller.
#
# The window is the library's one-parameter family (cfgphase.solvers.design.optimal.baseline_families:
# w0 = -A, slope = A / sigma_pivot^2), tuned by the mean-field theory to constant CFG's mean ratio at
# omega = 0.5 and 1; its predicted var_perp is within 0.003 of the theory-optimal spline's (eq. 47,
# notebook 08). The theory starts where the sampler starts (SNR 1e-4), since the window acts mostly
# there. d = 32 (quick mode: d = 16 and fewer particles).
#
# **Finding.** The tuned window's negative part is negligible (w0 = -A, A = 5e-4 to 0.05): it works
# through its huge early weight (omega ~ 1e2 to 1e4 at t_max): where the signal is weak, a weight moves
# the mean far more, relative to its size, than it shrinks the variance. Its simulated mean ratio falls
# short of constant CFG's (by 0.004-0.01 at d = 32), so the comparison is made at equal mean ratio
# along the constant family's slope. A deeper window (w0 = -0.25 or -0.5, slope tuned) overshoots:
# the theory puts var_perp above s^2 (about 0.26 and 0.28 at alpha = 0.2, omega = 0.5, ODE).

# %%
import numpy as np

import cfgphase as cp
from cfgphase.physics.processes import get_process
from cfgphase.solvers.design.optimal import baseline_families, default_knots, tune_amplitude
from cfgphase.solvers.sampling.timegrid import default_t_max

QUICK, OUT = cp.figures.data.notebook_mode()
plots = cp.figures.plots
OU, S2, KINDS, ALPHAS = get_process("ou"), 0.25, ("ode", "sde"), (0.2, 0.4)
D, OMEGAS, STEPS = (16 if QUICK else 32), (0.5, 1.0), 100
SEEDS = tuple(range(6)) if QUICK else (0, 1, 2)  # quick: 6 draws, the SDE gain is 2.9 SE with 3 (seeds 0-2)
PARTICLES = {0.2: 256, 0.4: 256} if QUICK else {0.2: 512, 0.4: 128}  # K = 3.6e5 at alpha = 0.4, d = 32
T_MAX = default_t_max(OU, D * 1.25)  # the sampler's start: the data's SNR is 1e-4
window = baseline_families(default_knots(OU), OU)["negative window"]


def theory(alpha, kind, schedule):
    return cp.theory.meanfield.guided_prediction(alpha, schedule, sampler=kind, t_max=T_MAX)


# %% [markdown]
# Theory: the constant family over omega in [0, 3], the window family over its amplitude, and the
# window tuned to each constant weight's mean ratio. Simulation: both schedules on the same draws of the
# means and the same noise (common random numbers), so their difference is measured per draw.

# %%
curves, targets, rows = {}, {}, []
for alpha in ALPHAS:
    K = round(np.exp(alpha * D))
    for kind in KINDS:
        const = [theory(alpha, kind, w) for w in np.linspace(0.0, 3.0, 16)]
        wins = [theory(alpha, kind, window(A)) for A in np.geomspace(1e-5, 0.3, 20)]
        curves[alpha, kind] = [np.array([[p.mean_ratio, p.var_perp] for p in c if p.success]).T for c in (const, wins)]
        for omega in OMEGAS:
            pc, near = theory(alpha, kind, omega), theory(alpha, kind, 1.01 * omega)
            sched, pw = tune_amplitude(window, lambda s: theory(alpha, kind, s), pc.mean_ratio, bracket=(0.0, 50.0))
            slope = (near.var_perp - pc.var_perp) / (near.mean_ratio - pc.mean_ratio)  # of the constant family
            targets[alpha, kind, omega] = (sched, slope, (pc.mean_ratio, pc.var_perp, pw.mean_ratio, pw.var_perp))
        for seed in SEEDS:
            model = cp.Model(d=D, classes=K, seed=seed)
            schedules = {(0.0, "none"): 0.0} | {(w, name): g for w in OMEGAS for name, g in
                                                 (("constant", w), ("window", targets[alpha, kind, w][0]))}
            for (omega, name), g in schedules.items():
                f = cp.simulate(model, g, sampler=kind, steps=STEPS, t_max=T_MAX, particles=PARTICLES[alpha],
                                seed=seed, dtype="float32").final
                rows.append((alpha, kind, omega, name, seed, f["mean_ratio"], f["var_perp"]))
rows = np.array(rows, dtype=object)
cp.figures.data.FigureData("negative-window-frontier", {k: np.array(list(rows[:, i])) for i, k in enumerate(
    ("alpha", "sampler", "omega", "schedule", "seed", "mean_ratio", "var_perp"))}, dict(d=D, steps=STEPS)).save(
    OUT / "10_negative_window_frontier.h5")


# %% [markdown]
# Per alpha, sampler and target: predicted and simulated (mean over draws +- standard error)
# (mean_ratio, var_perp) of constant CFG and of the window, and the window's gain at equal mean ratio,
# per draw: var_perp(window) - [var_perp(constant) + slope (mean_ratio(window) - mean_ratio(constant))],
# with the constant family's predicted slope. "Closer": how much nearer the window ends to the variance
# of unguided sampling of the same draw and noise (s^2 up to particle noise, which then cancels).

# %%
def se(x):
    return x.std(ddof=1) / np.sqrt(len(x))


def sim(alpha, kind, omega, name):
    sel = (rows[:, 0] == alpha) & (rows[:, 1] == kind) & (rows[:, 2] == omega) & (rows[:, 3] == name)
    return rows[sel][:, 5].astype(float), rows[sel][:, 6].astype(float)


table = {}
print("alpha sampler omega   A   omega(t_max) predicted: constant | window        simulated: constant | window"
      "                      gain at equal ratio  closer to unguided  window - unguided")
for (alpha, kind, omega), (sched, slope, predicted) in targets.items():
    (rc, vc), (rw, vw) = sim(alpha, kind, omega, "constant"), sim(alpha, kind, omega, "window")
    v0 = sim(alpha, kind, 0.0, "none")[1]
    adjusted = vc + slope * (rw - rc)  # constant CFG moved along its frontier to the window's mean ratio
    gain, closer = vw - adjusted, np.abs(adjusted - v0) - np.abs(vw - v0)
    t = table[alpha, kind, omega] = dict(sim=(rc, vc, rw, vw), gain=(gain.mean(), se(gain)),
                                         closer=(closer.mean(), se(closer)), rest=((vw - v0).mean(), se(vw - v0)))
    print(f"{alpha:5} {kind:>7} {omega:5} {-sched.w0:.1e} {sched(T_MAX):6.0f} "
          f"({predicted[0]:.4f}, {predicted[1]:.4f}) | "
          f"({predicted[2]:.4f}, {predicted[3]:.4f})  "
          + " | ".join(f"({r.mean():.4f}+-{se(r):.4f}, {v.mean():.4f}+-{se(v):.4f})" for r, v in
                       ((rc, vc), (rw, vw)))
          + f"  {t['gain'][0]:+.4f} +- {t['gain'][1]:.4f}  {t['closer'][0]:+.4f} +- {t['closer'][1]:.4f}"
          + f"  {t['rest'][0]:+.5f} +- {t['rest'][1]:.5f}")
for w0 in (-0.25, -0.5):  # deeper windows, slope tuned to the same mean ratio (theory only)
    target = theory(0.2, "ode", 0.5).mean_ratio
    deep, p = tune_amplitude(lambda a: cp.make_schedule("linear", w0=w0, slope=a), lambda g: theory(0.2, "ode", g),
                             target, bracket=(0.0, 50.0))
    print(f"alpha 0.2, ODE, mean ratio {target:.4f}: w0 = {w0}, slope {deep.slope:.2e} -> var_perp {p.var_perp:.4f}")


# %%
@plots.styled
def draw():
    fig, axes = plots.subplots(2, 2, figsize=(plots.WIDTH[2], 4.4))
    colors = plots.palette()
    for i, alpha in enumerate(ALPHAS):
        for j, kind in enumerate(KINDS):
            ax = axes[i, j]
            (const, wins) = curves[alpha, kind]
            ax.plot(*const, color=colors[0], marker="", linestyle="-", label="constant, theory")
            keep = wins[0] <= const[0].max()
            ax.plot(wins[0][keep], wins[1][keep], color=colors[1], marker="", linestyle="--", label="window, theory")
            for k, (name, marker) in enumerate((("constant", "o"), ("window", "s"))):
                pts = [table[alpha, kind, w]["sim"][2 * k:2 * k + 2] for w in OMEGAS]
                ax.errorbar([r.mean() for r, _ in pts], [v.mean() for _, v in pts], [se(v) for _, v in pts],
                            [se(r) for r, _ in pts], color=colors[k], marker=marker, markersize=3, linestyle="",
                            label=f"{name}, simulation")
            r0, v0 = sim(alpha, kind, 0.0, "none")
            ax.plot(r0.mean(), v0.mean(), color="k", marker="x", linestyle="", label="unguided, simulation")
            ax.axhline(S2, color="k", linestyle=":", linewidth=0.7)
            ax.set_title(f"$\\alpha$ = {alpha}, {kind.upper()}, d = {D}", fontsize=8)
            ax.set_xlabel(r"mean ratio $E[x\cdot\mu_c]/|\mu_c|^2$ [1]")
            ax.set_ylabel(r"$v_\perp$ [data units$^2$]")
    axes[0, 0].legend(fontsize=6)
    return fig


plots.save(draw(), OUT / "10_negative_window_frontier")

# %% [markdown]
# **Check** (3 standard errors of the mean over draws of paired differences, common random numbers).
# At every alpha, target and sampler the window's gain at equal mean ratio is positive; for the ODE it
# also ends closer to the unguided variance than constant CFG (a point beyond the constant frontier);
# the SDE's gain is smaller than the ODE's at the same alpha and weight (measured 4 to 9 times smaller
# in quick mode, 6 draws; at least 3 with the earlier generator of the means).

# %%
for alpha in ALPHAS:
    for omega in OMEGAS:
        ode, sde = table[alpha, "ode", omega], table[alpha, "sde", omega]
        assert ode["closer"][0] > 3 * ode["closer"][1], (alpha, omega, ode)
        for t in (ode, sde):
            assert t["gain"][0] > 3 * t["gain"][1], (alpha, omega, t)
        margin = ode["gain"][0] - sde["gain"][0]
        assert margin > 3 * np.hypot(ode["gain"][1], sde["gain"][1]), (alpha, omega, margin)
print("claim holds")
