"""Figures drawn from cfgphase HDF5 files (``cfgphase plot``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

KINDS = ("phase-diagram",)


def plot_file(path, kind, out):
    """Draw figure ``kind`` from the HDF5 file ``path`` into ``out`` (.pdf or .png)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out = Path(out)
    if out.suffix not in (".pdf", ".png"):
        raise ValueError(f"out: expected a .pdf or .png file name, got {out.name}")
    if not Path(path).is_file():
        raise ValueError(f"file: {path} does not exist")
    import matplotlib

    matplotlib.use("Agg")
    fig = phase_diagram(path)
    fig.savefig(out, dpi=200, bbox_inches="tight")
    return out


def phase_diagram(path, threshold=0.05):
    r"""Heatmap of the predicted distortion over (alpha, omega) for the first sampler, the contour
    where it reaches ``threshold``, and the simulated distortion (mean over seeds at the largest
    d, with its standard error across seeds) as markers coloured on the same scale."""
    import h5py
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    with h5py.File(path, "r") as f:
        if f.attrs.get("kind") != "phase_diagram" or f.attrs.get("schedule") != "constant":
            raise ValueError(f"file: {path} is not a constant-omega phase diagram")
        alpha, omega = f["alpha"][()], f["omega"][()]
        sampler = f["sampler"].asstr()[0]
        theory = f["theory_distortion"][:, :, 0]
        sim = None
        if "sim_distortion" in f:
            d = f["d"][()]
            values = f["sim_distortion"][:, :, 0, -1, :]  # (sim_alpha, sim_omega, seed) at the largest d
            sim = (f["sim_alpha"][()], f["sim_omega"][()], np.nanmean(values, axis=-1),
                   np.nanstd(values, axis=-1, ddof=1) / np.sqrt(values.shape[-1]) if values.shape[-1] > 1 else None,
                   int(d[-1]))
    floor = 1e-4
    norm = LogNorm(vmin=floor, vmax=max(np.nanmax(theory), 10 * floor))
    fig, ax = plt.subplots(figsize=(3.4, 2.8), constrained_layout=True)
    mesh = ax.pcolormesh(alpha, omega, np.clip(theory.T, floor, None), norm=norm, cmap="viridis", shading="auto")
    ax.contour(alpha, omega, theory.T, levels=[threshold], colors="white", linewidths=1.0)
    fig.colorbar(mesh, ax=ax, label="distortion [nats / dimension]")
    if sim is not None:
        sa, so, mean, err, d = sim
        A, O = np.meshgrid(sa, so, indexing="ij")
        ax.scatter(A.ravel(), O.ravel(), c=np.clip(mean.ravel(), floor, None), norm=norm, cmap="viridis",
                   edgecolors="red", s=40, label=f"simulation, d = {d}")
        ax.legend(loc="upper right", fontsize=7, frameon=False, labelcolor="white")
    ax.set_xlabel(r"$\alpha = \log K / d$")
    ax.set_ylabel(r"guidance $\omega$ (excess)")
    ax.set_title(f"mean-field distortion ({sampler}); contour {threshold}", fontsize=8)
    return fig
