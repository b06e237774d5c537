"""scikit-learn's handwritten digits (1797 images, shipped inside the package), zoomed to 28x28.

Each 8x8 image is zoomed with ``scipy.ndimage.zoom(img, 3.5, order=1)`` and standardised on its own
as the lesson does: ``(img - img.mean()) / (img.std() + 1e-5)``.

The fixed split: ``train_test_split(indices, test_size=0.2, stratify=labels, random_state=0)``,
1437 training and 360 test images; every digit is addressed by its index in the full set.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

IMAGE_SIZE = 28
ZOOM = 3.5


def prepare(img8: np.ndarray) -> np.ndarray:
    """One 8x8 digit -> the lesson's standardised (1, 28, 28) input."""
    from scipy.ndimage import zoom

    img = zoom(np.asarray(img8, dtype=np.float64), ZOOM, order=1)
    img = (img - img.mean()) / (img.std() + 1e-5)
    return img[np.newaxis, :, :]


@dataclass(frozen=True)
class Digits:
    images: np.ndarray  # (1797, 1, 28, 28) float64, standardised
    raw: np.ndarray  # (1797, 8, 8) the original 0..16 pixels
    labels: np.ndarray  # (1797,) int64
    train_idx: np.ndarray  # (1437,) indices into images
    test_idx: np.ndarray  # (360,)

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, index: int) -> tuple[np.ndarray, int]:
        """The (1, 28, 28) image and label of digit ``index``; a clear error if out of range."""
        if not 0 <= index < len(self):
            raise IndexError(f"there is no digit {index}: choose an index from 0 to {len(self) - 1}")
        return self.images[index], int(self.labels[index])


@cache
def load_digits() -> Digits:
    """All digits, prepared once per process (about 0.1 s)."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    d = sk_load_digits()
    labels = d.target.astype(np.int64)
    images = np.stack([prepare(img) for img in d.images])
    indices = np.arange(len(labels))
    train_idx, test_idx = train_test_split(indices, test_size=0.2, stratify=labels, random_state=0)
    for a in (images, labels, train_idx, test_idx):
        a.setflags(write=False)  # shared by everything in the process: nobody may change it
    return Digits(images, d.images, labels, train_idx, test_idx)
