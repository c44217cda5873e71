"""Reliability around a run: one writer per file, forked workers, interrupts, killed writers,
failed writes, unreachable schedulers, diverging weights (issue 19)."""

import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import cfgphase as cp
from cfgphase.solvers.io.hdf5 import writer_lock
from cfgphase.solvers.sweeps import runner, state

#: Enough work to be interrupted: 2 samplers x 4 dimensions x 3 seeds of simulations.
SLOW_GRID = ["--alpha", "0.1", "--omega", "1", "--sampler", "ode,sde", "--sim-d", "24,28,32,36", "--seeds", "3",
             "--particles", "256", "--steps", "120"]


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "cfgphase", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for(condition, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _journal_lines(path):
    journal = state.journal_path(path)
    return journal.read_text().count("\n") if journal.exists() else 0


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_second_writer_is_refused_at_once_naming_the_owner(tmp_path, capsys):
    path = tmp_path / "pd.h5"
    with writer_lock(path):
        with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
            cp.phase_diagram({"theory": {"alpha": [0.1], "omega": [1.0]}}, path, overwrite=True)
    assert not path.exists()
    # the lock dies with its owner: a killed writer never blocks the next one
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from cfgphase.solvers.io.hdf5 import writer_lock\n"
                               f"with writer_lock({str(path)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    proc = _cli("phase-diagram", "--alpha", "0.1", "--omega", "1", "--out", str(path), "--quiet")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.count("\n") == 1 and f"pid {holder.pid}" in err and not path.exists()
    holder.kill()
    holder.wait()
    result = cp.phase_diagram({"theory": {"alpha": [0.1], "omega": [1.0]}}, path)
    assert result.points_done == 1


def test_resume_refuses_another_grid_and_ignores_its_journal(tmp_path):
    path = tmp_path / "pd.h5"
    cp.phase_diagram({"theory": {"alpha": [0.1, 0.2], "omega": [1.0]}}, path)
    with pytest.raises(ValueError, match="differ"):
        cp.phase_diagram({"theory": {"alpha": [0.1, 0.3], "omega": [1.0]}}, path, resume=True)
    stored = path.read_bytes()
    state.journal_path(path).write_text(json.dumps(dict(kind="theory", index=[0, 0], values={}, wall_time=0.0,
                                                         error="", spec="another grid")) + "\n")
    cp.phase_diagram(None, path, resume=True)  # nothing to do; the foreign line is not applied
    ds = cp.open_dataset(path)
    assert ds.attrs["points_failed"] == 0 and np.all(np.isfinite(ds["theory_mean_ratio"].values))
    assert len(stored) > 0


def _simulate_in_child(seed):
    # 128 classes: the streaming kernel and its worker threads (up to 64 take the NumPy path)
    return cp.simulate(cp.Model(d=8, classes=128), 1.0, particles=64, steps=10, seed=seed).final["mean_ratio"]


def test_a_fork_pool_runs_simulations_after_one_in_the_parent():
    """The parent's kernel threads are running when it forks; each child starts its own instead of
    waiting on its copy of the parent's (before per-call threads: a fork-based pool hung forever after
    one in-process simulation)."""
    here = _simulate_in_child(0)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map_async(_simulate_in_child, [0, 1, 2])
        there = results.get(timeout=120)
    assert there[0] == here and len(set(there)) == 3


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_stops_a_sweep_promptly_and_saves_what_finished(tmp_path, signum, code):
    path = tmp_path / "pd.h5"
    proc = _cli("phase-diagram", *SLOW_GRID, "--out", str(path), "--workers", "2", "--quiet", cwd=tmp_path)
    # three units finished (the two theory units usually first; with another job on the cores, simulations
    # may finish before the second theory unit)
    assert _wait_for(lambda: _journal_lines(path) >= 3 or proc.poll() is not None)
    assert proc.poll() is None, proc.communicate()
    sent = time.time()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    elapsed = time.time() - sent
    assert proc.returncode == code, err
    assert elapsed < 10, elapsed
    assert err.count("\n") == 1 and "--resume" in err and "Traceback" not in err
    ds = cp.open_dataset(path)
    assert ds.attrs["status"] == "interrupted"
    assert int(ds["sim_done"].sum()) + int(ds["theory_done"].sum()) >= 3  # every unit that had finished is saved
    assert not state.journal_path(path).exists() and not list(tmp_path.glob(".*.tmp"))


def test_killing_a_sweep_leaves_no_worker_alive(tmp_path):
    path = tmp_path / "pd.h5"
    proc = _cli("phase-diagram", *SLOW_GRID, "--out", str(path), "--workers", "2", "--quiet", cwd=tmp_path)
    assert _wait_for(lambda: len(_children(proc.pid)) >= 2 and _journal_lines(path) >= 1)
    workers = _children(proc.pid)
    proc.kill()
    proc.wait()
    assert _wait_for(lambda: not any(_alive(pid) for pid in workers), seconds=10), workers


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))


