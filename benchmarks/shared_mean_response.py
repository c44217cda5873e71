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

Where the population has explicit classes (the SDE, and the probability flow under negative guidance), the same
field acts on them with a random sign per class (eq. 111, ``probe``): chi from the signed displacement of paired runs
at +-eta, against the exact split stored by benchmarks/shared_mean_terms.py (data/validation/shared_mean_terms.json).

    python -m benchmarks.shared_mean_response              # three cells, about 12 minutes
    python -m benchmarks.shared_mean_response --explicit   # five cells with explicit classes, about 30 minutes

Writes data/validation/shared_mean_response.json (the explicit cells under ``explicit_cells``, each invocation
keeping the other's) and prints a markdown table.
"""

from __future__ import annotations

import argparse
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
#: cells with explicit classes (K, d, sampler, omega): those of benchmarks/shared_mean_terms.py but K = 25, omega = 3
EXPLICIT = [(602, 16, "sde", 1.0), (602, 16, "sde", -0.5), (16, 16, "sde", -0.5), (25, 16, "ode", -0.5),
            (602, 32, "ode", -0.5)]
TERMS = OUT.parent / "shared_mean_terms.json"


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


def explicit_response(K, d, kind, omega, n=POPULATION, eta=ETA, seed=1):
    """Eq. 111 under explicit classes: the population's (S, own-pull S, the field's 2B, (2B along the particles'
    directions, its error)). The field's time profile g(t) is the
    regression of the fine cells' mean displacement on its final value (zero before the pool starts); the test classes
    take the field with one sign, the explicit classes each with its own, and chi per fine cell is the test class's
    plus the signed displacement's, both from paired runs at +-eta."""
    grid, model = _setting(K, d, omega)

    def run(field, **options):
        return finite_d._population_run(model, kind, grid, n, np.random.default_rng(seed), True, -1.0, field=field,
                                        **options)

    base = run(lambda t: 0.0, probe=True)
    tests = base["test_classes"]
    W, R = tests.fine_moments
    times = np.array([t for t, _ in tests.fine_profile])
    series = np.array([b for _, b in tests.fine_profile])
    final = series[np.argmin(times)]
    profile = series @ (W * R * final) / np.sum(W * R * final * final)
    order = np.argsort(times)
    g = lambda t: float(np.interp(t, times[order], profile[order], right=0.0))  # noqa: E731
    up, down = run(lambda t: eta * g(t), probe=True), run(lambda t: -eta * g(t), probe=True)
    node = tests.test_node
    chi = ((up["test_classes"].q.mean(axis=0) - down["test_classes"].q.mean(axis=0))[node]
           + up["signed"] - down["signed"]) / (2 * eta)
    own, s_diag = _diagonal(run(lambda t: 0.0, own_pull=True), n), _diagonal(base, n)
    return s_diag, own, 2 * (K - 1) * math.sqrt(model.mean_var) * s_diag * float(np.sum(W * chi * R)) / (d - 1), \
        base["test_classes"].response_along(base["pool"], np.arange(n) % finite_d.GROUPS, finite_d.GROUPS)


def pair_channel(K, d, kind, omega, n=POPULATION, seed=1):
    """Eq. 111's pair channel: with the explicit classes as vectors (eq. 103), twice the mean over particles of
    sum_k q_k sum_l r_l G_kl over pairs of one particle's explicit classes, G_kl their overlap's part orthogonal to the
    particle's direction over (d - 1) (entrants draw it without selection) and r_l the population's b of l's cell;
    (value, its error over the population's groups), and the population's S with vectors."""
    grid, model = _setting(K, d, omega)
    out = finite_d._population_run(model, kind, grid, n, np.random.default_rng(seed), True, -1.0, exact_pulls=True,
                                   field=lambda t: 0.0)
    tests, pool = out["test_classes"], out["pool"]
    _, r, q, w = tests.explicit_classes(pool)
    Z = np.where(pool.alive[:, :, None], pool.Z, 0.0)
    G = (np.einsum("nkd,nld->nkl", Z, Z) - w[:, :, None] * w[:, None, :]) * model.mean_var / (d - 1)
    G[:, np.arange(G.shape[1]), np.arange(G.shape[1])] = 0.0
    per_particle = 2.0 * np.einsum("nk,nkl,nl->n", q, G, r)
    groups = np.array([per_particle[j::finite_d.GROUPS].mean() for j in range(finite_d.GROUPS)])
    return float(per_particle.mean()), float(groups.std(ddof=1) / math.sqrt(groups.size)), _diagonal(out, n)


