"""``python -m cfgphase``: the command line (the same as the ``cfgphase`` script)."""

import sys

from cfgphase.solvers.cli import main

sys.exit(main())
