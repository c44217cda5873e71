"""The exact score against what a user would write instead, on the issue's full grid (``make bench``).

    python benchmarks/bench_score.py [OUT.json]

One unconditional-score evaluation and one guided SDE step for (B, K, d) in
{1024, 8192} x {4096, 65536, 10^6} x {32, 64, 256}, float32 and float64, in a spread and a
condensed posterior regime, for the bare GEMMs, a NumPy broadcast, NumPy GEMM + softmax, PyTorch's
scaled_dot_product_attention (if installed) and cfgphase (solvers/bench.py; ``cfgphase bench``
runs any subset). Writes the JSON record (default benchmarks/results/bench_score.json) and prints
the report of every case, then the README's performance table (solvers.bench.readme_table).
"""

import json
import sys
from pathlib import Path

from tqdm import tqdm

from solvers import bench


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).parent / "results" / "bench_score.json"
    cases = 1
    for values in bench.FULL.values():
        cases *= len(values)
    total = cases * len(bench.METHODS) * len(bench.REGIMES) * len(bench.OPERATIONS)
    with tqdm(total=total, unit="case", file=sys.stderr) as bar:
        def progress(text):
            bar.set_postfix_str(text, refresh=False)
            bar.update()

        record = bench.record(bench.run(progress=progress))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(bench.report(record))
    print("\nREADME table (guided SDE step):\n" + bench.readme_table(record))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
