r"""What is measured: the name, symbol, meaning and units of every statistic, in one place.

Simulations (cfgphase.solvers.sampling.observables), theories (cfgphase.solvers.theory), files
(cfgphase.solvers.io), tables and the command line's ``--json`` use these names, so that theory
and simulation can be compared line by line. ``u = \mu_c/|\mu_c|``; time is forward time (t = 0
is data); data units are those of x. A statistic ``NAME`` may have a companion ``NAME_stderr``
(its standard error: grouped jackknife over particles, docs/theory.md eq. 14). A missing value is
NaN in arrays and files and ``null`` in JSON, never a string.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Statistic(NamedTuple):
    name: str
    symbol: str  #: LaTeX
    meaning: str
    units: str


def _table(*rows):
    return {row[0]: Statistic(*row) for row in rows}


#: Final statistics of a sample at the end of sampling (docs/theory.md eqs. 13, 41-43).
FINAL = _table(
    ("mean_ratio", r"E[x\cdot\mu_c]/|\mu_c|^2", "mean overlap with the target mean, relative to |mu_c|^2", "1"),
    ("var_par", r"\mathrm{Var}[x\cdot u]", "variance along the target mean", "data units^2"),
    ("var_perp", r"v_\perp", "mean per-coordinate variance orthogonal to the target mean", "data units^2"),
    ("distortion", r"\mathrm{KL}/d", "KL(Gaussian fit || true conditional) per dimension", "nats per dimension"),
    ("accuracy", r"P(\hat c = c)", "fraction classified as the target by the Bayes classifier", "1"),
    ("inv_prob", r"E[1/p(c|x)]", "mean inverse posterior of the target class", "1"),
    ("t_condensation", r"t^*", "time at which the mean target posterior reaches 1/2", "forward time"),
    ("energy_distance", r"\mathcal E", "energy distance to exact samples of the target class", "data units"),
    ("within_mode_var", r"v_{mode}", "per-coordinate variance around each sample's own mode", "data units^2"),
    # models built from data (docs/theory.md eq. 69)
    ("copy_fraction", r"P(\mathrm{copy})", "fraction of samples that copy a training point", "1"),
    ("coverage", r"C_c", "fraction of the target's training points copied by at least one sample", "1"),
    ("coverage_per_class", r"C_k", "fraction of each class's training points copied by at least one sample "
     "(over the class coordinate)", "1"),
    ("nearest_in_target", r"P(\mathrm{nn} \in c)", "fraction of samples whose nearest training point is in "
     "the target class", "1"),
    ("var_ratio", r"\mathrm{tr}\,\hat\Sigma/\mathrm{tr}\,\Sigma_c", "total sample variance over that of the "
     "target's exact conditional", "1"),
    ("var_par_class", r"u^\top\Sigma_c u", "variance of the target's exact conditional along its mean",
     "data units^2"),
    ("var_perp_class", r"v_{\perp,c}", "per-coordinate variance of the target's exact conditional orthogonal to "
     "its mean", "data units^2"),
)

#: Per-particle observables along the trajectory, recorded as means over particles at each time.
TRAJECTORY = _table(
    ("m", r"x\cdot\mu_c/d", "overlap with the target mean per dimension", "data units^2"),
    ("q", r"|x|^2/d", "squared norm per dimension", "data units^2"),
    ("norm", r"|x_t|", "norm of the particle", "data units"),
    ("target_posterior", r"\pi_c(x,t)", "posterior probability of the target class", "1"),
    ("posterior_entropy", r"H[\pi(x,t)]", "entropy of the component posterior", "nats"),
    ("responsibility_entropy", r"H[r(x,t)]", "entropy of the target's mode responsibilities", "nats"),
    ("mode_responsibility", r"r_j(x,t)", "responsibility of mode j of the target", "1"),
    ("guidance_norm", r"|s_\omega - s_c|", "norm of the guidance correction to the score", "score units"),
    ("denoised_norm", r"|\hat x_0|", "norm of the guided denoiser", "data units"),
    ("denoised_norm_ratio", r"|D_\omega|/|D_c|", "guided over conditional denoiser norm", "1"),
)

#: Statistics whose names carry an index: mode j of the target, quantile level NN % of p(c|x).
FAMILIES = (
    (re.compile(r"mode_weight_(\d+)_target"), "weight of mode {0} of the target class (truth)", "1"),
    (re.compile(r"mode_weight_(\d+)"), "fraction of samples in mode {0} of the target class", "1"),
    (re.compile(r"mode_responsibility_(\d+)"), "responsibility of mode {0} of the target", "1"),
    (re.compile(r"p_target_q(\d+)_shift"), "quantile {0} % of p(c|x) minus that of exact samples", "1"),
    (re.compile(r"p_target_q(\d+)"), "quantile {0} % of p(c|x) over the samples", "1"),
    (re.compile(r"inv_prob_ci_(low|high)"), "95 % bootstrap bound ({0}) of E[1/p(c|x)]", "1"),
    (re.compile(r"inv_prob_median_of_means"), "median of group means of 1/p(c|x)", "1"),
)

#: The statistics that every theory and simulation summary carries (``--json`` keys), in order.
SUMMARY = ("mean_ratio", "var_par", "var_perp", "distortion", "accuracy", "inv_prob", "t_condensation")


def describe(name):
    """(meaning, units) of a statistic or of its ``_stderr`` companion; ValueError if unknown."""
    base = name.removesuffix("_stderr")
    suffix = " (standard error)" if base != name else ""
    for table in (FINAL, TRAJECTORY):
        if base in table:
            return table[base].meaning + suffix, table[base].units
    for pattern, meaning, units in FAMILIES:
        match = pattern.fullmatch(base)
        if match:
            return meaning.format(*match.groups()) + suffix, units
    raise ValueError(f"statistic: unknown name {name!r}")
