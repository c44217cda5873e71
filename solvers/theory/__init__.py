"""Theory: exact Gaussian guided dynamics (`gaussian`), condensation of K = e^{alpha d} random
classes (`condensation`), the mean-field theory of guided sampling (`meanfield`) and its finite-d
corrections (`finite_d`, with the finitely many other classes in `environment`), the dynamics in the
span of few means (`reduction`), guided trees of classes (`tree`) and the regimes of unguided sampling
(`regimes`)."""


def __getattr__(name):  # submodules load on first use: `cfgphase.solvers.theory.<module>`
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
