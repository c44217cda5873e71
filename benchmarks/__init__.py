"""Performance measurements of cfgphase (never timed assertions inside tests/): run from the
repository's root as ``python -m benchmarks.bench_score`` and ``python -m benchmarks.bench_theory``."""
