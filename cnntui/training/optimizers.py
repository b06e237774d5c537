"""The optimisers, with torch.optim's update rules (the PyTorch bench and tests run the same
algorithm)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from cnntui.model import SIMPLE_CNN, Architecture
from cnntui.training.config import TrainConfig

if TYPE_CHECKING:

    pass


# ---- optimisers ------------------------------------------------------------------------------
# Both follow torch.optim's update rules, so the PyTorch bench and tests run the same algorithm.


class SGD:
    """SGD with (heavy-ball) momentum as torch.optim.SGD: ``v = mu*v + g; p -= lr*v``; weight
    decay adds ``wd * p`` to the gradient of the weights."""

    name = "sgd"

    def __init__(self, momentum: float = 0.9, weight_decay: float = 0.0,
                 decayed: frozenset[str] = frozenset()) -> None:
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.decayed = decayed  # the parameters weight decay applies to: the weights
        self.velocity: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
             lr: float) -> dict[str, np.ndarray]:
        new = {}
        for k, p in params.items():
            g = grads[k]
            if self.weight_decay and k in self.decayed:
                g = g + self.weight_decay * p
            if self.momentum:
                v = self.velocity.get(k)
                g = self.velocity[k] = g if v is None else self.momentum * v + g
            new[k] = p - lr * g
        return new


class Adam:
    """Adam as torch.optim.Adam; weight decay is decoupled (AdamW): ``p -= lr * wd * p``."""

    name = "adam"

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decayed: frozenset[str] = frozenset()) -> None:
        self.b1, self.b2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.decayed = decayed  # the parameters weight decay applies to: the weights
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
             lr: float) -> dict[str, np.ndarray]:
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = math.sqrt(1 - self.b2 ** self.t)
        new = {}
        for k, p in params.items():
            g = grads[k]
            m = self.m[k] = self.b1 * self.m.get(k, 0) + (1 - self.b1) * g
            v = self.v[k] = self.b2 * self.v.get(k, 0) + (1 - self.b2) * g * g
            if self.weight_decay and k in self.decayed:
                p = p * (1 - lr * self.weight_decay)
            new[k] = p - (lr / c1) * m / (np.sqrt(v) / c2 + self.eps)
        return new


def make_optimizer(config: TrainConfig, arch: Architecture = SIMPLE_CNN) -> SGD | Adam:
    decayed = frozenset(arch.weights)
    if config.optimizer == "sgd":
        return SGD(config.momentum, config.weight_decay, decayed)
    return Adam(config.betas, config.eps, config.weight_decay, decayed)


