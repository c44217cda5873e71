"""The exact score against what a user would write instead (``make bench``).

    python -m benchmarks.bench_score [--B ...] [--K ...] [--d ...] [--dtype ...] [--methods ...]
                                     [--regimes ...] [--operations ...] [--quick] [--json] [--out FILE]

One unconditional-score evaluation and one guided SDE step for (B, K, d) in
{1024, 8192} x {4096, 65536, 10^6} x {32, 64, 256}, float32 and float64, in a spread and a
condensed posterior regime, for the bare GEMMs, a NumPy broadcast, NumPy GEMM + softmax, PyTorch's
scaled_dot_product_attention (if installed), cfgphase, and cfgphase with generated means
(benchmarks/score.py). With no case options
it runs the full grid, writes the JSON record (default benchmarks/results/bench_score.json) and
prints the report of every case, then the README's performance table (score.readme_table).
Bad input: one line on stderr, exit status 2.

Generated against stored means (issue 21, item 3; the ratio (f) / (e) is in the report's last lines):

    python -m benchmarks.bench_score --B 256 1024 --K 65536 --d 64 --methods cfgphase generated \
        --regimes spread --operations score
"""

import argparse
import json
import math
import sys
from pathlib import Path

from tqdm import tqdm

from benchmarks import score

DEFAULT_RECORD = Path(__file__).parent / "results" / "bench_score.json"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    p = _Parser(prog="python -m benchmarks.bench_score", description=__doc__.splitlines()[0])
    g = p.add_argument_group("cases (default: the full grid; each list is a product axis)")
    g.add_argument("--B", type=int, nargs="+", help="particles (default 1024 8192)")
    g.add_argument("--K", type=int, nargs="+", help="classes (default 4096 65536 1000000)")
    g.add_argument("--d", type=int, nargs="+", help="dimensions (default 32 64 256)")
    g.add_argument("--dtype", nargs="+", choices=["float32", "float64"], help="precisions (default both)")
    g.add_argument("--methods", nargs="+", choices=score.METHODS, help="default: all")
    g.add_argument("--regimes", nargs="+", choices=list(score.REGIMES), help="default: both")
    g.add_argument("--operations", nargs="+", choices=score.OPERATIONS, help="default: both")
    g.add_argument("--quick", action="store_true", help="one small case (B=256, K=4096, d=32) for a smoke test")
    g = p.add_argument_group("limits")
    g.add_argument("--repeats", type=int, default=3, help="timed runs per case, median reported (default 3)")
    g.add_argument("--max-seconds", type=float, default=30.0,
                   help="skip a case whose estimated time per run exceeds this (default 30)")
    g.add_argument("--memory-gb", type=float, help="skip a case whose working set exceeds this (default: half the RAM)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument("--out", help=f"write the JSON record here (default with the full grid: {DEFAULT_RECORD})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check(args):
    for name in ("B", "K", "d"):
        if any(v < 1 for v in getattr(args, name) or ()):
            raise ValueError(f"{name}: every value must be >= 1")
    if args.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {args.repeats}")
    if not (math.isfinite(args.max_seconds) and args.max_seconds > 0):
        raise ValueError(f"max-seconds must be a finite number > 0, got {args.max_seconds}")
    if args.memory_gb is not None and not (math.isfinite(args.memory_gb) and args.memory_gb > 0):
        raise ValueError(f"memory-gb must be a finite number > 0, got {args.memory_gb}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        _check(args)
    except ValueError as err:
        print(f"bench_score: error: {err}", file=sys.stderr)
        return 2
    grid = dict(score.QUICK if args.quick else score.FULL)
    for key in ("B", "K", "d", "dtype"):
        if getattr(args, key) is not None:
            grid[key] = tuple(getattr(args, key))
    full = grid == score.FULL and not any((args.methods, args.regimes, args.operations))
    methods = tuple(args.methods or score.METHODS)
    regimes, operations = tuple(args.regimes or score.REGIMES), tuple(args.operations or score.OPERATIONS)
    total = math.prod(len(v) for v in grid.values()) * len(methods) * len(regimes) * len(operations)
    with tqdm(total=total, unit="case", disable=args.quiet or not sys.stderr.isatty(), file=sys.stderr) as bar:
        def progress(text):
            bar.set_postfix_str(text, refresh=False)
            bar.update()

        rows = score.run(grid["B"], grid["K"], grid["d"], grid["dtype"], methods, regimes, operations,
                         repeats=args.repeats, max_seconds=args.max_seconds, memory_gb=args.memory_gb,
                         progress=progress, peak_size=1024 if args.quick else 2048)
    record = score.record(rows)
    out = Path(args.out) if args.out else DEFAULT_RECORD if full else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1))
    if args.json:
        print(json.dumps(record))
    else:
        print(score.report(record))
        if full:
            print("\nREADME table (guided SDE step):\n" + score.readme_table(record))
        if out is not None:
            print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
