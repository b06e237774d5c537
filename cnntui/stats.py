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
    inf: int  # +Inf and -Inf together
    zeros: int  # exact zeros (dead ReLUs, pooled-away gradients)
    size: int
    histogram: tuple[int, ...]  # counts over [min, max] of the finite values, HIST_BINS bins
    posinf: int = 0
    neginf: int = 0

    @property
    def finite(self) -> int:
        return self.size - self.nan - self.inf

    @property
    def nonfinite(self) -> bool:
        return bool(self.nan or self.inf)

    @property
    def all_zero(self) -> bool:
        return self.zeros == self.size

    def flags(self) -> list[str]:
        """Loud warnings, empty when the tensor is healthy."""
        out = []
        if self.nan:
            out.append(f"NaN! x{self.nan}")
        if self.posinf:
            out.append(f"+Inf! x{self.posinf}")
        if self.neginf:
            out.append(f"-Inf! x{self.neginf}")
        if self.inf and not (self.posinf or self.neginf):
            out.append(f"Inf! x{self.inf}")
        if self.size and self.all_zero:
            out.append("ALL ZERO")
        return out

    def line(self) -> str:
        """One line in lovely-tensors style."""
        text = (f"{self.shape} {self.dtype} n={self.size} x∈[{self.min:.4g}, {self.max:.4g}] "
                f"μ={self.mean:.4g} σ={self.std:.4g}")
        flags = self.flags()
        return text + (" " + " ".join(flags) if flags else "")


HIST_BINS = 16


def _histogram(finite: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Counts of ``finite`` in HIST_BINS equal bins over [lo, hi]. Works on halved values, so
    a range near the float limits (hi - lo overflowing) still has finite bins."""
    if not hi > lo:
        out = np.zeros(HIST_BINS, dtype=int)
        out[0] = finite.size
        return out
    half_lo, span = lo / 2, hi / 2 - lo / 2
    k = np.floor((finite / 2 - half_lo) / span * HIST_BINS)
    k = np.clip(np.nan_to_num(k), 0, HIST_BINS - 1).astype(np.int64)
    return np.bincount(k, minlength=HIST_BINS)


def _scaled_moments(finite: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation without overflow: on values divided by the largest |x|."""
    top = float(np.max(np.abs(finite)))
    if top == 0:
        return 0.0, 0.0
    u = finite / top
    with np.errstate(over="ignore"):
        return float(u.mean() * top), float(u.std() * top)


def summarize(a: np.ndarray) -> TensorStats:
    """Statistics of the finite values (min, max, mean, std, histogram), and how many entries
    are NaN, +Inf and -Inf. Never raises for huge or non-finite values."""
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        a = a.astype(np.float64)
    ok = np.isfinite(a)
    finite = a[ok]
    if finite.size:
        finite = finite.astype(np.float64)
        lo, hi = float(finite.min()), float(finite.max())
        mean, std = _scaled_moments(finite)
        hist = _histogram(finite, lo, hi)
    else:
        lo = hi = mean = std = float("nan")
        hist = np.zeros(HIST_BINS, dtype=int)
    nan = int(np.isnan(a).sum())
    posinf, neginf = int(np.isposinf(a).sum()), int(np.isneginf(a).sum())
    return TensorStats(
        shape=tuple(a.shape), dtype=str(a.dtype), min=lo, max=hi, mean=mean, std=std,
        nan=nan, inf=posinf + neginf, zeros=int((a == 0).sum()),
        size=int(a.size), histogram=tuple(int(c) for c in hist), posinf=posinf, neginf=neginf,
    )


def nonfinite_counts(a: np.ndarray) -> tuple[int, int, int]:
    """(NaN, +Inf, -Inf) counts of ``a``."""
    a = np.asarray(a, dtype=np.float64)
    return int(np.isnan(a).sum()), int(np.isposinf(a).sum()), int(np.isneginf(a).sum())


def channel_norms(a: np.ndarray) -> np.ndarray:
    """L2 norm of each channel (axis 0) of a (C, ...) tensor; one value for a 1-D tensor per entry
    group is not meaningful, so 1-D tensors give their absolute values."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        return np.abs(a)
    return np.array([norm(row) for row in a.reshape(a.shape[0], -1)])


def norm(a: np.ndarray) -> float:
    """L2 norm that does not overflow for huge finite entries (NaN if any entry is NaN, Inf if
    any is infinite)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    if a.size == 0:
        return 0.0
    top = float(np.max(np.abs(a)))
    if not np.isfinite(top) or top == 0:
        return top
    with np.errstate(over="ignore"):
        return float(top * np.sqrt(np.sum((a / top) ** 2)))


def update_ratio(grad: np.ndarray, weight: np.ndarray, lr: float = 0.01) -> float:
    """|lr * grad| / |weight| (L2 norms): how far one SGD step would move this parameter.
    Around 1e-3 is healthy; much larger means a step would wreck the weights."""
    w = norm(weight)
    if np.isnan(w):
        return float("nan")
    with np.errstate(over="ignore", invalid="ignore"):
        return float(lr * norm(grad) / w) if w > 0 else float("inf")


def nonzero_fraction(a: np.ndarray) -> float:
    """Fraction of entries that are not exactly zero (where a gradient actually flows)."""
    a = np.asarray(a)
    return float(np.count_nonzero(a)) / a.size if a.size else 0.0
