r"""A user's labelled data set, read from a file or from the bundled example, for
:meth:`cfgphase.Model.from_data`.

Files hold two arrays: ``x`` (N, d), the points, and ``labels`` (N,), integer class labels; as an
``.npz`` archive (``numpy.savez``) or as two datasets of an HDF5 file (``.h5``/``.hdf5``). The
arrays are checked when the model is built (shapes, finite values, at least two classes); here,
that the file exists and holds them.

``digits``: the 8 x 8 handwritten digits that scikit-learn ships (1797 images, 10 classes,
d = 64, pixel values 0-16), no download; needs scikit-learn (``pip install scikit-learn``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Names of the bundled data sets, accepted by :func:`load_data` in place of a path.
EXAMPLES = ("digits",)


def load_data(source):
    """(x (N, d) float64, labels (N,)) from ``source``: a path (.npz, .h5, .hdf5) or the name of a
    bundled example (:data:`EXAMPLES`). Raises ValueError naming ``data`` when the file is missing,
    of another kind, unreadable, or lacks ``x`` or ``labels``."""
    if isinstance(source, str) and source in EXAMPLES:
        return digits()
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"data: no such file {str(path)!r} (or a bundled example: {', '.join(EXAMPLES)})")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in ("x", "labels") if key in archive.files}
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                arrays = {key: f[key][()] for key in ("x", "labels") if isinstance(f.get(key), h5py.Dataset)}
        else:
            raise ValueError(f"data: {str(path)!r} must be an .npz or HDF5 (.h5, .hdf5) file, got {suffix!r}")
    except ValueError:
        raise
    except Exception as error:  # a damaged file: say which and why, in one line
        raise ValueError(f"data: cannot read {str(path)!r}: {type(error).__name__}: {error}") from None
    missing = [key for key in ("x", "labels") if key not in arrays]
    if missing:
        raise ValueError(f"data: {str(path)!r} has no array {' or '.join(repr(k) for k in missing)} "
                         f"(expected x (N, d) and labels (N,))")
    return arrays["x"], arrays["labels"]


def digits():
    """The 8 x 8 digits of scikit-learn: x (1797, 64), pixel values 0-16 (float64), labels 0-9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError("data: the digits example needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
