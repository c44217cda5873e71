"""Exact scores: the streaming kernel (the class posterior as attention, `kernel`) and the score
fields a sampler evaluates (`fields`: mixture, Gaussian pair, degraded conditional)."""


def __getattr__(name):  # submodules load on first use: `cfgphase.solvers.score.<module>`
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
