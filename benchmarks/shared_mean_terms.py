"""The draw's shared mean S (docs/theory.md eqs. 104-108) measured exactly and split into the classes' terms.

For each cell, exact runs of the guided sampler in the span of the means (K <= d) or in the whole space
(K > d) follow each particle's displacement q_k along every class mean (cfgphase.solvers.theory.reduction,
``span_run(..., track=True)``), so that the draw's mean orthogonal to mu_c is sum_k b_k mu_k_perp exactly, and
S = diagonal + cross (eq. 108); and the diagonal with each class's b replaced by its mean over the classes of its
(C, R) cell, which is what the population's b(C, R) estimates. Against them, the finite-d population's S (eqs. 105,
107), which has the diagonal only. Every run at the target norm rho = 1 (sigma_mu^2 = 1, s^2 = 0.25, OU, 200 steps, t_max as the simulator's).

    python -m benchmarks.shared_mean_terms            # every cell (about 30 minutes, one process)
    python -m benchmarks.shared_mean_terms --cells 1  # the first cell only
    python -m benchmarks.shared_mean_terms --split-only  # the exact runs alone: add eq. 111's split (about 20 minutes)

Writes data/validation/shared_mean_terms.json and prints two markdown tables (value +- standard error over draws):
the terms, and the cross terms split around each class's (C, R) cell mean b (eq. 109: the response of a class's b
to the field of the others' displacements carries them), with that response split per particle into the part of
the overlaps along the particle's own direction and the rest (eq. 111).
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
from cfgphase.physics.processes import get_process
from cfgphase.solvers.sampling.timegrid import default_t_max, time_grid
from cfgphase.solvers.theory import finite_d
from cfgphase.solvers.theory.reduction import cross_term_split, draw_coordinates, half_means, \
    response_along_particles, shared_mean_terms, span_run
from cfgphase.solvers.theory.shared_mean import POOL_C_NODES, R_NODES, node_cells

OUT = Path(__file__).resolve().parents[1] / "data" / "validation" / "shared_mean_terms.json"
#: (K, d, sampler, omega, exact seeds, draws per seed, particles per draw); the slow test's cells that use
#: explicit classes (docs/theory.md 12.7) and the exact test bed (K = d = 16)
CELLS = [
    (16, 16, "sde", -0.5, 16, 240, 100),
    (602, 16, "sde", -0.5, 4, 16, 1000),
    (602, 16, "sde", 1.0, 4, 16, 1000),
    (25, 16, "ode", -0.5, 4, 16, 1000),
    (25, 16, "ode", 3.0, 4, 16, 1000),
    (602, 32, "ode", -0.5, 4, 8, 1000),
]
POPULATION = 24000  # particles of the population whose S is compared


def _setting(K, d, omega):
    """The grid (200 steps, the simulator's default t_max) and the model (rho = 1, sigma_mu^2 = 1, s^2 = 0.25, OU)."""
    process = get_process("ou")
    grid = time_grid(process, 200, default_t_max(process, d * 1.25), 0.0, class_var=0.25)
    return grid, finite_d._Model(d, K, 1.0, 1.0, 0.25, process, omega)


def exact(K, d, kind, omega, seeds, draws, size):
    """Per draw: S measured from the positions, S from the tracked q, its diagonal and cross terms, var_perp; and
    the diagonal of b's conditional means given the class's (C, R) cell of eq. 107, (value, its error)."""
    grid, model = _setting(K, d, omega)
    columns = {key: [] for key in ("measured", "total", "diagonal", "cross", "var_perp")}
    classes = []  # per class of every draw: C, R (units of sigma_mu) and b from the two halves of the particles
    runs = []  # (L, coefficients) per seed, for the split of eq. 109
    for seed in range(1, seeds + 1):
        rng = np.random.default_rng(seed)
        L = draw_coordinates(d, K, model.target, model.mean_var, draws, rng)
        run = span_run(model, kind, grid, L, [0], size, rng, track=True)
        total, diagonal, cross = shared_mean_terms(L, run["coefficients"], d)
        for key, value in zip(columns, (run["shared_mean"], total, diagonal, cross, run["var_perp"])):
            columns[key].append(value)
        b1, b2 = half_means(run["coefficients"][:, :, 1:])
        classes.append(np.stack([L[:, 1:, 0], (L[:, 1:, 1:] ** 2).sum(axis=2), b1, b2], axis=-1).reshape(-1, 4))
        runs.append((L, run["coefficients"], run["positions"]))
    classes = np.concatenate(classes)
    columns.update(split(runs, classes, d))
    return {key: np.concatenate(value) for key, value in columns.items()}, conditional_diagonal(classes, K, d)


def split(runs, classes, d):
    """Per draw, the cross terms split around each class's cell mean b (eq. 109): A (mean zero), the response 2B,
    C, and 2B + C, the estimate of the cross terms without A's variance; and 2B split per particle into the part of
    the overlaps along its own direction and the rest (eq. 111)."""
    cell = node_cells(d, POOL_C_NODES, R_NODES)(classes[:, 0], classes[:, 1])[0]
    b = 0.5 * (classes[:, 2] + classes[:, 3])
    cell_mean = np.bincount(cell, weights=b) / np.maximum(np.bincount(cell), 1)
    out, start = {key: [] for key in ("cross_A", "response", "cross_C", "cross_without_A", "response_along",
                                      "response_across")}, 0
    for L, coefficients, positions in runs:
        draws, K = L.shape[:2]
        reference = np.zeros((draws, K))  # the target's column is zero and has no perpendicular part
        reference[:, 1:] = cell_mean[cell[start:start + draws * (K - 1)]].reshape(draws, K - 1)
        start += draws * (K - 1)
        A, B, C = cross_term_split(L, coefficients, d, reference)
        along, across = response_along_particles(L, coefficients, positions, d, reference)
        for key, value in zip(out, (A, 2 * B, C, 2 * B + C, along, across)):
            out[key].append(value)
    return out


def conditional_diagonal(classes, K, d):
    """The diagonal of S with each class's b replaced by its mean over the classes of its (C, R) cell (the
    64 x 4 cells of eq. 107): what a population that gets b(C, R) right would give; (value, error from 8 blocks)."""
    cell = node_cells(d, POOL_C_NODES, R_NODES)(classes[:, 0], classes[:, 1])[0]

    def diagonal(rows):  # the square of a cell's mean b from pairs of distinct classes: unbiased for it
        total = 0.0
        for j in np.unique(cell[rows]):
            part = rows[cell[rows] == j]
            if part.size < 2:
                continue
            _, R, b1, b2 = classes[part].T
            square = (b1.sum() * b2.sum() - b1 @ b2) / (part.size * (part.size - 1))
            total += part.size * square * R.mean()
        return (K - 1) * total / rows.size / (d - 1)

    blocks = np.array_split(np.arange(classes.shape[0]), 8)
    values = np.array([diagonal(rows) for rows in blocks])
    return diagonal(np.arange(classes.shape[0])), float(values.std(ddof=1) / math.sqrt(values.size))


def population(K, d, kind, omega):
    """The finite-d population's S (eqs. 105, 107) and its error; for K <= d, where the prediction is the exact
    reduction, the population is run with its explicit classes from the start (the test bed of 12.7)."""
    if K > d:
        pred = cp.predict(cp.Model(d=d, classes=K), omega, d=d, sampler=kind, target_norm=1.0,
                          particles=POPULATION, seed=1)
        return pred.shared_mean, pred.shared_mean_stderr
    grid, model = _setting(K, d, omega)
    run = finite_d._population_run(model, kind, grid, POPULATION, np.random.default_rng(1), True, -1.0)
    return run["shared_mean"], run["shared_mean_se"]


def _mean(values):
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def split_only(cells):
    """Rerun the exact runs of ``cells`` (the same seeds), check that the stored S from q comes back bit for bit and
    the response 2B to rounding, and store the per-particle split of eq. 111 with it."""
    stored = json.loads(OUT.read_text())
    index = {(c["K"], c["d"], c["sampler"], c["omega"]): c for c in stored["cells"]}
    print("| K, d, sampler, omega | response 2B | along each particle | across |\n" + "|---" * 4 + "|")
    for K, d, kind, omega, seeds, draws, size in cells:
        run, _ = exact(K, d, kind, omega, seeds, draws, size)
        record = index[K, d, kind, omega]
        # the runs come back bit for bit; the split's sums to rounding (their order changed since the record)
        if _mean(run["total"]) != tuple(record["total"]) or not np.allclose(_mean(run["response"]),
                                                                            record["response"], rtol=1e-12, atol=0):
            raise SystemExit(f"K = {K}, d = {d}, {kind}, omega = {omega}: the exact runs do not reproduce the stored 2B")
        record.update(response_along=_mean(run["response_along"]), response_across=_mean(run["response_across"]))
        print(f"| {K}, {d}, {kind}, {omega:g} | " + " | ".join(
            f"{record[k][0]:+.5f} ± {record[k][1]:.5f}" for k in ("response", "response_along", "response_across"))
            + " |", flush=True)
    OUT.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"wrote {OUT}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=len(CELLS), help="run the first CELLS cells")
    parser.add_argument("--split-only", action="store_true",
                        help="rerun the exact runs alone and add the per-particle split of eq. 111 to the stored record")
    args = parser.parse_args(argv)
    if not 1 <= args.cells <= len(CELLS):
        parser.error(f"--cells must be between 1 and {len(CELLS)}, got {args.cells}")
    if args.split_only:
        return split_only(CELLS[:args.cells])
    records = []
    print("| K, d, sampler, omega | draws x particles | S measured | S from q | diagonal | cross | diagonal of "
          "b(C, R) | population S (eq. 107) | population - S from q |\n" + "|---" * 9 + "|")
    for K, d, kind, omega, seeds, draws, size in CELLS[:args.cells]:
        start = time.perf_counter()
        run, conditional = exact(K, d, kind, omega, seeds, draws, size)
        stats = {key: _mean(value) for key, value in run.items()}
        stats["conditional_diagonal"] = conditional
        pop, pop_se = population(K, d, kind, omega)
        total, total_se = stats["total"]
        records.append(dict(K=K, d=d, sampler=kind, omega=omega, draws=seeds * draws, particles=size,
                            population=pop, population_stderr=pop_se, seconds=time.perf_counter() - start,
                            **{key: value for key, value in stats.items()}))
        cells = " | ".join(f"{m:.5f} ± {e:.5f}" for m, e in (stats[k] for k in (
            "measured", "total", "diagonal", "cross", "conditional_diagonal")))
        gap_se = math.hypot(pop_se, total_se)
        print(f"| {K}, {d}, {kind}, {omega:g} | {seeds * draws} x {size} | {cells} | {pop:.5f} ± {pop_se:.5f} | "
              f"{pop - total:+.5f} ± {gap_se:.5f} ({(pop - total) / gap_se:+.1f}) |", flush=True)
    print("\nThe cross terms split around each class's (C, R) cell mean b (eq. 109; A has mean zero):\n\n"
          "| K, d, sampler, omega | cross | A | response 2B | C | 2B + C | 2B along each particle | across |\n"
          + "|---" * 8 + "|")
    for r in records:
        print(f"| {r['K']}, {r['d']}, {r['sampler']}, {r['omega']:g} | " + " | ".join(
            f"{r[k][0]:+.5f} ± {r[k][1]:.5f}" for k in ("cross", "cross_A", "response", "cross_C", "cross_without_A",
                                                        "response_along", "response_across")) + " |")
    OUT.write_text(json.dumps(dict(machine=platform.processor() or platform.machine(), cfgphase=cp.__version__,
                                   date=time.strftime("%Y-%m-%d"), cells=records), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
