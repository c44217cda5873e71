r"""How a run integrates and what it keeps: the :class:`Sampler` and :class:`SaveAt` value objects.

A sampler is the kind of reverse dynamics (probability-flow ODE or reverse SDE, docs/theory.md
eqs. 11-12), its stepper, its time grid and its initial law. Time is forward time (t = 0 is data);
sampling runs from ``t_max`` down to ``t_min``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cfgphase.solvers.score.fields import INITS
from cfgphase.solvers.sampling.steppers import get_stepper
from cfgphase.solvers.sampling.timegrid import GRIDS

#: Largest number of steps a sampler accepts (a typo guard: 10^6 steps of any stepper is a day).
MAX_STEPS = 1_000_000


@dataclass(frozen=True)
class Sampler:
    """The reverse dynamics, its stepper and its grid.

    Parameters
    ----------
    kind : {'ode', 'sde'}
        Probability-flow ODE or reverse SDE.
    method : str, optional
        Stepper (cfgphase.solvers.sampling.steppers): ``heun`` (default for ode), ``euler``,
        ``ddim``; ``exponential`` (sde).
    steps : int, default 200
    t_max : float, optional
        Start (forward time); default where the data's signal-to-noise ratio is 1e-4.
    t_min : float, default 0
    grid : {'log', 'uniform'} or array_like, default 'log'
        Uniform in log(t + t_0) (refined near t = 0, eq. 15), uniform in t, or explicit forward times
        (then ``steps``, ``t_max`` and ``t_min`` come from it).
    init : {'unconditional', 'conditional'}, default 'unconditional'
        Initial particles: exact draws of the noised unconditional (or target) law at t_max.
    """

    kind: str = "ode"
    method: str | None = None
    steps: int = 200
    t_max: float | None = None
    t_min: float = 0.0
    grid: str | np.ndarray = "log"
    init: str = "unconditional"

    def __post_init__(self):
        method, _ = get_stepper(self.kind, self.method)
        object.__setattr__(self, "method", method)
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or \
                not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be an integer in [1, {MAX_STEPS}], got {self.steps!r}")
        for name in ("t_max", "t_min"):
            value = getattr(self, name)
            if value is not None:
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{name} must be a number, got {value!r}") from None
                if not np.isfinite(value) or value < 0:
                    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
                object.__setattr__(self, name, value)
        if isinstance(self.grid, str):
            if self.grid not in GRIDS:
                raise ValueError(f"grid must be one of {GRIDS} or an array of times, got {self.grid!r}")
        else:
            object.__setattr__(self, "grid", np.asarray(self.grid, dtype=float))
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")

    def replace(self, **changes):
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def record(self):
        grid = self.grid if isinstance(self.grid, str) else "explicit"
        return dict(sampler=self.kind, method=self.method, steps=self.steps, t_max=self.t_max, t_min=self.t_min,
                    grid=grid, init=self.init)


def as_sampler(sampler, **changes):
    """A :class:`Sampler` from a Sampler or a kind ('ode', 'sde'), with ``changes`` applied."""
    if isinstance(sampler, Sampler):
        return sampler.replace(**changes)
    if not isinstance(sampler, str):
        raise ValueError(f"sampler must be 'ode', 'sde' or a Sampler, got {sampler!r}")
    return Sampler(kind=sampler, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class SaveAt:
    """What a simulation keeps besides its final statistics.

    ``times``: forward times at which trajectory observables are recorded (snapped to grid nodes;
    default every node). ``samples``: keep the final particles (B, d). ``copy_ratio``: for a model
    built from data, a sample copies a training point when its distance to it is below
    ``copy_ratio`` times its distance to the second nearest point (default 1/3; eq. 69).
    """

    times: tuple | None = None
    samples: bool = False
    copy_ratio: float = 1 / 3

    def __post_init__(self):
        ratio = self.copy_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.integer, np.floating)) \
                or not 0 < ratio <= 1:
            raise ValueError(f"copy_ratio must be a number in (0, 1], got {ratio!r}")
        if self.times is not None:
            times = np.atleast_1d(np.asarray(self.times, dtype=float))
            if times.size == 0 or not np.all(np.isfinite(times)):
                raise ValueError("save times must be a non-empty list of finite forward times")
            object.__setattr__(self, "times", tuple(times.tolist()))
