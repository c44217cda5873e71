r"""The disorder of a random model: class means as a counter-based random function of (seed, k, j).

Entry j of class mean k is :math:`\mu_{kj} = \sigma_\mu z(\text{seed}, k, j)`, where z is a standard
normal computed from nothing but its three arguments (docs/theory.md eq. 64):

* **bits**: Philox-4x32-10 (Salmon, Moraes, Dror and Shaw, SC'11; the Random123 generator, which
  passes BigCrush) with key ``(seed mod 2^32, seed div 2^32)`` and counter
  ``(j div 2, k mod 2^32, k div 2^32, 0)``: one call gives four 32-bit words for the pair of
  coordinates (2p, 2p + 1);
* **uniforms**: :math:`u_1 = 1 - n_1 2^{-52} \in (0, 1]` and :math:`u_2 = n_2 2^{-52} \in [0, 1)`,
  :math:`n_1` and :math:`n_2` the top 52 bits of the first and of the last two words;
* **normals** (Box-Muller, exact in distribution): :math:`r = \sqrt{-2\log u_1}`,
  :math:`z_{2p} = r\cos 2\pi u_2`, :math:`z_{2p+1} = r\sin 2\pi u_2`, with a logarithm, sine and
  cosine written here as branch-free polynomials (a few ulp), the same operations in this module's
  NumPy form and in the Numba form of cfgphase.physics.disorder_jit (so that its loop over pairs
  vectorises; Numba's ``math.log`` and ``math.cos`` are scalar library calls);
* **squared norms**: :math:`|\mu_k|^2` summed in a fixed order: pair sums
  :math:`\mu_{2p}^2 + \mu_{2p+1}^2`, four running sums over p mod 4, then ((s0 + s1) + (s2 + s3)).

Nothing depends on which other entries are computed, in which order or by which thread: the
kernel (cfgphase.solvers.score.kernel) generates each chunk of K in a per-thread buffer, and a
materialised (K, d) array holds bit for bit the same float64 numbers (the same float32 numbers after
the same cast). The Numba functions are compiled without fast-math, so that no contraction or
reassociation can make a value depend on the loop it was inlined into; NumPy's element-wise
operations are correctly rounded one by one, so both forms give the same bits (tested). Consequences:
the first d coordinates of a class do not depend on d, and the first K classes not on K.

Small blocks (up to :data:`NUMPY_ENTRIES` entries) are drawn here in NumPy, large ones by the Numba
form, which is imported then: a small model needs no Numba at all.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Largest seed of the generator's 64-bit key.
MAX_SEED = 2**64 - 1

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_LOW32 = np.uint64(0xFFFFFFFF)
_S12 = np.uint64(12)
_S32 = np.uint64(32)
_ONE_BITS = np.uint64(0x3FF0000000000000)


_LN2_HI = 6.93147180369123816490e-01  # low 32 bits zero: e * _LN2_HI is exact for |e| < 2**20
_LN2_LO = 1.90821492927058770002e-10
_SQRT2 = 1.4142135623730951
_HALF_PI = 1.5707963267948966
#: Taylor coefficients, highest power first: atanh(f)/f in f^2 to f^22, cos and sin(x)/x in x^2 to x^16, x^14.
_ATANH_SERIES = tuple(1.0 / n for n in range(23, 0, -2))
_COS_SERIES = tuple((-1.0) ** (n // 2) / math.factorial(n) for n in range(16, -1, -2))
_SIN_SERIES = tuple((-1.0) ** (n // 2) / math.factorial(n + 1) for n in range(14, -1, -2))


def _philox_words(pairs, classes, key):
    """Philox-4x32-10 (Random123) of the counters (p, k mod 2^32, k div 2^32, 0) under ``key``: four
    arrays of 32-bit words in uint64, shape (n, pairs), for p < pairs and k in ``classes`` (n,)."""
    k = classes.astype(np.uint64)[:, None]
    shape = (k.shape[0], pairs)
    c0 = np.broadcast_to(np.arange(pairs, dtype=np.uint64), shape)
    c1, c2, c3 = np.broadcast_to(k & _LOW32, shape), np.broadcast_to(k >> _S32, shape), np.zeros(shape, np.uint64)
    k0, k1 = key
    for i in range(10):
        bumped0, bumped1 = (k0 + np.uint64(i) * _W0) & _LOW32, (k1 + np.uint64(i) * _W1) & _LOW32
        p0, p1 = _M0 * c0, _M1 * c2
        c0, c1, c2, c3 = (p1 >> _S32) ^ c1 ^ bumped0, p1 & _LOW32, (p0 >> _S32) ^ c3 ^ bumped1, p0 & _LOW32
    return c0, c1, c2, c3


def _unit(bits):
    """(bits >> 12) 2^-52 in [0, 1), exactly (the 52 bits as the mantissa of a number in [1, 2))."""
    return ((bits >> _S12) | _ONE_BITS).view(np.float64) - 1.0


def _horner(x, coefficients):
    p = coefficients[0]
    for c in coefficients[1:]:
        p = p * x + c
    return p


def _log(u):
    """log u for u in (0, 1]: u = 2^e m, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m - 1)/(m + 1))."""
    bits = u.view(np.int64)
    e = (bits >> 52) - 1023
    m = ((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000).view(np.float64)
    big = (m > _SQRT2).astype(np.int64)
    m = m * (1.0 - 0.5 * big)
    e = e + big
    f = (m - 1.0) / (m + 1.0)
    return e * _LN2_HI + (2.0 * f * _horner(f * f, _ATANH_SERIES) + e * _LN2_LO)


def _cos_sin(u):
    """(cos 2 pi u, sin 2 pi u) for u in [0, 1): 4u = n + r, then polynomials of r pi/2 turned by n quarters."""
    v = 4.0 * u
    n = np.floor(v + 0.5)
    phi = (v - n) * _HALF_PI
    s2 = phi * phi
    c, s = _horner(s2, _COS_SERIES), phi * _horner(s2, _SIN_SERIES)
    q = n.astype(np.int64) & 3
    odd = (q & 1).astype(np.float64)
    sign_cos = 1.0 - 2.0 * ((q + 1) >> 1 & 1).astype(np.float64)
    sign_sin = 1.0 - 2.0 * (q >> 1).astype(np.float64)
    return sign_cos * (c * (1.0 - odd) + s * odd), sign_sin * (s * (1.0 - odd) + c * odd)


def normal_block(key, std, classes, d, dtype=np.float64):
    """The NumPy form of the generator: means (n, d) in ``dtype`` of the classes ``classes`` (n,) int64
    and their squared norms (n,) float64, from the key (k0, k1) of :class:`RandomMeans`."""
    h = (d + 1) // 2
    w0, w1, w2, w3 = _philox_words(h, classes, key)
    u1, u2 = 1.0 - _unit((w0 << _S32) | w1), _unit((w2 << _S32) | w3)
    r = np.sqrt(-2.0 * _log(u1))
    c, s = _cos_sin(u2)
    even, odd = r * c * std, r * s * std
    pair = even * even + odd * odd
    if d % 2:
        pair[:, h - 1] = even[:, h - 1] * even[:, h - 1]
    sums = np.zeros((4, classes.shape[0]))
    for p in range(h):
        sums[p % 4] += pair[:, p]
    out = np.empty((classes.shape[0], 2 * h), dtype=dtype)
    out[:, 0::2], out[:, 1::2] = even, odd
    return out[:, :d], (sums[0] + sums[1]) + (sums[2] + sums[3])


#: Blocks of up to this many entries are drawn in NumPy (:func:`normal_block`), larger ones by Numba.
NUMPY_ENTRIES = 2**16


def check_generator_seed(seed, name="seed"):
    """The seed as an int, ValueError naming ``name`` unless it is an integer in [0, MAX_SEED]."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, 2**64 - 1], got {seed!r}")
    return int(seed)


