"""The null calibration of the finite-size comparison (cfgphase.solvers.theory.scaling.sign_flip_null)."""

import numpy as np
import pytest

from cfgphase.solvers.theory.scaling import draw_average, sign_flip_null

TINY = np.full(4, 1e-9)


def test_four_equal_residuals_exceed_only_when_all_signs_agree():
    """(r, r, r, r) with negligible own errors: of the 16 sign patterns the 2 with one sign give |z| = inf;
    3 against 1 gives mean r/2 and standard error r/2 (z = 1), 2 against 2 gives 0. So p = 1/8 exactly."""
    p, pmf = sign_flip_null([(range(4), np.full(4, 0.3), TINY, None)])
    assert p[0] == 0.125
    np.testing.assert_allclose(pmf, [0.875, 0.125])


def test_cells_that_share_draws_fail_together():
    """Two such cells on the same four draws exceed together or not at all: the count is 0 or 2, not
    binomial; on distinct draws it is binomial(2, 1/8)."""
    shared = [(range(4), np.full(4, 0.3), TINY, None), (range(4), np.full(4, -0.7), TINY, TINY)]
    _, pmf = sign_flip_null(shared)
    np.testing.assert_allclose(pmf, [0.875, 0.0, 0.125])
    distinct = [shared[0], (range(4, 8), *shared[1][1:])]
    _, pmf = sign_flip_null(distinct)
    np.testing.assert_allclose(pmf, [0.875 ** 2, 2 * 0.875 * 0.125, 0.125 ** 2])


def test_the_identity_pattern_is_the_observed_cell():
    """Among the enumerated patterns is the one with no flip: a cell that draw_average puts outside has
    a positive probability, one it puts inside is not outside in every pattern."""
    r, se = np.array([0.5, 0.9, 0.7, 0.6]), np.full(4, 0.05)
    res, err = draw_average(r, se)
    assert abs(res) >= 2 * err
    p, _ = sign_flip_null([(range(4), r, se, None), (range(4), r - r.mean(), se, None)])
    assert 0 < p[0] < 1 and p[1] < 1


@pytest.mark.parametrize("bias, low, high", [(0.0, 0.0, 0.09), (1.0, 0.8, 1.0)])
def test_the_count_test_holds_its_level_and_sees_a_bias(bias, low, high):
    """Synthetic campaigns like the stored one: 8 clusters of 4 draws, each draw entering 5 cells whose
    residuals correlate 0.7 through the draw and scatter 3 times their own errors. Without bias the
    count's P(count >= observed) is at most 0.05 in at most 5 % of campaigns (randomization tests are
    exact under symmetry; 200 campaigns: binomial error 0.015, limit 0.09 = 0.05 + 2.5 errors); with
    every cell biased by one draw scatter the test rejects in most campaigns. Measured: 0.04 and 0.975."""
    rng = np.random.default_rng(7)
    rejected = 0
    for _ in range(200):
        cells = []
        for cluster in range(8):
            common = rng.standard_normal(4)
            for _cell in range(5):
                r = 3 * (np.sqrt(0.7) * common + np.sqrt(0.3) * rng.standard_normal(4)) + rng.standard_normal(4)
                cells.append((4 * cluster + np.arange(4), r + 3 * bias, np.ones(4), None))
        p, pmf = sign_flip_null(cells)
        observed = sum(abs(a) >= 2 * b for a, b in (draw_average(c[1], c[2]) for c in cells))
        rejected += pmf[observed:].sum() <= 0.05
    assert low <= rejected / 200 <= high


def test_clusters_beyond_the_enumeration_are_sampled_with_a_fixed_seed():
    """A cluster of 20 draws (2^19 patterns) is sampled: the same seed gives the same answer, and the cell
    of 20 equal residuals exceeds about as often as a fair coin's |sum of 20 signs| puts z past 2."""
    cell = [(range(20), np.full(20, 1.0), np.full(20, 1e-9), None)]
    p1, _ = sign_flip_null(cell, max_patterns=2000)
    p2, _ = sign_flip_null(cell, max_patterns=2000)
    assert p1[0] == p2[0]
    signs = 1 - 2 * ((np.arange(2 ** 19)[:, None] >> np.arange(19)) & 1)
    flipped = np.hstack([np.ones((2 ** 19, 1)), signs])
    exact = np.mean(np.abs(flipped.mean(1)) >= 2 * flipped.std(1, ddof=1) / np.sqrt(20))
    assert abs(p1[0] - exact) < 4 * np.sqrt(exact * (1 - exact) / 2000)


@pytest.mark.parametrize("cells, kwargs, name", [
    ([(range(3), np.ones(4), np.ones(4), None)], {}, "cells\\[0\\]"),
    ([(range(4), np.ones(4), np.ones(3), None)], {}, "cells\\[0\\]"),
    ([([0, 0, 1, 2], np.ones(4), np.ones(4), None)], {}, "cells\\[0\\]"),
    ([(range(4), np.ones(4), np.ones(4), None)], dict(level=0.0), "level"),
])
def test_bad_cells_are_refused_naming_them(cells, kwargs, name):
    with pytest.raises(ValueError, match=name):
        sign_flip_null(cells, **kwargs)
