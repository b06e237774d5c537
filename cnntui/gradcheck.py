"""Centred finite differences (with one Richardson step) on sampled entries of every parameter
and of the input, compared with the analytic gradients by CS231n's relative error
``|a - n| / max(1e-8, |a| + |n|)``. Its floor of 1e-8 assumes gradients of order 1; here it
scales with the tensor's largest gradient and is never below what finite differences can resolve
(the loss's rounding error divided by h)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnntui import model

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


def cross_entropy(logits: np.ndarray, label: int) -> float:
    """-log softmax(logits)[label], to full relative precision even when that probability is
    1 - 1e-10: then ``-log(p)`` of a rounded p has ~6 good digits, too few for a finite
    difference of a tiny loss. With s = logits - logits[label], loss = log(sum(exp(s)))."""
    s = np.delete(logits - logits[label], label)
    m = max(0.0, float(s.max()))
    if m == 0.0:  # the label has the largest logit: loss = log(1 + sum(exp(s)))
        return float(np.log1p(np.exp(s).sum()))
    return m + float(np.log(np.exp(-m) + np.exp(s - m).sum()))


def _loss_and_kinks(arch: model.Architecture, params: dict[str, np.ndarray], x: np.ndarray,
                    label: int) -> tuple[float, list[np.ndarray]]:
    """The loss, and every ReLU mask and pooling argmax: where the network is not smooth."""
    p = model.forward(arch, params, x[None])
    loss = cross_entropy(p.acts[arch.layers[-2].out][0], label)
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
    p = model.loss_and_grads(arch, params, x[None], np.array([label]))
    analytic = p.grads
    base_loss, base_kinks = _loss_and_kinks(arch, params, x, label)
    # A centred difference cannot resolve less than the loss's rounding divided by h: below
    # that, |a - n| is noise. The loss comes from differences of logits, each rounded relative
    # to the largest logit. CS231n's floor of 1e-8 assumes gradients of order 1 and this noise
    # far below; here the floor is raised until noise alone stays under the tolerance.
    logit_scale = 1 + float(np.max(np.abs(p.acts[arch.layers[-2].out])))
    noise = 10 * np.finfo(np.float64).eps * abs(base_loss) * logit_scale / h
    rng = np.random.default_rng(seed)
    rows = []
    for name in [*params, "x"]:
        grad = analytic["d" + name].reshape(-1)
        floor = max(1e-8 * float(np.max(np.abs(grad))), noise / GRADCHECK_TOLERANCE, 1e-300)
        target = x if name == "x" else params[name]
        picks = rng.choice(target.size, size=min(samples, target.size), replace=False)
        picks = np.unique(np.append(picks, np.argmax(np.abs(grad))))
        rel, abs_, skipped = [], [], 0
        for i in picks:
            losses = []
            for step in (h, -h, h / 2, -h / 2):
                bumped = target.copy()
                bumped.reshape(-1)[i] += step
                if name == "x":
                    loss, kinks = _loss_and_kinks(arch, params, bumped, label)
                else:
                    loss, kinks = _loss_and_kinks(arch, {**params, name: bumped}, x, label)
                if any(not np.array_equal(a, b) for a, b in zip(kinks, base_kinks, strict=True)):
                    break
                losses.append(loss)
            if len(losses) < 4:
                skipped += 1
                continue
            # Richardson: the h^2 error of the two centred differences cancels, leaving h^4.
            # (conv1's weights move the logits fast enough for h^2 to show at 1e-6.)
            wide = (losses[0] - losses[1]) / (2 * h)
            narrow = (losses[2] - losses[3]) / h
            numeric = (4 * narrow - wide) / 3
            a = grad[i]
            abs_.append(abs(a - numeric))
            rel.append(abs(a - numeric) / max(floor, abs(a) + abs(numeric)))
        rows.append(GradCheck("d" + name, len(rel), skipped, max(rel, default=0.0),
                              max(abs_, default=0.0)))
    return rows
