"""The same training in PyTorch: for the tests and for ``cnntui train --bench``."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from cnntui import model
from cnntui.data import load_digits
from cnntui.model import SIMPLE_CNN, Architecture
from cnntui.training.augment import epoch_plan, shift_images
from cnntui.training.config import TrainConfig
from cnntui.training.trainer import Trainer

if TYPE_CHECKING:

    pass


# ---- the same training in PyTorch (benchmark and tests) ----------------------------------------


def torch_train(config: TrainConfig, params: dict[str, np.ndarray], x: np.ndarray,
                labels: np.ndarray, epochs: int | None = None, arch: Architecture = SIMPLE_CNN
                ) -> tuple[dict[str, np.ndarray], float]:
    """Train a PyTorch copy of ``arch`` exactly as ``Trainer.run`` trains: the same initial
    weights, batches (``epoch_plan``), shifts, schedule and update rule (torch.optim.SGD, or
    AdamW for our decoupled Adam; weight decay on the weights only). No evaluation.

    Returns (the trained weights in the lesson's layout, training images per second)."""
    import torch  # lazily: only the benchmark and the tests need it

    dtype = getattr(torch, config.dtype)
    t = {k: torch.tensor(np.asarray(v, dtype=config.dtype)).requires_grad_(True)
         for k, v in params.items()}

    from cnntui.reference import torch_logits

    def net(xb: torch.Tensor) -> torch.Tensor:
        return torch_logits(arch, t, xb)

    groups = [{"params": [t[k] for k in t if k in arch.weights],
               "weight_decay": config.weight_decay},
              {"params": [t[k] for k in t if k not in arch.weights], "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=config.lr,
                                                     momentum=config.momentum)
    else:
        opt = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)
    x = np.asarray(x, dtype=config.dtype)
    y = torch.as_tensor(labels)
    n = len(x)
    epochs = config.epochs if epochs is None else epochs
    batches = -(-n // config.batch_size)
    shift = config.max_shift if config.augment else 0
    compute = 0.0
    for epoch in range(epochs):
        order, shifts = epoch_plan(config.seed, epoch, n, shift)
        for b in range(batches):
            t0 = time.perf_counter()
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            xb = torch.from_numpy(shift_images(x[idx], shifts[idx], config.max_shift))
            lr = config.lr * config.lr_factor((epoch * batches + b) / (config.epochs * batches))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = torch.nn.functional.cross_entropy(net(xb.to(dtype)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            compute += time.perf_counter() - t0
    trained = {k: v.detach().numpy().astype(np.float64) for k, v in t.items()}
    return trained, epochs * n / compute


def _bench_worker(framework: str, config: dict, epochs: int, threads: int | None,
                  arch_key: str = SIMPLE_CNN.key) -> None:
    """One side of ``bench_against_torch``, in its own process; prints images/s."""
    import json

    cfg = TrainConfig(**{**config, "betas": tuple(config["betas"]), "epochs": epochs})
    arch = model.ARCHITECTURES[arch_key]
    digits = load_digits()
    if framework == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        x, y = digits.images[digits.train_idx], digits.labels[digits.train_idx]
        torch_train(cfg, arch.init_params(), x, y, epochs=1, arch=arch)  # warm-up
        rate = torch_train(cfg, arch.init_params(), x, y, arch=arch)[1]
    else:
        # the first epoch is a warm-up
        history = Trainer(replace(cfg, epochs=epochs + 1), arch=arch).run().history[1:]
        n = len(digits.train_idx)
        rate = n * len(history) / sum(n / e.images_per_s for e in history)
    print(json.dumps({"framework": framework, "images_per_s": rate}))


def bench_against_torch(config: TrainConfig | None = None, epochs: int = 3, rounds: int = 5,
                        threads: int | None = None, arch: Architecture = SIMPLE_CNN
                        ) -> dict[str, object]:
    """Training images per second of this trainer and of ``torch_train`` for the same network,
    batch size, optimiser and dtype (evaluation excluded from both). Each measurement is a fresh
    process, alternating NumPy and PyTorch ``rounds`` times, so the two thread pools never fight
    over the cores; ``threads`` limits both (BLAS/OpenMP variables, ``torch.set_num_threads``).
    Reports the median and the best round of each: on a shared machine the best is the least
    disturbed (PyTorch's spinning OpenMP threads suffer most from a busy core)."""
    import json
    import os
    import subprocess
    import sys

    config = config or TrainConfig()
    env = dict(os.environ)
    if threads:
        env.update({v: str(threads) for v in
                    ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    rates: dict[str, list[float]] = {"numpy": [], "torch": []}
    for _ in range(rounds):
        for framework in rates:
            code = (f"from cnntui.training.torch_twin import _bench_worker; "
                    f"_bench_worker({framework!r}, "
                    f"{config.metadata()!r}, {epochs}, {threads!r}, {arch.key!r})")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True, env=env).stdout
            rates[framework].append(json.loads(out.splitlines()[-1])["images_per_s"])
    numpy_rate, torch_rate = (float(np.median(r)) for r in rates.values())
    numpy_best, torch_best = (max(r) for r in rates.values())
    return {"arch": arch.key, "batch_size": config.batch_size, "optimizer": config.optimizer,
            "dtype": config.dtype, "epochs": epochs, "rounds": rounds,
            "threads": threads or os.cpu_count(),
            "numpy_images_per_s": numpy_rate, "torch_images_per_s": torch_rate,
            "ratio": numpy_rate / torch_rate,
            "numpy_best_images_per_s": numpy_best, "torch_best_images_per_s": torch_best,
            "best_ratio": numpy_best / torch_best, "samples": rates}


