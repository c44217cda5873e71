"""benchmarks/: what the benchmarks measure and report (no timing is asserted here), and the finite-size
campaign's stored draws and report."""

import json

import numpy as np
import pytest

from benchmarks import score as bench
from benchmarks.bench_score import main


def test_quick_bench_reports_every_case_with_environment_and_ratios(capsys):
    code = main(["--quick", "--json", "--quiet", "--repeats", "1", "--methods", "gemm", "softmax",
                 "cfgphase", "blocked", "--dtype", "float64", "--operations", "score"])
    record = json.loads(capsys.readouterr().out)
    assert code == 0
    env = record["environment"]
    assert env["blas"] and env["usable_cores"] >= 1 and env["cpu"] and "vector_extensions" in env
    assert isinstance(env["kernel_warnings"], list)
    rows = record["results"]
    assert len(rows) == 4 * 2  # methods x regimes
    for row in rows:
        assert row["seconds"] > 0 and row["gflops"] > 0 and row["peak_mib"] is not None
        assert row["particle_steps_per_s"] == row["B"] / row["seconds"]
        assert row["peak_fraction"] == pytest.approx(row["gflops"] / row["peak_gflops"]) and row["peak_gflops"] > 0
    cfg = [r for r in rows if r["method"] == "cfgphase"]
    assert all(0 <= r["skipped_chunks"] <= 1 for r in cfg)
    assert {r["regime"] for r in record["ratios"]} == {"spread", "condensed"}
    assert all(r["vs_blocked"] > 0 for r in record["ratios"])


def test_blocked_method_runs_the_kernels_gemms_in_its_blocks():
    """(g) computes, per row block of kernel.ROW_BLOCK rows, the chunk GEMMs X M_c^T and S M_c; with one
    chunk (K below the kernel's chunk length) its output is (X M^T) M, row block by row block."""
    import numpy as np

    from cfgphase.physics.mixture import GaussianMixture
    from cfgphase.physics.processes import OU

    model = GaussianMixture.random(8, classes=50, seed=0)
    x = np.random.default_rng(0).standard_normal((700, 8))  # three row blocks on 2 threads
    est = bench._Estimator("blocked", model, OU(), 1.0, np.dtype("float64"), target=0)
    np.testing.assert_allclose(est.unconditional(x, 1.0), (x @ model.means.T) @ model.means, rtol=1e-12)


def test_cases_beyond_the_memory_budget_are_skipped_with_the_reason(capsys):
    code = main(["--quick", "--json", "--quiet", "--repeats", "1", "--methods", "broadcast",
                 "--memory-gb", "0.001", "--dtype", "float32"])
    rows = json.loads(capsys.readouterr().out)["results"]
    assert code == 0 and rows and all("memory budget" in r["skipped"] for r in rows)


def test_bad_bench_input_exits_2(capsys):
    assert main(["--B", "0", "--quiet"]) == 2
    assert "B" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--methods", "cuda", "--quick", "--quiet"])
    assert exit_.value.code == 2 and "methods" in capsys.readouterr().err


def test_readme_table_is_read_off_the_record():
    """Synthetic timings: each cell is the stated ratio or fraction of the GEMM peak, a skipped rival
    shows as '–', and the peak targets count the cases they cover."""
    seconds = {"gemm": 2.0, "softmax": 4.0, "torch": 5.0, "cfgphase": 2.5}
    fraction = {"float32": 0.80, "float64": 0.90}
    results = []
    for shape in ((8, 16, 4), (1024, 65536, 64)):
        for dtype in ("float32", "float64"):
            for regime in ("spread", "condensed"):
                for op in ("score", "step"):
                    for method, s in seconds.items():
                        row = dict(B=shape[0], K=shape[1], d=shape[2], dtype=dtype, regime=regime, operation=op,
                                   method=method)
                        if method in ("softmax", "torch") and dtype == "float64":
                            row["skipped"] = "needs 1.0 GiB > memory budget 0.5 GiB"
                        else:
                            row.update(seconds=s * (0.5 if regime == "condensed" and method == "cfgphase" else 1),
                                       peak_mib=3.0 if method == "cfgphase" else 7.0,
                                       peak_fraction=fraction[dtype] if method == "cfgphase" else 0.5)
                        results.append(row)
    table = bench.readme_table(dict(results=results, ratios=bench.ratios(results)))
    row = table.splitlines()[2]
    assert row == "| 8 | 16 | 4 | 2500.0 / 2500.0 | 80 / 90 % | 1.25 / 1.25 | 0.62 / 0.62 | 0.62 / – | 3 / 7 |"
    assert "spread within 1.3x of (a) in 4 of 4 cases (max 1.25)" in table
    assert "faster than the best of (c), (d) in 4 of 4 (max 0.62)" in table
    assert "B >= 1024, K >= 65536, d >= 64: at least 85 % in 1 of 2 cases (min 80 %)" in table
    assert "faster than torch SDPA in 2 of 2 cases (max time ratio 0.50)" in table


