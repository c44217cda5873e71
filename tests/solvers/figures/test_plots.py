"""Every figure renders from a fixture file, with labelled axes and units, in the house style."""

import numpy as np
import pytest

import cfgphase as cp
from cfgphase.solvers.cli import main
from cfgphase.solvers.figures import data as fd
from cfgphase.solvers.figures.plots import DRAW, KINDS, file_kind


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """One small file per figure kind, made by the same producers as the notebooks."""
    root = tmp_path_factory.mktemp("figures")
    files = {}
    config = {"theory": {"alpha": {"start": 0.0, "stop": 0.4, "num": 5}, "omega": [0.0, 1.0, 2.0],
                         "sampler": ["ode", "sde"]},
              "simulation": {"alpha": [0.1], "omega": [1.0, 2.0], "d": [12, 16], "seeds": 2, "particles": 64,
                             "steps": 20}}
    files["phase-diagram"] = cp.phase_diagram(config, root / "pd.h5", workers=1).path
    files["trajectory"] = cp.save(cp.simulate(cp.Model(d=16, alpha=0.2), 1.0, particles=64, steps=30), root / "run.h5")
    small = {
        "potential": fd.potential_landscape(points=201),
        "distortion-vs-d": fd.distortion_versus_d(dims=[8, 12], quick=True),
        "gaussian": fd.gaussian_versus_omega(omegas=np.linspace(-1, 3, 9), sim_omegas=[0.0, 2.0], quick=True),
        "schedules": fd.schedule_comparison(quick=True, steps=30),
        "inverse-probability": fd.inverse_probability_versus_omega(omegas=[0.0, 1.0], particles=500, quick=True),
        "schedule-design": _schedule_design_layout(),
    }
    for kind, data in small.items():
        files[kind] = root / f"{kind}.h5"
        data.save(files[kind])
    return files


def _schedule_design_layout():
    """The arrays of a schedule-design figure (fd.schedule_design runs two tuning campaigns, half a
    minute even in quick mode; notebook 08 runs it): the drawing is tested on numbers of that layout."""
    rows = [("exact", "none"), ("exact", "constant"), ("exact", "theory-optimal"), ("degraded", "none"),
            ("degraded", "learned")]
    values = np.linspace(0.01, 0.2, len(rows))
    arrays = {"setting": np.array([r[0] for r in rows]), "schedule": np.array([r[1] for r in rows])}
    for key in ("distortion", "mean_ratio", "var_perp", "accuracy", "energy_distance"):
        arrays[key], arrays[key + "_err"] = 1.0 + values, 0.01 * values
    return fd.FigureData("schedule-design", arrays, dict(target=1.1, d=32, alpha=0.1))


def test_figure_data_round_trip(fixtures):
    data = fd.FigureData.load(fixtures["schedules"])
    assert data.kind == "schedules" and "negative window" in list(data["schedule"])
    assert data.params["mean_omega"] == 1.0 and data["mean_ratio"].shape == data["schedule"].shape


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_with_labelled_axes_and_units(fixtures, kind, tmp_path):
    assert file_kind(fixtures[kind]) == kind
    fig = DRAW[kind](fixtures[kind])
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert axes
    for ax in axes:
        if not ax.has_data():
            continue
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            if label:  # a twin axis may share the x label of its host
                assert "[" in label and "]" in label, (kind, label)
        assert ax.get_xlabel() or any(a.get_xlabel() for a in axes), kind
    out = tmp_path / f"{kind}.pdf"
    cp.plot(fixtures[kind], kind=kind, out=out)
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF") and b"/FontFile2" in pdf  # TrueType fonts embedded (pdf.fonttype 42)
    assert b"/Subtype /Type3" not in pdf


def test_plot_command(fixtures, tmp_path, capsys):
    out = tmp_path / "pd.png"
    assert main(["plot", str(fixtures["phase-diagram"]), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and "phase-diagram" in capsys.readouterr().out
    assert main(["plot", str(fixtures["gaussian"]), "--kind", "schedules", "--out", str(tmp_path / "x.pdf")]) == 2
    err = capsys.readouterr().err
    assert "kind" in err and err.count("\n") == 1 and not (tmp_path / "x.pdf").exists()
    assert main(["plot", str(fixtures["gaussian"]), "--out", str(tmp_path / "x.jpg")]) == 2
    assert "out" in capsys.readouterr().err
