r"""The class posterior of a mixture with few components, in NumPy: the whole (B, K) logit matrix at once.

Same quantities and conventions as the streaming kernel (cfgphase.solvers.score.kernel, docs/theory.md
eqs. 5-7): logits :math:`L = \beta X M^\top + b`, the softmax average of the means, the log-partition,
the posterior entropy and the index of the largest logit. Nothing is skipped, so every output is the
exact softmax to rounding. With few components (cfgphase.solvers.score.fields.DENSE_COMPONENTS) this
is as fast as the streaming kernel and needs neither Numba nor SciPy, so a small run starts at once
(Numba's import and cache load cost about 1.5 s per process).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class PosteriorMoments(NamedTuple):
    """Output of the posterior kernels; every array has leading dimension B."""

    mean: np.ndarray  #: (B, d) float64 posterior average of the means, eq. (6)
    log_partition: np.ndarray  #: (B,) log sum_k exp(L_k), float64
    entropy: np.ndarray  #: (B,) posterior entropy in nats, float64
    argmax: np.ndarray  #: (B,) int64 index of the largest logit (Bayes classifier)
    skipped: float = 0.0  #: fraction of (particle, chunk) pairs skipped as negligible (eq. 30)
    #: (B,) float64 logit of each row's hinted class, the value its partition sum took (None without a hint)
    hint_logit: np.ndarray | None = None


def checked_hint(hint, K, B):
    """``hint`` of a posterior kernel, checked against K classes and B particles: None, a class index (0-d
    array) or one per particle ((B,) array; a (1,) one broadcast); else a ValueError naming ``hint``. A scalar
    is checked with Python's integers: right after a kernel call, out of cache, NumPy's two reductions took
    0.1 ms."""
    if hint is None:
        return None
    hint = np.asarray(hint)
    if hint.dtype.kind not in "iu" or not (0 <= int(hint) < K if hint.ndim == 0 else
                                           np.all(hint >= 0) and np.all(hint < K)):
        raise ValueError(f"hint must hold class indices in [0, {K - 1}]")
    if hint.ndim > 1 or hint.ndim == 1 and hint.shape[0] not in (1, B):
        raise ValueError(f"hint must be one class or one per particle ({B}), got shape {hint.shape}")
    return hint if hint.ndim == 0 else np.broadcast_to(hint, (B,))


def dense_posterior_moments(x, means, scale, bias, hint=None):
    r"""Softmax-weighted class means and posterior statistics from the full (B, K) logits (eqs. 5-7).

    Parameters
    ----------
    x : ndarray (B, d), float64 or float32
        Particles; ``means`` must share the dtype, which is that of the GEMMs, the logits and their
        exponentials; the sums over classes and everything returned, ``mean`` included, are float64
        (as in the streaming kernel, eq. 31).
    means : ndarray (K, d)
    scale : float
        :math:`\beta`.
    bias : ndarray (K,)
    hint : int or ndarray (B,) of int, optional
        A class per row (or one for all) whose logit is returned as ``hint_logit``, as the streaming
        kernel's ``hint``.

    Returns
    -------
    PosteriorMoments (``skipped`` is 0).
    """
    x, means = np.asarray(x), np.asarray(means)
    if x.dtype not in (np.float32, np.float64) or means.dtype != x.dtype:
        raise ValueError(f"x and means must share dtype float32 or float64, got {x.dtype}, {means.dtype}")
    bias = np.asarray(bias, dtype=x.dtype)
    if x.ndim != 2 or means.ndim != 2 or means.shape[1] != x.shape[1] or bias.shape != (means.shape[0],):
        raise ValueError(f"shapes do not match: x {x.shape}, means {means.shape}, bias {bias.shape}")
    hint = checked_hint(hint, means.shape[0], x.shape[0])
    logits = x @ means.T
    logits *= x.dtype.type(scale)
    logits += bias
    hint_logit = None if hint is None else logits[np.arange(x.shape[0]), hint].astype(np.float64)
    argmax = logits.argmax(axis=1)
    top = logits[np.arange(x.shape[0]), argmax]
    logits -= top[:, None]  # L - max <= 0
    weights = np.exp(logits)
    total = weights.sum(axis=1, dtype=np.float64)
    mean = (weights @ means) / total[:, None]  # float64, as total is
    # entropy of p = e^{L - m} / l: log l - sum_k e^{L_k - m} (L_k - m) / l
    entropy = np.log(total) - np.einsum("bk,bk->b", weights, logits, dtype=np.float64) / total
    return PosteriorMoments(mean, top.astype(np.float64) + np.log(total), entropy, argmax.astype(np.int64),
                            hint_logit=hint_logit)
