"""Publication figures, drawn from cfgphase HDF5 files or result objects (``cfgphase plot``).

Every figure uses the style file ``cfgphase.mplstyle`` next to this module (single column
3.4 in wide, double column 7.0 in; embedded TrueType fonts in PDF; the colour-blind-safe
Okabe-Ito palette with one marker and line style per series). Axes say what is plotted and in
which units; forward time t decreases from left to right in trajectory plots, the direction of
sampling.

=======================  ==================================================  ==========================
kind                     content                                             drawn from
=======================  ==================================================  ==========================
``phase-diagram``        predicted distortion over (alpha, omega), its       ``cfgphase phase-diagram``
                         contours, simulations with error bars
``trajectory``           overlap, norm and target posterior against t, t*    ``cfgphase simulate --out``
``potential``            effective potential branches at several times       figure data (cfgphase.solvers.figures.data)
``distortion-vs-d``      distortion against d, three regimes of K            figure data
``gaussian``             mean and variance against omega, ODE and SDE         figure data
``schedules``            separability against diversity per schedule         figure data
``inverse-probability``  E[1/p(c|X)] and quantile shifts against omega       figure data
``schedule-design``      learned and theory-optimal schedules vs baselines   figure data
=======================  ==================================================  ==========================
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

STYLE = Path(__file__).with_name("cfgphase.mplstyle")
KINDS = ("phase-diagram", "trajectory", "potential", "distortion-vs-d", "gaussian", "schedules",
         "inverse-probability", "schedule-design")
#: Figure widths in inches: one and two columns of a two-column journal page.
WIDTH = {1: 3.4, 2: 7.0}
DISTORTION = "distortion [nats / dimension]"
TIME = r"forward time $t$ [1] (sampling runs left to right)"
WEIGHT = r"guidance weight $\omega$ [1] (excess; $w = 1 + \omega$)"


def subplots(*args, **kwargs):
    """A new figure and its axes, like ``pyplot.subplots`` but without pyplot: no backend is chosen
    or changed, no global figure list grows (Figure objects display in notebooks and save to any
    format by themselves)."""
    from matplotlib.figure import Figure

    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def palette():
    """The colour cycle of the current style (Okabe-Ito inside :func:`styled`)."""
    import matplotlib

    return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def styled(draw):
    """Run a drawing function inside the style context (so every artist gets the style)."""
    def wrapper(*args, **kwargs):
        import matplotlib.style

        with matplotlib.style.context(STYLE):
            return draw(*args, **kwargs)
    wrapper.__name__, wrapper.__doc__ = draw.__name__, draw.__doc__
    return wrapper


def _load(source):
    """FigureData from an object or an HDF5 file."""
    from cfgphase.solvers.figures.data import FigureData

    return FigureData.load(source) if isinstance(source, (str, Path)) else source


def _plain_ticks(axis):
    """Integer tick labels on a logarithmic axis (dimensions, numbers of classes)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _panel_labels(axes):
    for letter, ax in zip("abcdefgh", axes):
        ax.text(-0.02, 1.02, f"({letter})", transform=ax.transAxes, ha="right", va="bottom", fontweight="bold")


