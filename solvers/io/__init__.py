"""Files: atomic, self-describing HDF5 written from xarray datasets and read back (`hdf5`)."""


def __getattr__(name):  # submodules load on first use: `cfgphase.solvers.io.<module>`
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