class RandomMeans:
    r"""The class means :math:`\mu_{kj} = \sigma_\mu z(\text{seed}, k, j)`, k < K, j < d, as a function.

    Nothing of size K is stored: :meth:`rows` and :meth:`block` compute any subset, and
    cfgphase.solvers.score.kernel generates them chunk by chunk inside the kernel.
    """

    def __init__(self, K, d, seed=0, mean_var=1.0):
        self.K, self.d = int(K), int(d)
        self.seed = check_generator_seed(seed)
        self.mean_var = float(mean_var)
        self.std = math.sqrt(self.mean_var)
        self.key = (np.uint64(self.seed & 0xFFFFFFFF), np.uint64(self.seed >> 32))

    def __repr__(self):
        return f"RandomMeans(K={self.K}, d={self.d}, seed={self.seed}, mean_var={self.mean_var:g})"

    def rows(self, indices, dtype=np.float64):
        """(means (n, d) in ``dtype``, squared norms (n,) float64) of the classes ``indices``."""
        indices = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.K):
            raise ValueError(f"class indices must lie in [0, {self.K - 1}]")
        if indices.size * self.d <= NUMPY_ENTRIES:
            return normal_block(self.key, self.std, indices, self.d, dtype)
        from cfgphase.physics.disorder_jit import class_scratch, fill_class_means

        out, sq = np.empty((indices.size, self.d), dtype=dtype), np.empty(indices.size)
        fill_class_means(*self.key, self.std, indices, class_scratch(self.d), out, sq)
        return out, sq

    def block(self, start, stop, dtype=np.float64):
        """(means (stop - start, d) in ``dtype``, squared norms float64) of classes start .. stop - 1."""
        start, stop = int(start), min(int(stop), self.K)
        n = max(stop - start, 0)
        if n * self.d <= NUMPY_ENTRIES:
            return normal_block(self.key, self.std, np.arange(start, start + n, dtype=np.int64), self.d, dtype)
        from cfgphase.physics.disorder_jit import class_scratch, fill_class_range

        out, sq = np.empty((n, self.d), dtype=dtype), np.empty(n)
        fill_class_range(*self.key, self.std, start, class_scratch(self.d), out, sq)
        return out, sq

    def materialise(self):
        """All K class means (K, d) and their squared norms (K,), float64: a stored model's disorder."""
        return self.block(0, self.K)

    def sum_of_square_norms(self, threads=None):
        r""":math:`\sum_k |\mu_k|^2` as :func:`blocked_sum` computes it from the stored array, block by
        block, without storing it; the blocks are generated by ``threads`` threads (default: the usable
        cores, read when called; they live for this call), each into its own buffer, and the result
        does not depend on them (math.fsum is exact whatever the order of the block sums)."""
        if self.K * self.d <= NUMPY_ENTRIES:
            return blocked_sum(self.materialise()[1])
        from cfgphase.physics.disorder_jit import class_scratch, fill_class_range

        starts = range(0, self.K, SUM_BLOCK)
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, min(int(threads), len(starts)))

        def block_sums(part):
            # one buffer per thread: a fresh 8 MiB array per block cost more in page faults than generating it
            out, sq, scratch = np.empty((SUM_BLOCK, self.d)), np.empty(SUM_BLOCK), class_scratch(self.d)
            sums = []
            for start in part:
                n = min(SUM_BLOCK, self.K - start)
                fill_class_range(*self.key, self.std, start, scratch, out[:n], sq[:n])
                sums.append(float(np.sum(sq[:n])))
            return sums

        parts = [starts[i::threads] for i in range(threads)]
        if threads == 1:
            return math.fsum(block_sums(starts))
        with ThreadPoolExecutor(threads, thread_name_prefix="cfgphase") as pool:
            return math.fsum(v for sums in pool.map(block_sums, parts) for v in sums)


