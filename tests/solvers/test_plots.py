"""Every figure renders from a fixture file, with labelled axes and units, in the house style."""

import numpy as np
import pytest

from solvers import figure_data as fd
from solvers.cli import main
from solvers.plots import DRAW, KINDS, file_kind, plot_file
from solvers.simulate import simulate
from solvers.storage import read_figure_data, write_figure_data, write_simulation
from solvers.sweep import run_sweep
from solvers.sweep_spec import parse_spec


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """One small file per figure kind, made by the same producers as the notebooks."""
    root = tmp_path_factory.mktemp("figures")
    files = {}
    spec = parse_spec({"theory": {"alpha": {"start": 0.0, "stop": 0.4, "num": 5}, "omega": [0.0, 1.0, 2.0],
                                  "sampler": ["ode", "sde"]},
                       "simulation": {"alpha": [0.1], "omega": [1.0, 2.0], "d": [12, 16], "seeds": 2,
                                      "particles": 64, "steps": 20}})
    files["phase-diagram"] = root / "pd.h5"
    run_sweep(spec, files["phase-diagram"], workers=1, progress=False)
    files["trajectory"] = root / "run.h5"
    write_simulation(files["trajectory"], simulate(d=16, alpha=0.2, omega=1.0, particles=64, steps=30))
    small = {
        "potential": fd.potential_landscape(points=201),
        "distortion-vs-d": fd.distortion_versus_d(dims=[8, 12], quick=True),
        "gaussian": fd.gaussian_versus_omega(omegas=np.linspace(-1, 3, 9), sim_omegas=[0.0, 2.0], quick=True),
        "schedules": fd.schedule_comparison(quick=True, steps=30),
        "inverse-probability": fd.inverse_probability_versus_omega(omegas=[0.0, 1.0], particles=500, quick=True),
        "schedule-design": fd.schedule_design(quick=True),
    }
    for kind, data in small.items():
        files[kind] = root / f"{kind}.h5"
        write_figure_data(files[kind], data)
    return files


def test_figure_data_round_trip(fixtures):
    data = read_figure_data(fixtures["schedules"])
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
    plot_file(fixtures[kind], kind, out)
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
