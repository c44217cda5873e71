"""cfgphase: what classifier-free guidance does to a distribution, exactly.

Guided diffusion on Gaussian mixtures with exact scores, the mean-field theory of the same
dynamics, the exact Gaussian case, phase diagrams in HDF5 and publication figures::

    import cfgphase as cp
    model = cp.Model(d=16, alpha=0.3, seed=1)            # the disorder: class means from seed 1
    guidance = cp.Guidance(omega=1.0)                      # or guidance_scale=2.0; schedule=, rule=
    res = cp.simulate(model, guidance, sampler="ode", particles=512, steps=40, seed=0)  # seed: the noise
    ds = res.to_xarray()
    pred = cp.predict(model, guidance, sampler="ode")     # mean-field theory, same statistic names

Conventions (docs/theory.md): forward time t >= 0 with t = 0 the data; the excess weight omega,
s_c + omega (s_c - s_u), with guidance_scale = 1 + omega accepted by name. The layout of the
package is in docs/architecture.md. Names are loaded on first use, so ``import cfgphase`` is cheap.
"""

from importlib import import_module

__version__ = "0.2.0"

_EXPORTS = {
    # what is simulated (physics)
    "Model": "cfgphase.physics.model",
    "GaussianModel": "cfgphase.physics.model",
    "Guidance": "cfgphase.physics.guidance",
    "make_schedule": "cfgphase.physics.schedules",
    "make_rule": "cfgphase.physics.rules",
    "SCHEDULES": "cfgphase.physics.schedules",
    "RULES": "cfgphase.physics.rules",
    # how it is computed (solvers)
    "Sampler": "cfgphase.solvers.sampling.sampler",
    "SaveAt": "cfgphase.solvers.sampling.sampler",
    "simulate": "cfgphase.solvers.sweeps.shards",
    "integrate": "cfgphase.solvers.sampling.driver",
    "predict": "cfgphase.solvers.theory.meanfield",
    "gaussian": "cfgphase.solvers.theory.gaussian",
    "phase_diagram": "cfgphase.solvers.sweeps.runner",
    "finite_size_scaling": "cfgphase.solvers.sweeps.fss",
    "compare_with_theory": "cfgphase.solvers.sweeps.fss",
    "open_dataset": "cfgphase.solvers.io.hdf5",
    "load_data": "cfgphase.solvers.io.data",
    "save": "cfgphase.solvers.io.hdf5",
    "plot": "cfgphase.solvers.figures.plots",
}
_MODULES = {
    "statistics": "cfgphase.physics.statistics",
    "schedules": "cfgphase.physics.schedules",
    "rules": "cfgphase.physics.rules",
    "theory": "cfgphase.solvers.theory",
    "design": "cfgphase.solvers.design",
    "figures": "cfgphase.solvers.figures",
}

__all__ = sorted(_EXPORTS) + sorted(_MODULES)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return import_module(_MODULES[name])
    raise AttributeError(f"module 'cfgphase' has no attribute {name!r}")


def __dir__():
    return __all__