def test_the_methods_of_a_case_are_timed_in_alternating_rounds(monkeypatch):
    """Load from elsewhere must hit every method of a case alike: their timed runs interleave."""
    log = []

    def fake_call(method, model, process, t, dtype, B, operation):
        return (lambda: log.append(method)), None, None

    monkeypatch.setattr(bench, "_call", fake_call)
    monkeypatch.setattr(bench, "_square_gemm", lambda dtype, n: lambda: log.append("peak"))
    monkeypatch.setattr(bench, "SETTLE_SECONDS", 0.0)
    out, peak = bench._measure_case(["gemm", "softmax"], None, None, 1.0, "float64", 8, "score", 3, False)
    assert {m: r["repeats"] for m, r in out.items()} == {"gemm": 50, "softmax": 50}  # fast calls: 50 runs
    assert peak > 0 and log.count("peak") == 51  # the case's own GEMM peak: a warm-up run, then 50 timed
    timed = log[6:]  # after the peak's warm-up and first run, and each method's memory probe and first run
    switches = sum(a != b for a, b in zip(timed, timed[1:]))
    assert switches == 3 * bench.ROUNDS - 1  # peak, gemm, softmax in each round


def test_a_blas_running_older_kernels_than_the_cpu_is_flagged(monkeypatch):
    """The GEMM peak decides every fraction: OpenBLAS forced to Haswell kernels on an AVX-512 CPU
    (OPENBLAS_CORETYPE) roughly halves it, so the record says so; MKL, which reports no kernel set, is flagged
    when MKL_ENABLE_INSTRUCTIONS or MKL_CBWR may hold it back."""
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    for name in bench.MKL_LIMITS:
        monkeypatch.delenv(name, raising=False)
    avx512, avx2 = dict(vector_level=3), dict(vector_level=2)
    haswell = [dict(library="openblas", architecture="Haswell")]
    assert bench.kernel_warnings(avx512, haswell) == [
        "openblas runs its Haswell kernels on a CPU with AVX-512 (OPENBLAS_CORETYPE=Haswell)"]
    assert bench.kernel_warnings(avx2, haswell) == []
    assert bench.kernel_warnings(avx512, [dict(library="openblas", architecture="SkylakeX")]) == []
    assert bench.kernel_warnings(avx512, [dict(library="mkl", architecture=None)]) == []
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")  # MKL reports no kernel set: its limits are flagged
    assert bench.kernel_warnings(avx512, [dict(library="mkl", architecture=None)]) == [
        "mkl may run older kernels than the CPU supports: MKL_ENABLE_INSTRUCTIONS=AVX2"]


def test_the_finite_size_campaign_rebuilds_its_stored_draws():
    """The campaign's rows are reproducible: the means rebuilt from a row's seed give its stored
    target_norm, and the probability flow re-run on them gives its stored statistics (to rounding; the
    distortion differs by 0.1's missing debiasing, eq. 13, so it is left out)."""
    from benchmarks.finite_size import SIMULATIONS, _read, _stored_draw, simulate

    rows = _read(SIMULATIONS)
    draws = {(r["d"], r["K"], r["seed"]): r for r in rows if r["K"] <= 3000}
    assert len(draws) >= 40
    for row in draws.values():
        _stored_draw(row)  # raises on a target_norm that is not the row's
    with pytest.raises(ValueError, match="target_norm"):
        _stored_draw(dict(rows[0], seed=rows[0]["seed"] + 1))
    row = next(r for r in rows if r["d"] == 16 and r["K"] == 5 and r["sampler"] == "ode" and r["omega"] == 1.0)
    new = simulate([row])[0]
    for key in ("mean_ratio", "var_par", "var_perp", "t_condensation", "accuracy"):
        assert new[key] == pytest.approx(row[key], rel=1e-9, abs=1e-12), key