#: Classes per block of :func:`blocked_sum`.
SUM_BLOCK = 2**14


def blocked_sum(values):
    """Sum of ``values`` (n,) float64: NumPy's sum of each block of :data:`SUM_BLOCK` (aligned to the
    index 0), then the correctly rounded sum of the block sums (math.fsum). It depends on the values
    only, so the sum over generated blocks (:meth:`RandomMeans.sum_of_square_norms`) equals it."""
    return math.fsum(float(np.sum(values[b : b + SUM_BLOCK])) for b in range(0, values.shape[0], SUM_BLOCK))


class NormBias:
    r"""The logit bias :math:`b_k = \log\pi - c\,|\mu_k|^2` of generated means (uniform weights :math:`\pi = 1/K`;
    docs/theory.md eq. 5 with :math:`c = a_t^2/(2\Gamma_t)`), indexed like the stored bias array:
    ``bias[k]`` computes it for classes k in float64, as NumPy computes the stored one."""

    def __init__(self, means, log_weight, coefficient):
        self.means, self.log_weight, self.coefficient = means, float(log_weight), float(coefficient)

    def __getitem__(self, k):
        values = self.of_norms(self.means.rows(k)[1])
        return float(values[0]) if np.ndim(k) == 0 else values.reshape(np.shape(k))

    def of_norms(self, sq_norms):
        """The bias of classes with squared norms ``sq_norms`` (float64 array), as the stored bias is computed."""
        return self.log_weight - self.coefficient * sq_norms