def _diagonal(run, n):
    """The population's S without the cross terms along the particles (eq. 107 alone, as before eq. 112) from a run
    with its test classes and pool."""
    return run["test_classes"].shared_mean(np.arange(n) % finite_d.GROUPS, finite_d.GROUPS, run["pool"])[0]


def explicit_cells():
    """The cells of EXPLICIT: the exact split of shared_mean_terms.json and eq. 111's response, as records."""
    stored = {(c["K"], c["d"], c["sampler"], c["omega"]): c for c in json.loads(TERMS.read_text())["cells"]}
    records = []
    print("| K, d, sampler, omega | exact: diagonal | response 2B | S = diagonal + 2B + C | population S | own pull | "
          "field's 2B (eq. 111) | pair channel (eq. 111) | 2B along the particles (eq. 111) | population S + along |\n"
          + "|---" * 10 + "|")
    for K, d, kind, omega in EXPLICIT:
        start = time.perf_counter()
        cell = stored[K, d, kind, omega]
        (dg, dg_e), (rs, rs_e), (wa, wa_e) = (cell[k] for k in ("diagonal", "response", "cross_without_A"))
        s_pop, own, two_b, (along, along_se) = explicit_response(K, d, kind, omega)
        pairs, pairs_se, s_vectors = pair_channel(K, d, kind, omega)
        records.append(dict(K=K, d=d, sampler=kind, omega=omega, population=POPULATION, eta=ETA, exact_diagonal=dg,
                            exact_response=rs, exact_total=dg + wa, population_shared_mean=s_pop,
                            own_pull_diagonal=own, population_response=two_b, pair_channel=[pairs, pairs_se],
                            population_shared_mean_vectors=s_vectors, population_along=[along, along_se],
                            seconds=time.perf_counter() - start))
        print(f"| {K}, {d}, {kind}, {omega:g} | {dg:.5f} ± {dg_e:.5f} | {rs:+.5f} ± {rs_e:.5f} | "
              f"{dg + wa:.5f} ± {math.hypot(dg_e, wa_e):.5f} | {s_pop:.5f} | {own:.5f} | {two_b:+.5f} | "
              f"{pairs:+.5f} ± {pairs_se:.5f} | {along:+.5f} ± {along_se:.5f} | {s_pop + along:.5f} |", flush=True)
    return records


def own_pull_diagonal(K, d, omega, n=POPULATION, seed=1):
    """The population's diagonal of S with the test classes' own pull alone (eq. 110)."""
    grid, model = _setting(K, d, omega)
    return finite_d._population_run(model, "ode", grid, n, np.random.default_rng(seed), True, -1.0,
                                    own_pull=True)["shared_mean"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explicit", action="store_true", help="the cells with explicit classes (eq. 111)")
    args = parser.parse_args(argv)
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    if args.explicit:
        previous.update(machine=platform.processor() or platform.machine(), cfgphase=cp.__version__,
                        date=time.strftime("%Y-%m-%d"), explicit_cells=explicit_cells())
        OUT.write_text(json.dumps(previous, indent=1) + "\n")
        print(f"wrote {OUT}")
        return
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
    previous.update(machine=platform.processor() or platform.machine(), cfgphase=cp.__version__,
                    date=time.strftime("%Y-%m-%d"), cells=records)
    OUT.write_text(json.dumps(previous, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
