"""scikit-learn's handwritten digits (1797 images, shipped inside the package), zoomed to 28x28.

Each 8x8 image is zoomed as the lesson's ``scipy.ndimage.zoom(img, 3.5, order=1)`` does (bilinear,
corners aligned) and standardised on its own: ``(img - img.mean()) / (img.std() + 1e-5)``.
The zoom is done here in NumPy, for all digits at once: importing scipy.ndimage alone takes longer
than the app may take to open. It equals scipy's to a few ulps (scipy's own result varies by as
much between its SIMD and scalar paths); the tests hold it to 1e-13.

The fixed split: ``train_test_split(indices, test_size=0.2, stratify=labels, random_state=0)``,
1437 training and 360 test images; every digit is addressed by its index in the full set.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np

IMAGE_SIZE = 28
ZOOM = 3.5


def zoom_bilinear(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """(..., n, n) -> (..., size, size) by linear interpolation with the corner pixels aligned:
    output pixel k samples the input at k * (n - 1) / (size - 1), as scipy's zoom with order=1."""
    images = np.asarray(images, dtype=np.float64)
    n = images.shape[-1]
    pos = np.arange(size) * ((n - 1) / (size - 1))
    lo = np.minimum(np.floor(pos).astype(np.intp), n - 2)
    w1 = pos - lo
    w0 = 1 - w1
    r0, r1, c0, c1 = lo[:, None], lo[:, None] + 1, lo[None, :], lo[None, :] + 1
    # scipy's order of operations: each corner value times its row weight, then its column weight
    return (images[..., r0, c0] * w0[:, None] * w0[None, :]
            + images[..., r0, c1] * w0[:, None] * w1[None, :]
            + images[..., r1, c0] * w1[:, None] * w0[None, :]
            + images[..., r1, c1] * w1[:, None] * w1[None, :])


def standardise(img: np.ndarray) -> np.ndarray:
    """Images (..., H, W) -> the network's (..., 1, H, W) inputs, each image standardised by its
    own mean and standard deviation as the lesson does: ``(img - mean) / (std + 1e-5)``."""
    img = np.asarray(img, dtype=np.float64)
    mean = img.mean(axis=(-2, -1), keepdims=True)
    std = img.std(axis=(-2, -1), keepdims=True)
    return ((img - mean) / (std + 1e-5))[..., np.newaxis, :, :]


def prepare(img8: np.ndarray) -> np.ndarray:
    """8x8 digits (..., 8, 8) -> the lesson's standardised (..., 1, 28, 28) inputs."""
    return standardise(zoom_bilinear(img8))


def _digits_csv() -> Path:
    """scikit-learn's copy of the digits, found without importing scikit-learn (which takes ~1 s,
    too long for the app's first paint)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("scikit-learn is not installed; it ships the digits data set")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


@dataclass(frozen=True)
class Digits:
    images: np.ndarray  # (1797, 1, 28, 28) float64, standardised
    raw: np.ndarray  # (1797, 8, 8) the original 0..16 pixels
    labels: np.ndarray  # (1797,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, index: int) -> tuple[np.ndarray, int]:
        """The (1, 28, 28) image and label of digit ``index``; a clear error if out of range."""
        if not 0 <= index < len(self):
            raise IndexError(
                f"there is no digit {index}: choose an index from 0 to {len(self) - 1}")
        return self.images[index], int(self.labels[index])

    @cached_property
    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, test indices) of the fixed split; 1437 and 360 digits."""
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(np.arange(len(self)), test_size=0.2,
                                       stratify=self.labels, random_state=0)
        train.setflags(write=False)
        test.setflags(write=False)
        return train, test

    @property
    def train_idx(self) -> np.ndarray:
        return self.split[0]

    @property
    def test_idx(self) -> np.ndarray:
        return self.split[1]


def stratified_test_indices(labels: np.ndarray, test_size: float = 0.2,
                            random_state: int = 0) -> np.ndarray:
    """The test indices of ``train_test_split(np.arange(n), test_size=test_size,
    stratify=labels, random_state=random_state)``, sorted, computed as scikit-learn's
    StratifiedShuffleSplit does but without importing scikit-learn (~0.7 s, too long for the
    app's first paint, which needs the test split to choose its digit). The tests hold it equal
    to ``Digits.test_idx``."""
    n = len(labels)
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(random_state)

    def approximate_mode(class_counts: np.ndarray, n_draws: int) -> np.ndarray:
        # sklearn.utils.extmath._approximate_mode: the floored shares, then the largest
        # remainders, ties broken by rng
        continuous = class_counts / class_counts.sum() * n_draws
        floored = np.floor(continuous)
        need = int(n_draws - floored.sum())
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1] if need > 0 else ():
            (tied,) = np.where(remainder == value)
            add = min(len(tied), need)
            floored[rng.choice(tied, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
        return floored.astype(int)

    n_i = approximate_mode(counts, n_train)
    t_i = approximate_mode(counts - n_i, n_test)
    test = [by_class[c].take(rng.permutation(counts[c]), mode="clip")[n_i[c]:n_i[c] + t_i[c]]
            for c in range(len(counts))]
    return np.sort(np.concatenate(test))


@cache
def load_digits() -> Digits:
    """All digits, prepared once per process (about 0.1 s)."""
    table = np.loadtxt(_digits_csv(), delimiter=",")
    raw = table[:, :64].reshape(-1, 8, 8)
    labels = table[:, 64].astype(np.int64)
    images = prepare(raw)
    for a in (images, raw, labels):
        a.setflags(write=False)  # shared by everything in the process: nobody may change it
    return Digits(images, raw, labels)
