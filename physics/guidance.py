r"""How a run is guided: a weight or schedule of forward time and a rule, in one value object.

Convention (docs/theory.md eq. 9): the *excess* weight :math:`\omega`,
:math:`s_\omega = s_c + \omega(s_c - s_u)`; the diffusers / Imagen ``guidance_scale`` is
:math:`w = 1 + \omega`. :class:`Guidance` takes either, by name, never both
(:mod:`cfgphase.physics.weights`), a schedule :math:`\omega(t)` (:mod:`cfgphase.physics.schedules`)
and a rule that says how the conditional and unconditional predictions are combined
(:mod:`cfgphase.physics.rules`). Parameters of the schedule and of the rule are passed by name and
sorted to their owner::

    Guidance(omega=1.0)                                            # constant CFG
    Guidance(guidance_scale=2.0, schedule="interval", sigma_lo=0.28, sigma_hi=1.61)
    Guidance(omega=2.0, rule="adg", a_max=1.0)
    Guidance(schedule=LinearSchedule(-1.0, 0.5))                   # a schedule object
"""

from __future__ import annotations

from cfgphase.physics.rules import RULES, Rule, make_rule
from cfgphase.physics.schedules import SCHEDULES, Schedule, make_schedule
from cfgphase.physics.weights import DEFAULT_OMEGA, excess_weight


class Guidance:
    r"""A guidance weight or schedule and a rule.

    Parameters
    ----------
    omega : float or callable of t, optional
        Excess weight (default 1); for a named schedule, its weight parameter (the mean or the
        early weight, see ``cfgphase schedules``).
    guidance_scale : float or callable, optional (keyword-only)
        :math:`w = 1 + \omega` instead of ``omega``.
    schedule : str, Schedule or callable, default 'constant'
        A name from :data:`cfgphase.physics.schedules.SCHEDULES` (its parameters as keywords), or
        a schedule object / callable ``omega(t)`` (then no ``omega`` or ``guidance_scale``).
    rule : str or Rule, default 'cfg'
        A name from :data:`cfgphase.physics.rules.RULES` (its parameters as keywords) or a Rule.
    **parameters
        Parameters of the named schedule or rule; a name that belongs to neither is a ValueError.

    Attributes
    ----------
    weight : float, Schedule or callable
        What the samplers and theories evaluate: a number (constant) or a schedule, unbound.
    rule : Rule
    omega, guidance_scale : float or None
        The constant weight in both conventions (None for a schedule).
    schedule : str
        'constant' or the schedule's repr.
    """

    __slots__ = ("weight", "rule")

    def __init__(self, omega=None, *, guidance_scale=None, schedule="constant", rule="cfg", **parameters):
        rule_cls = None if isinstance(rule, Rule) else RULES.get(rule)
        if rule_cls is None and not isinstance(rule, Rule):
            raise ValueError(f"rule: unknown name {rule!r} (known: {', '.join(RULES)})")
        rule_params = {k: parameters.pop(k) for k in list(parameters) if rule_cls and k in rule_cls.PARAMETERS}
        rule = make_rule(rule, **rule_params)
        if isinstance(schedule, str):
            if schedule not in SCHEDULES:
                raise ValueError(f"schedule: unknown name {schedule!r} (known: {', '.join(SCHEDULES)})")
            if schedule == "constant" and parameters:
                key = sorted(parameters)[0]
                raise ValueError(f"{key}: not a parameter of the constant schedule or of the {rule.name} rule")
            weights = {k: v for k, v in (("omega", omega), ("guidance_scale", guidance_scale)) if v is not None}
            if not rule.uses_weight:
                if weights or schedule != "constant":
                    raise ValueError(f"omega: the {rule.name} rule takes its strength from its own parameters, "
                                     "not from a weight or schedule")
                weight = 0.0
            elif schedule == "constant":
                weight = excess_weight(omega, guidance_scale, default=DEFAULT_OMEGA)
            else:
                weight = make_schedule(schedule, **weights, **parameters)
        else:
            if parameters:
                raise ValueError(f"{sorted(parameters)[0]}: parameters go with a schedule name, not with a "
                                 "schedule object")
            if omega is not None or guidance_scale is not None:
                raise ValueError("schedule: give the weight inside the schedule object, not also as omega")
            if not callable(schedule):
                raise ValueError(f"schedule must be a name, a Schedule or a callable of t, got {schedule!r}")
            if not rule.uses_weight:
                raise ValueError(f"schedule: the {rule.name} rule takes no weight schedule")
            weight = schedule
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "rule", rule)

    def __setattr__(self, name, value):
        raise AttributeError("Guidance is immutable")

    @property
    def omega(self):
        return None if callable(self.weight) or not self.rule.uses_weight else float(self.weight)

    @property
    def guidance_scale(self):
        return None if self.omega is None else 1.0 + self.omega

    @property
    def schedule(self):
        return "constant" if not callable(self.weight) else repr(self.weight)

    def record(self):
        """The guidance as a flat dict: omega, guidance_scale, schedule, rule (None where not defined)."""
        return dict(omega=self.omega, guidance_scale=self.guidance_scale, schedule=self.schedule,
                    rule=repr(self.rule))

    def __repr__(self):
        weight = f"omega={self.omega!r}" if self.omega is not None else f"schedule={self.weight!r}"
        return f"Guidance({weight}, rule={self.rule!r})"

    def __reduce__(self):  # pickled by its parts (worker processes, Dask)
        return (_rebuild, (self.weight, self.rule))


def _rebuild(weight, rule):
    guidance = Guidance.__new__(Guidance)
    object.__setattr__(guidance, "weight", weight)
    object.__setattr__(guidance, "rule", rule)
    return guidance


def as_guidance(value):
    """A :class:`Guidance` from a Guidance, None (the default, omega = 1) or a plain number (omega)."""
    if isinstance(value, Guidance):
        return value
    if value is None:
        return Guidance()
    if isinstance(value, Schedule) or callable(value):
        return Guidance(schedule=value)
    return Guidance(omega=value)
