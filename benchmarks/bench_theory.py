"""Mean-field predictions on a 101 x 101 (alpha, omega) grid (issue target: under 10 s on 2 cores).

    python benchmarks/bench_theory.py [--points 101] [--workers 1 2] [--repeats 3] [--json]

Times cfgphase.solvers.theory.meanfield.prediction_grid (constant omega in [0, 5], alpha in [0, 0.6], OU, both
samplers) for each worker count; medians of the repeats, one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from cfgphase.solvers.theory.meanfield import prediction_grid


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=101)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    alphas, omegas = np.linspace(0.0, 0.6, args.points), np.linspace(0.0, 5.0, args.points)
    rows = []
    for sampler in ("ode", "sde"):
        for workers in args.workers:
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                grid = prediction_grid(alphas, omegas, sampler=sampler, workers=workers)
                times.append(time.perf_counter() - start)
            rows.append(dict(sampler=sampler, workers=workers, points=alphas.size * omegas.size,
                             median_s=float(np.median(times)), failed=int((grid["success"] == 0).sum()),
                             cpus=os.cpu_count()))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['sampler']}  workers={r['workers']}  {r['points']} points  median {r['median_s']:.2f} s  "
                  f"failed {r['failed']}")


if __name__ == "__main__":
    main()
