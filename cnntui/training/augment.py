"""The data order of each epoch and the random shifts of the training images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:

    pass


# ---- data order and augmentation -------------------------------------------------------------


def epoch_plan(seed: int, epoch: int, n: int, max_shift: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """The order of the ``n`` training images in ``epoch`` (0-based) and each image's (dy, dx)
    shift. Each epoch has its own stream, ``default_rng([seed, epoch])``, so any epoch can be
    reproduced on its own (the PyTorch comparison does)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    shifts = (rng.integers(-max_shift, max_shift + 1, size=(n, 2)) if max_shift
              else np.zeros((n, 2), dtype=np.int64))
    return order, shifts


def shift_images(x: np.ndarray, shifts: np.ndarray, max_shift: int) -> np.ndarray:
    """Move each image (N, C, H, W) by its (dy, dx), filling with the image's own minimum: the
    background of a standardised digit (its raw pixels are >= 0, the background is 0)."""
    if max_shift == 0 or not shifts.any():
        return x
    low = x.min(axis=(1, 2, 3), keepdims=True)
    s = max_shift
    N, C, H, W = x.shape
    xp = np.zeros((N, C, H + 2 * s, W + 2 * s), dtype=x.dtype)  # np.pad is slower here
    np.subtract(x, low, out=xp[:, :, s:s + H, s:s + W])
    windows = sliding_window_view(xp, (H, W), axis=(2, 3))  # (N, C, 2s+1, 2s+1, H, W)
    out = windows[np.arange(N), :, s - shifts[:, 0], s - shifts[:, 1]]
    return out + low


