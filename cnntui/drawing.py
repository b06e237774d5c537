"""A 28x28 drawing made stroke by stroke with a soft brush, and its undo history.

Ink is 1 on a black page, as in MNIST's digits. The brush is a small Gaussian dab (the pen's
soft edge, like MNIST's anti-aliased strokes); a stroke is the dabs along the pointer's path,
so a fast drag that skips cells still draws an unbroken line. Painting takes the brighter of
the ink and the dab, so going over a line twice does not thicken it.
"""

from __future__ import annotations

import numpy as np

from cnntui.data import IMAGE_SIZE

BRUSH_SIGMA = 0.75  # pixels: a stroke ~2 pixels solid with a soft pixel each side
BRUSH_REACH = 2.0  # pixels beyond which the dab adds nothing
HISTORY = 200  # strokes that can be undone


class Drawing:
    def __init__(self, pixels: np.ndarray | None = None, size: int = IMAGE_SIZE) -> None:
        self.size = size
        self.pixels = np.zeros((size, size))
        if pixels is not None:
            p = np.asarray(pixels, dtype=np.float64)
            if p.shape != (size, size):
                raise ValueError(f"a drawing is {size}x{size}, not {p.shape}")
            self.pixels[:] = np.clip(np.nan_to_num(p), 0.0, 1.0)
        self._history: list[np.ndarray] = []
        self._grid = np.arange(size, dtype=np.float64)

    @property
    def empty(self) -> bool:
        return not self.pixels.any()

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def begin_stroke(self) -> None:
        """Remember the drawing as it is, so that undo takes back what follows."""
        self._history.append(self.pixels.copy())
        del self._history[:-HISTORY]

    def dab(self, y: float, x: float, erase: bool = False) -> None:
        """One touch of the brush centred at (y, x) in pixel coordinates (row, column)."""
        dy = self._grid - y
        dx = self._grid - x
        d2 = dy[:, None] ** 2 + dx[None, :] ** 2
        ink = np.exp(-d2 / (2 * BRUSH_SIGMA**2))
        ink[d2 > BRUSH_REACH**2] = 0.0
        if erase:  # the eraser is harder than the pen: a pass takes a stroke away
            np.minimum(self.pixels, 1.0 - np.minimum(2.0 * ink, 1.0), out=self.pixels)
        else:
            np.maximum(self.pixels, ink, out=self.pixels)

    def line(self, y0: float, x0: float, y1: float, x1: float, erase: bool = False) -> None:
        """Dabs from (y0, x0) to (y1, x1), at most half a pixel apart."""
        steps = max(1, int(np.ceil(2 * max(abs(y1 - y0), abs(x1 - x0)))))
        for t in np.linspace(0.0, 1.0, steps + 1)[1:]:
            self.dab(y0 + t * (y1 - y0), x0 + t * (x1 - x0), erase)

    def clear(self) -> None:
        if not self.empty:
            self.begin_stroke()
            self.pixels[:] = 0.0

    def undo(self) -> bool:
        """Take back the last stroke; False if there is none."""
        if not self._history:
            return False
        self.pixels[:] = self._history.pop()
        return True
