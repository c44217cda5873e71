"""``python -m cfgphase``: the command line (the same as the ``cfgphase`` script)."""

from cfgphase.solvers.cli import run

run()
