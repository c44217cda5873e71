"""The shared mean's cross terms as the cavity's response to the others' shared displacement (docs/theory.md eq. 110).

Exact runs split the cross terms of S around each class's (C, R) cell mean b (eq. 109): the response 2B of a class's b
to the field h_k of the others' displacements along it carries them. The population predicts it: the test classes of
eq. (105) run once to give b(C, R, t) and the field's time profile g(t), then twice more with every test class's
energy shifted by +-eta g(t) (paired random numbers), giving chi(C, R) = db/deta and
2B = 2 (K - 1) sigma_mu S_diag E[chi R] / (d - 1). Cells where the population has no explicit classes (the
probability flow under positive guidance); rho = 1, sigma_mu^2 = 1, s^2 = 0.25, OU, 200 steps.

The population's test classes carry the particle's linear factor k on q (eq. 105): the reaction of the particle's
other classes, which the exact split puts in the cross terms. With ``own_pull`` they carry the class's own pull alone,
the exact diagonal; own pull + 2B and the population's S are two estimates of the same S.

    python -m benchmarks.shared_mean_response     # three cells, about 12 minutes

Writes data/validation/shared_mean_response.json and prints a markdown table.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import numpy as np

import cfgphase as cp
from benchmarks.shared_mean_terms import _mean, _setting, exact
from cfgphase.solvers.theory import finite_d

OUT = Path(__file__).resolve().parents[1] / "data" / "validation" / "shared_mean_response.json"
#: (K, d, omega, exact seeds, draws per seed, particles per draw); the probability flow
CELLS = [(25, 16, 3.0, 4, 32, 1000), (25, 16, 1.0, 2, 32, 1000), (122, 24, 3.0, 2, 32, 1000)]
POPULATION, ETA = 8000, 0.2


def response(K, d, omega, n=POPULATION, eta=ETA, seed=1):
    """The population's (S, 2B) of eq. 110 for the probability flow: its test classes' S and their response."""
    grid, model = _setting(K, d, omega)

    def run(field):
        out = finite_d._population_run(model, "ode", grid, n, np.random.default_rng(seed), True, -1.0,
                                       field=field)
        return out["test_classes"]

    tests = run(lambda t: 0.0)
    R, W, b = tests.R, tests.W, tests.q.mean(axis=0)
    times = np.array([t for t, _ in tests.profile])
    profile = np.array([q for _, q in tests.profile]) @ (W * R * b) / np.sum(W * R * b * b)
    order = np.argsort(times)
    g = lambda t: float(np.interp(t, times[order], profile[order]))  # noqa: E731
    up, down = run(lambda t: eta * g(t)), run(lambda t: -eta * g(t))
    chi = (up.q.mean(axis=0) - down.q.mean(axis=0)) / (2 * eta)
    sigma = math.sqrt(model.mean_var)
    s_diag = (K - 1) * model.mean_var * float(np.sum(W * R * b * b)) / (d - 1)
    return s_diag, 2 * (K - 1) * sigma * s_diag * float(np.sum(W * chi * R)) / (d - 1)


def own_pull_diagonal(K, d, omega, n=POPULATION, seed=1):
    """The population's diagonal of S with the test classes' own pull alone (eq. 110)."""
    grid, model = _setting(K, d, omega)
    return finite_d._population_run(model, "ode", grid, n, np.random.default_rng(seed), True, -1.0,
                                    own_pull=True)["shared_mean"]


def main():
    records = []
    print("| K, d, omega | exact: diagonal | response 2B | S = diagonal + 2B + C | population: S (eq. 105) | "
          "own pull | 2B (eq. 110) | own pull + 2B |\n" + "|---" * 8 + "|")
    for K, d, omega, seeds, draws, size in CELLS:
        start = time.perf_counter()
        run, _ = exact(K, d, "ode", omega, seeds, draws, size)
        run["split_total"] = run["diagonal"] + run["cross_without_A"]
        stats = {key: _mean(run[key]) for key in ("diagonal", "cross", "response", "split_total")}
        s_diag, two_b = response(K, d, omega)
        own = own_pull_diagonal(K, d, omega)
        records.append(dict(K=K, d=d, sampler="ode", omega=omega, draws=seeds * draws, particles=size,
                            population=POPULATION, eta=ETA, population_diagonal=s_diag, population_response=two_b,
                            own_pull_diagonal=own, seconds=time.perf_counter() - start, **stats))
        (dg, dg_e), (rs, rs_e), (tot, tot_e) = (stats[k] for k in ("diagonal", "response", "split_total"))
        print(f"| {K}, {d}, {omega:g} | {dg:.5f} ± {dg_e:.5f} | {rs:+.5f} ± {rs_e:.5f} | {tot:.5f} ± {tot_e:.5f} | "
              f"{s_diag:.5f} | {own:.5f} | {two_b:+.5f} | {own + two_b:.5f} |", flush=True)
    OUT.write_text(json.dumps(dict(machine=platform.processor() or platform.machine(), cfgphase=cp.__version__,
                                   date=time.strftime("%Y-%m-%d"), cells=records), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