def test_the_finite_size_report_is_current():
    """docs/finite_size.md is what `python -m benchmarks.finite_size --report-only` writes from the stored
    campaign and replication, and its null calibration is the sign-flip one: the per-statistic counts add
    up to the row 'all'."""
    from benchmarks import finite_size as fs

    preds = fs._read(fs.PREDICTIONS)
    seconds = np.array([p["finite_d_seconds"] for p in preds])
    text = fs.report(fs.residual_table(fs._read(fs.SIMULATIONS), preds),
                     dict(count=seconds.size, mean=seconds.mean(), max=seconds.max()),
                     replication=fs.replication_table(fs._read(fs.REPLICATION)))
    assert text == fs.REPORT.read_text()
    table = [line.split(" | ") for line in text.splitlines() if line.startswith(
        tuple(f"| {key} |" for key in (*fs.KEYS, "all")))]
    cells, outside = (sum(int(row[i]) for row in table[:-1]) for i in (1, 2))
    assert (cells, outside) == (int(table[-1][1]), int(table[-1][2]))


def test_replicate_appends_fresh_draws_and_refuses_bad_input(tmp_path, monkeypatch, capsys):
    """`--replicate` simulates and predicts new draws of one configuration, one row per seed, and the
    replication table averages them and counts them against the sign-flip null; a malformed configuration exits 2 with one line naming it and
    writes nothing."""
    from benchmarks import finite_size as fs

    path = tmp_path / "replication.csv"
    rows = fs.replicate(0.2, 8, 1.0, "ode", [0, 1], path=path)
    assert [r["seed"] for r in fs._read(path)] == [0, 1] and rows[0]["K"] == 5
    table = fs.replication_table(fs._read(path))
    line = next(row for row in table if row.startswith("| alpha"))
    assert line.startswith("| alpha = 0.2, omega = 1, ODE | 8 | 5 | 2 (0-1) |") and line.count("**") == 8
    assert table[-1].startswith("Outside 2 SE against the sign-flip null: t_condensation ")
    monkeypatch.setattr(fs, "REPLICATION", tmp_path / "other.csv")
    for bad in (["0.2", "eight", "1", "ode"], ["0.2", "8", "1", "heun"]):
        with pytest.raises(SystemExit) as stop:
            fs.main(["--replicate", *bad])
        assert stop.value.code == 2 and "--replicate" in capsys.readouterr().err
    assert not (tmp_path / "other.csv").exists()


def test_simulate_profile_times_the_kernel_calls_of_a_fresh_command():
    """benchmarks.simulate_profile runs `cfgphase simulate` in a fresh interpreter and counts the streaming kernel's
    calls (two per Heun step and the final evaluation); its parts nest (kernel <= command <= wall); a run that never
    calls the streaming kernel (at most 64 classes: the NumPy kernel) is refused by name."""
    from benchmarks import simulate_profile as sp

    arguments = ["--d", "8", "--classes", "100", "--particles", "64", "--steps", "5"]
    record = sp.run_once(arguments)
    assert record["status"] == 0 and record["kernel_calls"] == 11
    assert 0 < record["first_call_s"] <= record["kernel_s"] <= record["command_s"] <= record["wall_s"]
    summary = sp.summarise([record])
    assert 0 < summary["kernel_share"] <= 1 and summary["start_s"] > 0
    with pytest.raises(ValueError, match="more classes"):
        sp.run_once(["--d", "8", "--classes", "4", "--particles", "16", "--steps", "2"])


def test_the_gemm_library_benchmark_refuses_bad_input_in_one_line(capsys, monkeypatch):
    """benchmarks.gemm_libraries: bad --repeats, or no MKL to compare with, is one line on stderr and exit 2."""
    from benchmarks import gemm_libraries
    from cfgphase.solvers.score import blas

    for argv in (["--repeats", "2"], ["--repeats", "x"]):
        with pytest.raises(SystemExit) as stop:
            gemm_libraries.main(argv)
        assert stop.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    monkeypatch.setattr(blas, "_mkl_path", lambda: None)
    with pytest.raises(SystemExit) as stop:
        gemm_libraries.main(["--out", "unused.json"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "needs the mkl package" in err and len(err.strip().splitlines()) == 1
