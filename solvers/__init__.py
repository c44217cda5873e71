"""How cfgphase computes, one subpackage per role (docs/architecture.md): score, sampling, theory,
design, sweeps, io, figures; and the command line (cli). Installed as ``cfgphase.solvers``."""
