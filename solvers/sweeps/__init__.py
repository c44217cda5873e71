"""Phase-diagram sweeps: the grid (`spec`), what a worker computes (`units`), the writer's arrays,
journal and file (`state`), and how a sweep runs, is interrupted and resumes on a local pool or a
Dask cluster (`runner`)."""


def __getattr__(name):  # submodules load on first use: `cfgphase.solvers.sweeps.<module>`
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
