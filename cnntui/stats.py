"""Numbers about a tensor that every view shows: lovely-tensors style summary, gradient sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorStats:
    shape: tuple[int, ...]
    dtype: str
    min: float
    max: float
    mean: float
    std: float
    nan: int
    inf: int
    zeros: int  # exact zeros (dead ReLUs, pooled-away gradients)
    size: int
    histogram: tuple[int, ...]  # counts over [min, max] of the finite values, HIST_BINS bins

    @property
    def all_zero(self) -> bool:
        return self.zeros == self.size

    def flags(self) -> list[str]:
        """Loud warnings, empty when the tensor is healthy."""
        out = []
        if self.nan:
            out.append(f"NaN x{self.nan}")
        if self.inf:
            out.append(f"Inf x{self.inf}")
        if self.size and self.all_zero:
            out.append("ALL ZERO")
        return out

    def line(self) -> str:
        """One line in lovely-tensors style."""
        text = (f"{self.shape} {self.dtype} n={self.size} x∈[{self.min:.4g}, {self.max:.4g}] "
                f"μ={self.mean:.4g} σ={self.std:.4g}")
        flags = self.flags()
        return text + (" " + " ".join(f"!{f}" for f in flags) if flags else "")


HIST_BINS = 16


def summarize(a: np.ndarray) -> TensorStats:
    a = np.asarray(a)
    finite = a[np.isfinite(a)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        mean, std = float(finite.mean()), float(finite.std())
        hist = np.histogram(finite, bins=HIST_BINS, range=(lo, hi if hi > lo else lo + 1))[0]
    else:
        lo = hi = mean = std = float("nan")
        hist = np.zeros(HIST_BINS, dtype=int)
    return TensorStats(
        shape=tuple(a.shape), dtype=str(a.dtype), min=lo, max=hi, mean=mean, std=std,
        nan=int(np.isnan(a).sum()), inf=int(np.isinf(a).sum()), zeros=int((a == 0).sum()),
        size=int(a.size), histogram=tuple(int(c) for c in hist),
    )


def channel_norms(a: np.ndarray) -> np.ndarray:
    """L2 norm of each channel (axis 0) of a (C, ...) tensor; one value for a 1-D tensor per entry
    group is not meaningful, so 1-D tensors give their absolute values."""
    a = np.asarray(a)
    if a.ndim == 1:
        return np.abs(a)
    return np.sqrt((a.reshape(a.shape[0], -1) ** 2).sum(axis=1))


def update_ratio(grad: np.ndarray, weight: np.ndarray, lr: float = 0.01) -> float:
    """|lr * grad| / |weight| (L2 norms): how far one SGD step would move this parameter.
    Around 1e-3 is healthy; much larger means a step would wreck the weights."""
    w = float(np.linalg.norm(weight))
    return float(lr * np.linalg.norm(grad) / w) if w > 0 else float("inf")


def nonzero_fraction(a: np.ndarray) -> float:
    """Fraction of entries that are not exactly zero (where a gradient actually flows)."""
    a = np.asarray(a)
    return float(np.count_nonzero(a)) / a.size if a.size else 0.0
