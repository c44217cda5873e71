"""Schedule design: theory-optimal schedules and tuned baselines (`optimal`), learned guidance
weights (`learned`)."""


def __getattr__(name):  # submodules load on first use: `cfgphase.solvers.design.<module>`
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