@pytest.mark.parametrize("command", [
    ["simulate", "--d", "8", "--classes", "4", "--particles", "256", "--steps", "5", "--samples"],
    ["phase-diagram", "--alpha", "0:0.5:300", "--omega", "0:3:40"],
])
def test_a_failed_write_gives_one_line_and_leaves_the_previous_file(tmp_path, command):
    """A 16 KiB file-size limit in the child: the write fails; the previous file is untouched and no
    temporary file is left (before: a segmentation fault in h5py's clean-up, exit 139)."""
    path = tmp_path / "out.h5"
    path.write_bytes(b"previous")
    proc = _cli(*command, "--out", str(path), "--overwrite", "--quiet", cwd=tmp_path, preexec_fn=_limit_file_size)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and "out.h5" in err and "Traceback" not in err
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_an_unreachable_scheduler_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "CONNECT_SECONDS", 1)
    with pytest.raises(ValueError, match="scheduler"):
        cp.phase_diagram({"theory": {"alpha": [0.1], "omega": [1.0]}}, tmp_path / "pd.h5",
                         scheduler="tcp://127.0.0.1:1")
    assert list(tmp_path.iterdir()) == []


def test_a_diverging_weight_is_a_status_not_a_crash():
    res = cp.simulate(cp.Model(d=8, classes=4), 1e300, sampler="ode", particles=16, steps=5)
    assert res.status == 1 and "non-finite" in res.message


@pytest.mark.parametrize("sampler, omega", [("ode", 1e20), ("sde", 1e50)])
def test_a_huge_finite_weight_gives_finite_consistent_statistics(sampler, omega):
    """The particles reach |x| ~ 1e-3 omega (4e17 and 1e47) and stay finite (the mean estimates are bounded, so x
    grows in proportion to omega, not exponentially), and so do the final statistics, with a consistent target
    posterior: p(c|x) <= 1 and E[1/p] >= 1. Both cases used to end with status 1: the field's target logit, a
    separate float64 product, and the log-partition of the kernel's own logits differed by ~10 nats at logits of
    order 1e17 (the rounding of either), which made E[1/p] infinite and a quantile NaN. The target logit is now
    the kernel's own (docs/theory.md eq. 31)."""
    res = cp.simulate(cp.Model(d=8, classes=4), omega, sampler=sampler, particles=16, steps=5)
    values = {k: v for k, v in res.final.items() if v is not None}
    assert res.status == 0 and len(values) > 20 and all(np.isfinite(v) for v in values.values()), values
    assert res.final["mean_ratio"] > 1e-4 * omega  # it did diverge
    assert res.final["inv_prob"] >= 1.0 and res.final["p_target_q90"] <= 1.0


@pytest.mark.parametrize("omega", [1e6, 1e20, 1e300])
def test_the_theory_answers_or_fails_cleanly_at_huge_weights(omega):
    """Before: no answer in 120 s at 1e6 (an explicit solver on stiff equations)."""
    start = time.perf_counter()
    pred = cp.theory.meanfield.guided_prediction(0.2, omega)
    assert time.perf_counter() - start < 30
    assert (pred.success and np.isfinite(pred.mean_ratio)) or (not pred.success and pred.message)


def test_a_simulation_over_its_time_limit_stops_with_the_reason():
    res = cp.simulate(cp.Model(d=16, classes=256), 1.0, particles=512, steps=400, time_limit=1e-3)
    assert res.status == 1 and "time limit" in res.message