@styled
def phase_diagram(path, thresholds=(0.01, 0.05, 0.2)):
    r"""(a) The phases of guided sampling over (alpha, omega) (ODE if present; docs/theory.md eq. 49):
    the predicted distortion with contours at ``thresholds``; the condensation boundary
    :math:`\alpha_c(\omega)` (solid: beyond it the classes stay dense and the final law is the guided
    bulk's), :math:`\alpha_{max}` (dotted: the same without guidance), the annealed/frozen boundary at t*
    (dashed), the sub-exponential limit alpha -> 0, regions where the theory has no answer (hatched),
    and the simulated points; (b) distortion against omega at each simulated alpha: theory lines and
    simulations (mean over seeds +- standard error) at each d."""
    import h5py

    from cfgphase.solvers.io.hdf5 import check_file

    check_file(path, {"phase_diagram"})
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("schedule") != "constant":
                raise ValueError(f"file: {path} is not a constant-omega phase diagram")
            alpha, omega = f["alpha"][()], f["omega"][()]
            samplers = list(f["sampler"].asstr()[()])
            theory = {s: f["theory_distortion"][:, :, i] for i, s in enumerate(samplers)}
            failed = {s: f["theory_error"].asstr()[()][:, :, i] != "" for i, s in enumerate(samplers)}
            boundary = {s: f["condensation_boundary"][:, i] for i, s in enumerate(samplers)} \
                if "condensation_boundary" in f else {}
            frozen = {s: f["frozen_boundary"][:, :, i] for i, s in enumerate(samplers)} if "frozen_boundary" in f else {}
            model = json.loads(f.attrs["sweep_spec"])["model"]
            model = dict(mean_var=float(model["mean_var"]), class_var=float(model["class_var"]))
            sim = None
            if "sim_distortion" in f:
                sim = dict(alpha=f["sim_alpha"][()], omega=f["sim_omega"][()],
                           sampler=list(f["sim_sampler"].asstr()[()]), d=f["d"][()], values=f["sim_distortion"][()],
                           errors=f["sim_distortion_stderr"][()])
    except (KeyError, IndexError, TypeError, AttributeError, json.JSONDecodeError) as err:
        raise ValueError(f"file: {path} is a damaged phase-diagram file (missing or malformed: {err})") from None
    shapes = {s: v.shape for s, v in theory.items()}
    if alpha.ndim != 1 or omega.ndim != 1 or any(shape != (alpha.size, omega.size) for shape in shapes.values()):
        raise ValueError(f"file: {path} is a damaged phase-diagram file (theory_distortion does not match the "
                         f"alpha, omega and sampler axes)")
    main = "ode" if "ode" in theory else samplers[0]
    fig, axes = subplots(1, 2, figsize=(WIDTH[2], 3.0))
    _phases(fig, axes[0], alpha, omega, theory[main], failed[main], boundary.get(main), frozen.get(main), model,
            main, thresholds)
    ax = axes[1]
    if sim is not None:
        A, O = np.meshgrid(sim["alpha"], sim["omega"], indexing="ij")
        axes[0].scatter(A.ravel(), O.ravel(), facecolors="none", edgecolors="red", s=18, linewidths=0.8)
        colors = palette()
        markers = ["o", "s", "^", "D", "v", "P"]
        fine = np.linspace(omega.min(), omega.max(), omega.size)
        for i, a in enumerate(sim["alpha"]):
            row = np.argmin(np.abs(alpha - a))
            for k, s in enumerate(sim["sampler"]):
                if s not in theory:
                    continue
                ax.plot(fine, np.interp(fine, omega, theory[s][row]), color=colors[i % 8],
                        linestyle="-" if s == "ode" else "--", marker="", label=rf"$\alpha$ = {a:g}, {s.upper()} theory")
                for j, d in enumerate(sim["d"]):
                    values = sim["values"][i, :, k, j, :]
                    mean = np.nanmean(values, axis=-1)
                    err = (np.nanstd(values, axis=-1, ddof=1) / np.sqrt(values.shape[-1])
                           if values.shape[-1] > 1 else sim["errors"][i, :, k, j, 0])
                    ax.errorbar(sim["omega"] + 0.03 * (j - 1), mean, yerr=err, color=colors[i % 8],
                                marker=markers[j % 6], linestyle="", markersize=3,
                                label=f"d = {d}" if i == 0 and k == 0 else None)
        ax.legend(fontsize=6, ncol=1)
        low, high = min(0.0, sim["omega"].min()) - 0.1, 1.3 * sim["omega"].max()
        ax.set_xlim(low, high)
        rows = [np.argmin(np.abs(alpha - a)) for a in sim["alpha"]]
        inside = (omega >= low) & (omega <= high)
        shown = np.concatenate([th[rows][:, inside].ravel() for th in theory.values()] + [np.ravel(sim["values"])])
        ax.set_ylim(min(0.0, np.nanmin(shown)), 1.1 * np.nanmax(shown))
    else:  # theory alone: the distortion against omega across the phases, both samplers
        colors = palette()
        picks = [a for a in (0.1, 0.4, 0.8, 1.2) if alpha.min() <= a <= alpha.max()] or [float(np.median(alpha))]
        for i, a in enumerate(picks):
            row = np.argmin(np.abs(alpha - a))
            for s, values in theory.items():
                ax.plot(omega, values[row], color=colors[i % 8], linestyle="-" if s == "ode" else "--", marker="",
                        label=rf"$\alpha$ = {alpha[row]:.2g}, {s.upper()}")
        ax.set_yscale("log")
        ax.set_ylim(1e-4, None)
        ax.legend(fontsize=6, ncol=1)
    ax.set_xlabel(WEIGHT)
    ax.set_ylabel(DISTORTION)
    axes[0].set_title(f"phases ({main.upper()} theory); red circles: simulated", fontsize=8)
    ax.set_title("lines: theory; points: simulation ($\\pm$ 1 s.e.)" if sim is not None else
                 "theory across the phases (no simulation in the file)", fontsize=8)
    _panel_labels(axes)
    return fig


