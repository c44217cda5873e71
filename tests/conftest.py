"""Test order: the slowest files first.

The suite runs on one worker per core (pytest-xdist, ``--dist loadfile``: each file on one worker, so
that a module-scoped fixture is built once). A slow file handed out last would run alone at the end
while the other workers idle; started first, the slow files overlap with everything else.
"""

#: Files of more than about 20 s each (``pytest --durations``), slowest first.
SLOWEST = ("test_notebooks.py", "test_properties.py", "test_optimal.py", "test_plots.py", "test_meanfield.py",
           "test_sweep.py", "test_learned.py", "test_gaussian.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST)))  # stable: the rest keep their order
