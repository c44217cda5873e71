"""Where a whole ``cfgphase simulate`` spends its wall time (issue 21: at least 85 % in the kernel).

    python -m benchmarks.simulate_profile [--repeats 5] [--profile] [--json] [-- SIMULATE ARGUMENTS]

Each repeat runs ``cfgphase simulate --quiet`` (its defaults unless arguments follow ``--``) in a fresh
interpreter, as the ``cfgphase`` program does (its allocator setting included), with the streaming kernel's entry point
(cfgphase.solvers.score.kernel.posterior_moments) wrapped by a timer and no profiler. It reports, as medians over
the repeats: the process's wall time (measured outside it), the time before the command starts (interpreter,
NumPy and the kernel module's import, Numba included), the kernel's calls (the first one, which loads Numba's
cache, apart) and the rest (model, means, steps outside the kernel, observables). ``--profile`` runs one more
repeat under cProfile and lists the functions with the most time of their own outside the kernel.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

#: Runs in the child: imports the kernel (timed), wraps its entry point, runs the command, prints one JSON line.
_CHILD = r"""
import json, sys, time
start = time.perf_counter()
import cfgphase.solvers.score.kernel as kernel
imported = time.perf_counter()
calls, inner = [], kernel.posterior_moments

def timed(*args, **kwargs):
    t = time.perf_counter()
    result = inner(*args, **kwargs)
    calls.append(time.perf_counter() - t)
    return result

kernel.posterior_moments = timed
from cfgphase.solvers.cli import keep_freed_memory, main
keep_freed_memory()  # as the cfgphase program does (cfgphase.solvers.cli.run)
profile = None
if sys.argv[1] == "profile":
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
command = time.perf_counter()
status = main(["simulate", "--quiet", *sys.argv[2:]])
end = time.perf_counter()
if profile is not None:
    import pstats
    profile.disable()
    stats = pstats.Stats(profile, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(15)
print(json.dumps(dict(status=status, import_s=imported - start, command_s=end - command, calls=calls)))
"""


def run_once(arguments, profile=False):
    """One ``cfgphase simulate`` in a fresh interpreter: a dict of its timings in seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, "profile" if profile else "plain", *arguments],
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    record = json.loads(done.stdout.strip().splitlines()[-1])
    calls = record.pop("calls")
    if not calls:
        raise ValueError("the command never called the streaming kernel (a model of at most 64 classes runs the "
                         "NumPy kernel): choose more classes")
    record.update(wall_s=wall, kernel_s=float(sum(calls)), kernel_calls=len(calls), first_call_s=calls[0],
                  later_calls_s=float(sum(calls[1:])), profile=done.stderr if profile else None)
    return record


def summarise(records):
    """Medians over the repeats, with the kernel's share of the wall time (with and without the first call)."""
    median = {key: float(np.median([r[key] for r in records]))
              for key in ("wall_s", "import_s", "command_s", "kernel_s", "first_call_s", "later_calls_s")}
    shares = [r["kernel_s"] / r["wall_s"] for r in records]
    warm = [r["later_calls_s"] / (r["wall_s"] - r["first_call_s"]) for r in records]
    return dict(median, repeats=len(records), kernel_calls=records[0]["kernel_calls"],
                kernel_share=float(np.median(shares)), kernel_share_after_first_call=float(np.median(warm)),
                rest_s=median["command_s"] - median["kernel_s"], start_s=median["wall_s"] - median["command_s"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes timed (default 5)")
    parser.add_argument("--profile", action="store_true", help="one more run under cProfile: top 15 by own time")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("simulate", nargs="*", help="arguments for cfgphase simulate, after --")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    records = [run_once(args.simulate) for _ in range(args.repeats)]
    summary = summarise(records)
    summary["arguments"] = args.simulate
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"cfgphase simulate {' '.join(args.simulate) or '(defaults)'}: medians of {summary['repeats']} fresh runs")
        print(f"  wall {summary['wall_s']:.2f} s: start-up and imports {summary['start_s']:.2f} s, kernel "
              f"{summary['kernel_s']:.2f} s in {summary['kernel_calls']} calls (first call {summary['first_call_s']:.2f} s),"
              f" rest {summary['rest_s']:.2f} s")
        print(f"  kernel share {summary['kernel_share']:.0%} of the wall time; "
              f"{summary['kernel_share_after_first_call']:.0%} leaving out the first call")
    if args.profile:
        print(run_once(args.simulate, profile=True)["profile"])


if __name__ == "__main__":
    main()