def _phases(fig, ax, alpha, omega, distortion, failed, boundary, frozen, model, sampler, thresholds):
    """Panel (a) of the phase diagram: distortion, its contours, the phase lines and their labels."""
    from matplotlib.colors import LogNorm

    from cfgphase.solvers.theory.condensation import alpha_max

    floor = 1e-4
    finite = np.isfinite(distortion) & ~failed
    norm = LogNorm(vmin=floor, vmax=max(np.nanmax(np.where(finite, distortion, np.nan)), 10 * floor))
    shown = np.where(finite, np.clip(distortion, floor, None), np.nan)
    mesh = ax.pcolormesh(alpha, omega, shown.T, norm=norm, shading="auto", rasterized=True)
    if np.any(~finite):  # where the theory has no answer, say so
        ax.contourf(alpha, omega, (~finite).T.astype(float), levels=[0.5, 1.5], colors="none", hatches=["////"])
        a, w = np.argwhere(~finite)[len(np.argwhere(~finite)) // 2]
        ax.text(alpha[a], omega[w], "no prediction", fontsize=6, ha="center", va="center",
                bbox=dict(boxstyle="round", fc="white", ec="none", alpha=0.8))
    contours = ax.contour(alpha, omega, np.where(finite, distortion, np.nan).T, levels=list(thresholds),
                          colors="white", linewidths=0.6)
    ax.clabel(contours, fmt=lambda v: f"{v:g}", fontsize=6)
    fig.colorbar(mesh, ax=ax, label=f"{DISTORTION}")
    top = alpha_max(model["mean_var"], model["class_var"])
    lines = dict(color="k", linewidth=1.0)
    if boundary is not None:
        ax.plot(np.minimum(boundary, alpha.max()), omega, linestyle="-", marker="", label=r"condensation $\alpha_c(\omega)$",
                **lines)
        dense = boundary < alpha.max()
        if np.any(dense):
            j = np.flatnonzero(dense)[len(np.flatnonzero(dense)) * 3 // 4]
            ax.text(0.5 * (boundary[j] + alpha.max()), omega[j], "dense classes:\nno condensation\n(Gaussian pair)",
                    fontsize=6, ha="center", va="center")
    if top <= alpha.max():
        ax.axvline(top, linestyle=":", label=r"$\alpha_{max}$ (no guidance)", **lines)
    if frozen is not None and np.any(np.isfinite(frozen)):
        a_pts = np.repeat(alpha, frozen.shape[1])
        w_pts = frozen.ravel()
        keep = np.isfinite(w_pts)
        ax.plot(a_pts[keep], w_pts[keep], linestyle="none", marker=".", markersize=1.5, color="k",
                label="annealed / frozen at $t^*$")
        if omega.min() < 0 < omega.max():
            ax.text(0.3 * top, 0.5 * omega.min(), "frozen at $t^*$", fontsize=6, ha="center")
            ax.text(0.3 * top, 0.5 * omega.max(), "annealed at $t^*$", fontsize=6, ha="center")
    ax.annotate("sub-exponential $K$:\nno distortion", xy=(0.0, omega.min() + 0.9 * (omega.max() - omega.min())),
                xytext=(0.08 * alpha.max(), omega.min() + 0.9 * (omega.max() - omega.min())), fontsize=6,
                va="center", arrowprops=dict(arrowstyle="->", linewidth=0.6))
    ax.set_xlim(alpha.min(), alpha.max())
    ax.set_ylim(omega.min(), omega.max())
    ax.legend(fontsize=5, loc="lower right", framealpha=0.9)
    ax.set_xlabel(r"$\alpha = \log K / d$ [nats per dimension]")
    ax.set_ylabel(WEIGHT)


@styled
def trajectory(source):
    r"""(a) Overlap ratio :math:`r = x\cdot\mu_c/|\mu_c|^2` and :math:`q = |x|^2/d`; (b) target posterior
    :math:`\pi_c` and posterior entropy, against forward time, with the simulated :math:`t^*` (dashed)
    and, for constant CFG on the default mixture, the mean-field :math:`t^*` (dotted, eq. 24)."""
    times, series, params = _trajectory_series(source)
    fig, axes = subplots(1, 2, figsize=(WIDTH[2], 2.5))
    rho = params.get("target_norm") or 1.0
    labels = {"m": r"overlap ratio $r$", "q": r"$q = |x|^2/d$",
              "target_posterior": r"target posterior $\pi_c$", "posterior_entropy": "posterior entropy"}
    right = axes[1].twinx()
    colors = palette()
    for ax, name, color, style in ((axes[0], "m", colors[0], "-"), (axes[0], "q", colors[1], "--"),
                                   (axes[1], "target_posterior", colors[0], "-"),
                                   (right, "posterior_entropy", colors[1], "--")):
        if name not in series:
            continue
        mean, err = series[name]
        if name == "m":
            mean, err = mean / rho, err / rho
        ax.plot(times, mean, marker="", color=color, linestyle=style, label=labels[name])
        ax.fill_between(times, mean - 2 * err, mean + 2 * err, color=color, alpha=0.25, linewidth=0)
    axes[0].set_ylabel("order parameter [1]")
    axes[1].set_ylabel(r"target posterior $\pi_c$ [1]")
    right.set_ylabel("posterior entropy [nats]")
    right.spines["right"].set_visible(True)
    t_sim = params.get("t_condensation")
    t_theory = _theory_condensation(params)
    marks = []
    for ax in axes:
        ax.set_xlim(times.max(), times.min())
        ax.set_xlabel(TIME)
        if t_sim is not None and np.isfinite(t_sim):
            ax.axvline(t_sim, color="0.3", linestyle="--", linewidth=0.8, label=r"$t^*$ simulated")
        if t_theory is not None:
            ax.axvline(t_theory, color="0.3", linestyle=":", linewidth=1.0, label=r"$t^*$ mean-field")
    handles = sum((a.get_legend_handles_labels()[0] for a in (axes[1], right)), [])
    axes[1].legend(handles, [h.get_label() for h in handles], loc="center left")
    axes[0].legend(loc="upper left")
    for value, name in ((t_sim, "simulated"), (t_theory, "mean-field")):
        if value is not None and np.isfinite(value):
            marks.append(f"$t^*$ {name} {value:.3f}")
    head = ", ".join(f"{k} = {params[k]}" for k in ("d", "K", "omega", "sampler") if params.get(k) is not None)
    fig.suptitle("; ".join([head] + marks))
    _panel_labels(axes)
    return fig


def _trajectory_series(source):
    """(times, {name: (mean, stderr)}, params) from a Simulation or a ``simulate --out`` file."""
    if isinstance(source, (str, Path)):
        from cfgphase.solvers.io.hdf5 import check_file, open_dataset

        check_file(source, {"simulation"})
        ds = open_dataset(source)
        try:
            series = {n: (ds[n].values, ds[n + "_stderr"].values) for n in ds.data_vars
                      if ds[n].dims == ("time",) and n + "_stderr" in ds}
            params = {k: (None if isinstance(v, float) and np.isnan(v) else v.item() if hasattr(v, "item") else v)
                      for k, v in ds.attrs.items()}
            params["t_condensation"] = float(ds["t_condensation"])
            return ds["time"].values, series, params
        except KeyError as err:
            raise ValueError(f"file: {source} is a damaged simulation file (missing {err})") from None
    series = {n: source.observable(n) for n in source.trajectory}
    params = dict(source.params, t_condensation=source.final.get("t_condensation"))
    return source.times, series, params


def _theory_condensation(params):
    if params.get("schedule") != "constant" or not str(params.get("rule", "CFG()")).startswith("CFG(") \
            or params.get("omega") is None or params.get("modes") not in (1, None) \
            or params.get("disorder", params.get("means")) != "random":  # "means" before the generated means
        return None
    from cfgphase.solvers.theory.meanfield import guided_prediction

    try:
        pred = guided_prediction(params["alpha_effective"], params["omega"], process=params["process"],
                                 sampler=params["sampler"], mean_var=params["mean_var"],
                                 class_var=params["class_var"], target_norm=params.get("target_norm"))
    except (ValueError, KeyError, TypeError):
        return None
    return pred.t_condensation


@styled
def potential(source):
    r"""Effective potential :math:`V(r) = -\max(\text{target}, \text{others})` (eq. 26) against the overlap
    ratio, one panel per time: the target branch (dotted), the other classes' branch (dashed), the
    potential (solid) and the bulk overlap (grey line). Before :math:`t^*` the bulk sits on the
    other classes' branch; after it, on the target's."""
    data = _load(source)
    times = data["times"]
    fig, axes = subplots(1, times.size, figsize=(WIDTH[2], 2.2), sharey=True)
    for ax, i in zip(np.atleast_1d(axes), range(times.size)):
        ax.plot(data["r"], -data["target"][i], color="#D55E00", linestyle=":", marker="", label="target class")
        ax.plot(data["r"], -data["others"][i], color="#0072B2", linestyle="--", marker="", label="other classes")
        ax.plot(data["r"], -np.maximum(data["target"][i], data["others"][i]), color="k", linestyle="-", marker="",
                linewidth=0.9, label="potential")
        ax.axvline(data["r_bulk"][i], color="0.5", linewidth=0.7)
        star = r" $= t^*$" if np.isclose(times[i], data["t_star"]) else ""
        ax.set_title(rf"$t$ = {times[i]:.2f}{star}")
        ax.set_xlabel(r"overlap ratio $r$ [1]")
    axes[0].set_ylabel(r"$V(r) = -\frac{1}{d}\log p_t$ [nats / dim.]")
    axes[0].legend(fontsize=6)
    p = data.params
    fig.suptitle(rf"$\alpha$ = {p['alpha']}, $\omega$ = {p['omega']}, {p['sampler'].upper()}; grey: bulk overlap; "
                 r"sampling runs left to right")
    _panel_labels(np.atleast_1d(axes))
    return fig


@styled
def distortion_vs_d(source):
    """Distortion against d for fixed, polynomial and exponential K: mean-field theory (lines) and
    simulation (mean over draws of the means +- standard error)."""
    data = _load(source)
    fig, ax = subplots(figsize=(WIDTH[1], 2.6))
    p = data.params
    labels = {"fixed": f"K = {p['fixed']}", "polynomial": f"K = d^{p['power']}",
              "exponential": rf"K = e^{{{p['alpha']} d}}"}
    colors = palette()
    for i, regime in enumerate(("fixed", "polynomial", "exponential")):
        c = colors[i]
        ax.plot(data["d_theory"], data[f"theory_{regime}"], color=c, marker="", linestyle="-")
        ax.errorbar(data["d"], data[f"sim_{regime}"], yerr=data[f"sim_{regime}_err"], color=c, linestyle="",
                    marker="os^"[i], label=f"${labels[regime]}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo, hi = np.log2(data["d_theory"].min()), np.log2(data["d_theory"].max())
    ax.set_xticks(2.0 ** np.arange(np.ceil(lo), np.floor(hi) + 1))
    _plain_ticks(ax.xaxis)
    ax.set_xlabel("dimension $d$ [1]")
    ax.set_ylabel(DISTORTION)
    ax.set_title(rf"$\omega$ = {p['omega']}, {p['sampler'].upper()}; lines: theory, points: simulation")
    ax.legend(ncol=1)
    return fig


@styled
def gaussian(source):
    r"""Final mean and variance of one eigendirection against omega: exact ODE and SDE solutions
    (eqs. 16-17, lines), simulations (points, +- 2 standard errors) and, for VE, the closed form
    :math:`\lambda_c(\lambda_c/\lambda_u)^\omega`."""
    data = _load(source)
    fig, axes = subplots(1, 2, figsize=(WIDTH[2], 2.5))
    p = data.params
    for k, sampler in enumerate(("ode", "sde")):
        for ax, name in zip(axes, ("mean", "var")):
            line, = ax.plot(data["omega"], data[f"{name}_{sampler}"], marker="", linestyle="-" if k == 0 else "--",
                            label=f"exact {sampler.upper()}")
            ax.errorbar(data["sim_omega"], data[f"sim_{name}_{sampler}"], yerr=2 * data[f"sim_{name}_{sampler}_err"],
                        color=line.get_color(), linestyle="", marker="os"[k], label=f"simulated {sampler.upper()}")
    if "var_closed_form" in data.arrays:
        axes[1].plot(data["omega"], data["var_closed_form"], color="k", linestyle=":", marker="",
                     label=r"$\lambda_c(\lambda_c/\lambda_u)^\omega$")
    axes[0].axhline(p["mean_gap"], color="0.5", linewidth=0.6)
    axes[1].axhline(p["lambda_c"], color="0.5", linewidth=0.6)
    axes[1].set_yscale("log")
    axes[0].set_ylabel(r"final mean [data units]")
    axes[1].set_ylabel(r"final variance [data units$^2$]")
    for ax in axes:
        ax.set_xlabel(WEIGHT)
        ax.legend()
    fig.suptitle(rf"{p['process'].upper()}: $\lambda_c$ = {p['lambda_c']}, $\lambda_u$ = {p['lambda_u']}, "
                 f"mean gap {p['mean_gap']} (grey: the conditional)")
    _panel_labels(axes)
    return fig


@styled
def schedules(source):
    """Separability (mean ratio) against diversity (orthogonal variance relative to the class
    variance), one point per schedule at the same time-averaged weight; error bars 1 standard error."""
    data = _load(source)
    fig, ax = subplots(figsize=(WIDTH[1], 2.8))
    s2 = data.params["class_var"]
    colors = palette()
    for i, name in enumerate(data["schedule"]):
        ax.errorbar(data["var_perp"][i] / s2, data["mean_ratio"][i], xerr=data["var_perp_err"][i] / s2,
                    yerr=data["mean_ratio_err"][i], color=colors[i % 8], marker="osD^vPX*"[i % 8], linestyle="",
                    label=str(name))
    ax.axvline(1.0, color="0.5", linewidth=0.6)
    ax.axhline(1.0, color="0.5", linewidth=0.6)
    ax.set_xlabel(r"diversity: $v_\perp / s^2$ [1]")
    ax.set_ylabel(r"separability: $E[x\cdot\mu_c]/|\mu_c|^2$ [1]")
    p = data.params
    ax.set_title(rf"mean $\omega$ = {p['mean_omega']}, d = {p['d']}, $\alpha$ = {p['alpha']}, {p['sampler'].upper()}")
    ax.legend(fontsize=6)
    return fig


@styled
def inverse_probability(source):
    """(a) E[1/p(c|X)] against omega with its 95 % bootstrap interval; (b) shift of each quantile
    of p(c|X) from the exact conditional's, +- 2 standard errors."""
    data = _load(source)
    fig, axes = subplots(1, 2, figsize=(WIDTH[2], 2.5))
    w = data["omega"]
    axes[0].errorbar(w, data["inv_prob"], yerr=[data["inv_prob"] - data["inv_prob_ci_low"],
                                                data["inv_prob_ci_high"] - data["inv_prob"]], marker="o")
    axes[0].set_ylabel(r"$E[1/p(c|X)]$ [1]")
    levels = [k for k in data.arrays if k.startswith("p_target_q") and k.endswith("_shift")]
    for key in levels:
        axes[1].errorbar(w, data[key], yerr=2 * data[key + "_stderr"], label=f"{int(key[10:12])} % quantile")
    axes[1].axhline(0.0, color="0.5", linewidth=0.6)
    axes[1].set_ylabel(r"quantile of $p(c|X)$ minus exact [1]")
    axes[1].legend(ncol=2, fontsize=6)
    for ax in axes:
        ax.set_xlabel(WEIGHT)
    _panel_labels(axes)
    return fig


@styled
def schedule_design(source):
    """(a) Exact scores, K = e^{alpha d}: separability against distortion, every schedule tuned by
    the theory to one predicted mean ratio. (b) Degraded conditional model: energy distance to the
    true conditional per schedule (each tuned on other seeds). Error bars 1 standard error over seeds."""
    data = _load(source)
    fig, axes = subplots(1, 2, figsize=(WIDTH[2], 2.8))
    colors = palette()
    setting = np.asarray(data["setting"]).astype(str)
    names = np.asarray(data["schedule"]).astype(str)
    order = list(dict.fromkeys(names))  # one colour and marker per schedule in both panels
    style = {n: (colors[j % 8], "osD^vPX*"[j % 8]) for j, n in enumerate(order)}
    for i in np.flatnonzero(setting == "exact"):
        axes[0].errorbar(data["distortion"][i], data["mean_ratio"][i], xerr=data["distortion_err"][i],
                         yerr=data["mean_ratio_err"][i], color=style[names[i]][0], marker=style[names[i]][1],
                         linestyle="", label=names[i])
    axes[0].axhline(data.params["target"], color="0.5", linewidth=0.6, linestyle="--")
    axes[0].set_xlabel(DISTORTION)
    axes[0].set_ylabel(r"separability: $E[x\cdot\mu_c]/|\mu_c|^2$ [1]")
    axes[0].set_title(rf"exact scores, d = {data.params['d']}, $\alpha$ = {data.params['alpha']}", fontsize=8)
    axes[0].legend(fontsize=6)
    degraded = np.flatnonzero(setting == "degraded")
    axes[1].barh(np.arange(degraded.size), data["energy_distance"][degraded], xerr=data["energy_distance_err"][degraded],
                 color=[style[names[i]][0] for i in degraded])
    axes[1].set_yticks(np.arange(degraded.size), names[degraded])
    axes[1].invert_yaxis()
    axes[1].set_xlabel("energy distance to the true conditional [1]")
    axes[1].set_title("degraded conditional model", fontsize=8)
    _panel_labels(axes)
    return fig


DRAW = {"schedule-design": schedule_design, "phase-diagram": phase_diagram, "trajectory": trajectory, "potential": potential,
        "distortion-vs-d": distortion_vs_d, "gaussian": gaussian, "schedules": schedules,
        "inverse-probability": inverse_probability}


def file_kind(path):
    """The figure kind a cfgphase HDF5 file holds; ValueError naming ``file`` for other files."""
    import h5py

    from cfgphase.solvers.io.hdf5 import check_file

    kind = check_file(path, {"phase_diagram", "simulation", "figure"})
    if kind == "phase_diagram":
        return "phase-diagram"
    if kind == "simulation":
        return "trajectory"
    with h5py.File(path, "r") as f:
        held = f.attrs.get("figure_kind")
    if held not in KINDS:
        raise ValueError(f"file: {path} holds figure data of an unknown kind {held!r}")
    return str(held)


def plot(source, kind=None, out=None, overwrite=False):
    """Draw a figure from a cfgphase file or result, return it, and save it to ``out`` if given.

    ``source``: an HDF5 file (a phase diagram, a ``simulate --out`` file or figure data) or an
    object (a Simulation, FigureData). ``kind``: the figure (default: the one the source holds;
    :data:`KINDS`). ``out``: .pdf, .png or .svg (no suffix: both .pdf and .png); an existing figure
    is replaced only with ``overwrite``.
    """
    if out is not None:
        if not str(out):
            raise ValueError("out: empty file name")
        out = Path(out)
        if out.suffix not in (".pdf", ".png", ".svg", ""):
            raise ValueError(f"out: expected a .pdf, .png or .svg file name, got {out.name}")
        if out.is_dir():
            raise ValueError(f"out: {out} is a directory")
        if not out.parent.is_dir():
            raise ValueError(f"out: directory {out.parent} does not exist")
        for target in ([out] if out.suffix else [out.with_suffix(".pdf"), out.with_suffix(".png")]):
            if target.exists() and not overwrite:
                raise ValueError(f"out: {target} exists (pass --overwrite to replace it)")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(source, (str, Path)):
        if not str(source):
            raise ValueError("file: empty file name")
        held = file_kind(source)
    else:
        held = "trajectory" if hasattr(source, "trajectory") else getattr(source, "kind", None)
    kind = held if kind is None else kind
    if kind != held:
        raise ValueError(f"kind: {source} holds a {held} figure, not {kind}")
    try:
        fig = DRAW[kind](source)
    except KeyError as err:
        raise ValueError(f"file: {source} lacks the data of a {kind} figure (missing {err})") from None
    except (IndexError, TypeError, ValueError) as err:
        if not isinstance(source, (str, Path)) or str(err).startswith("file:"):
            raise
        # arrays of the wrong shape or type in a file: bad input, reported as such
        raise ValueError(f"file: {source} holds malformed data for a {kind} figure ({err})") from None
    if out is not None:
        save(fig, out)
    return fig


def save(fig, out):
    """Save in the house style (vector PDF with embedded fonts; 300 dpi PNG). A path without a
    suffix gets both a .pdf and a .png."""
    import matplotlib.style

    out = Path(out)
    with matplotlib.style.context(STYLE):
        for path in ([out] if out.suffix else [out.with_suffix(".pdf"), out.with_suffix(".png")]):
            fig.savefig(path)
