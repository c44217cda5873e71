"""``cfgphase bench``: what it measures and reports (no timing is asserted here: benchmarks/)."""

import json

from solvers.cli import main


def test_quick_bench_reports_every_case_with_environment_and_ratios(capsys):
    code = main(["bench", "--quick", "--json", "--quiet", "--repeats", "1", "--methods", "gemm", "softmax",
                 "cfgphase", "--dtype", "float64"])
    record = json.loads(capsys.readouterr().out)
    assert code == 0
    assert record["environment"]["blas"] and record["environment"]["usable_cores"] >= 1
    rows = record["results"]
    assert len(rows) == 3 * 2 * 2  # methods x regimes x operations
    for row in rows:
        assert row["seconds"] > 0 and row["gflops"] > 0 and row["peak_mib"] is not None
        assert row["particle_steps_per_s"] == row["B"] / row["seconds"]
    cfg = [r for r in rows if r["method"] == "cfgphase"]
    assert all(0 <= r["skipped_chunks"] <= 1 for r in cfg)
    assert {r["regime"] for r in record["ratios"]} == {"spread", "condensed"}


def test_cases_beyond_the_memory_budget_are_skipped_with_the_reason(capsys):
    code = main(["bench", "--quick", "--json", "--quiet", "--repeats", "1", "--methods", "broadcast",
                 "--memory-gb", "0.001", "--dtype", "float32"])
    rows = json.loads(capsys.readouterr().out)["results"]
    assert code == 0 and rows and all("memory budget" in r["skipped"] for r in rows)


def test_bad_bench_input_exits_2(capsys):
    assert main(["bench", "--B", "0", "--quiet"]) == 2
    assert "B" in capsys.readouterr().err
    assert main(["bench", "--methods", "cuda", "--quick", "--quiet"]) == 2
    assert "methods" in capsys.readouterr().err
