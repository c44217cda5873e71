"""The null calibration of the finite-size comparison (cfgphase.solvers.theory.scaling)."""

import math

import numpy as np
from scipy import stats

from cfgphase.solvers.theory.scaling import exceedance_under_null

# Monte-Carlo error of a probability p from 20000 bootstrap samples: sqrt(p (1 - p) / 20000) <= 0.0025;
# the tolerances are 4 of them.
TOL = 0.01


def test_many_draws_without_scatter_give_the_normal_tail():
    """n = 400 draws whose residuals scatter as their own errors: the error is known to 7 %, so |z| >= 2
    has the normal tail 0.0455."""
    rng = np.random.default_rng(3)
    se = np.full(400, 0.01)
    p = exceedance_under_null(se * rng.standard_normal(400), se)
    assert abs(p - math.erfc(2 / math.sqrt(2))) < TOL


def test_four_draws_dominated_by_their_scatter_give_students_tail():
    """Tiny within-draw errors, residuals spread by the draws: z is Student's t with 3 degrees of freedom,
    P(|t_3| >= 2) = 0.139."""
    p = exceedance_under_null([0.3, -1.1, 0.8, 1.6], np.full(4, 1e-6))
    assert abs(p - 2 * stats.t.sf(2.0, 3)) < TOL


def test_four_draws_dominated_by_their_own_errors_are_conservative():
    """Equal residuals (no scatter) and large within-draw errors: the larger-of-two estimate is at least the
    true variance, so |z| >= 2 is rarer than the normal tail; the Monte-Carlo error adds variance and
    does not change that."""
    p = exceedance_under_null(np.zeros(4), np.full(4, 0.01), np.full(4, 0.005))
    assert 0.0 < p < math.erfc(2 / math.sqrt(2)) - TOL
