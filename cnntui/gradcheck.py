"""Centred finite differences on sampled entries of every parameter and of the input, compared
with the analytic gradients by CS231n's relative error ``|a - n| / max(1e-8, |a| + |n|)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnntui import model, ops

GRADCHECK_TOLERANCE = 1e-6  # float64; a wrong gradient gives errors of order 1e-2 or more


@dataclass(frozen=True)
class GradCheck:
    name: str  # the gradient's name: dW1 ... dx
    checked: int  # entries compared
    skipped: int  # entries whose +-h nudge moved a ReLU or a pooling argmax (a kink)
    max_rel_error: float
    max_abs_error: float

    @property
    def ok(self) -> bool:
        return self.max_rel_error < GRADCHECK_TOLERANCE


def _loss_and_kinks(arch: model.Architecture, params: dict[str, np.ndarray], x: np.ndarray,
                    label: int) -> tuple[float, list[np.ndarray]]:
    """The loss, and every ReLU mask and pooling argmax: where the network is not smooth."""
    p = model.forward(arch, params, x[None])
    loss, _, _ = ops.softmax_cross_entropy(p.acts[arch.layers[-2].out], np.array([label]))
    kinks = [p.caches[layer.name] if layer.kind == "relu" else p.caches[layer.name][1]
             for layer in arch.layers if layer.kind in ("relu", "pool")]
    return loss, kinks


def gradcheck(params: dict[str, np.ndarray], x: np.ndarray, label: int, *, samples: int = 12,
              h: float = 1e-5, seed: int = 0,
              arch: model.Architecture = model.SIMPLE_CNN) -> list[GradCheck]:
    """Check ``samples`` random entries of each parameter gradient and of ``dx`` (plus the
    entry with the largest analytic gradient), in float64."""
    params = model.cast_params(params, np.float64)
    x = np.asarray(x, dtype=np.float64)
    analytic = model.loss_and_grads(arch, params, x[None], np.array([label])).grads
    _, base_kinks = _loss_and_kinks(arch, params, x, label)
    rng = np.random.default_rng(seed)
    rows = []
    for name in [*params, "x"]:
        grad = analytic["d" + name].reshape(-1)
        target = x if name == "x" else params[name]
        picks = rng.choice(target.size, size=min(samples, target.size), replace=False)
        picks = np.unique(np.append(picks, np.argmax(np.abs(grad))))
        rel, abs_, skipped = [], [], 0
        for i in picks:
            losses = []
            for sign in (1, -1):
                bumped = target.copy()
                bumped.reshape(-1)[i] += sign * h
                if name == "x":
                    loss, kinks = _loss_and_kinks(arch, params, bumped, label)
                else:
                    loss, kinks = _loss_and_kinks(arch, {**params, name: bumped}, x, label)
                if any(not np.array_equal(a, b) for a, b in zip(kinks, base_kinks, strict=True)):
                    break
                losses.append(loss)
            if len(losses) < 2:
                skipped += 1
                continue
            numeric = (losses[0] - losses[1]) / (2 * h)
            a = grad[i]
            abs_.append(abs(a - numeric))
            rel.append(abs(a - numeric) / max(1e-8, abs(a) + abs(numeric)))
        rows.append(GradCheck("d" + name, len(rel), skipped, max(rel, default=0.0),
                              max(abs_, default=0.0)))
    return rows
