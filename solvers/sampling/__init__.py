"""Sampling: value objects (`sampler`: Sampler, SaveAt), time grids (`timegrid`), the run's noise
(`brownian`: initial draws and a Brownian path), one-step integrators (`steppers`), measurements
(`observables`), the driver (`driver`: simulate, integrate) and its result (`results`)."""


def __getattr__(name):  # submodules load on first use: `cfgphase.solvers.sampling.<module>`
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
