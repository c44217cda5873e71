"""Figures: the numbers behind each publication figure (`data`) and their drawing in the house
style (`plots`, cfgphase.mplstyle)."""


def __getattr__(name):  # submodules load on first use: `cfgphase.solvers.figures.<module>`
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
